-- The C object container (src/container.c) through its binding core.container():
-- the graph, validation messages, eager order, creation stack and singleton cache.
local core = require "springrun.core"

local function define_all(c, list)
  for _, d in ipairs(list) do c:define(d[1], d[2]) end
end

describe("springrun.core container #unit", function()
  it("keeps definitions in definition order with their flags", function()
    local c = core.container()
    define_all(c, {
      { "z" }, { "a", { prototype = true } }, { "m", { lazy = true } },
      { "base", { abstract = true } }, { "child", { parent = "base" } },
    })
    assert.are.same({ "z", "a", "m", "base", "child" }, c:ids())
    assert.are.same({ prototype = true, lazy = false, abstract = false }, c:info("a"))
    assert.are.same({ prototype = false, lazy = true, abstract = false }, c:info("m"))
    assert.are.same({ prototype = false, lazy = false, abstract = false, parent = "base" }, c:info("child"))
    assert.is_nil(c:info("nope"))
  end)

  it("replaces a redefined id in place and says so", function()
    local c = core.container()
    assert.is_false(c:define("a"))
    c:define("b")
    assert.is_true(c:define("a", { lazy = true }))
    assert.are.same({ "a", "b" }, c:ids())
    assert.is_true(c:info("a").lazy)
  end)

  it("reports an unknown reference with who refers to it and where", function()
    local c = core.container()
    define_all(c, { { "a" }, { "b" } })
    c:add_dep("a", "b", "props.x")
    assert.is_true(c:validate())
    c:add_dep("b", "ghost", "props.list[2]")
    local ok, msg, name = c:validate()
    assert.is_nil(ok)
    assert.are.equal("object 'b' refers to unknown object 'ghost' (props.list[2])", msg)
    assert.are.equal("SR_ENOTFOUND", name)
  end)

  it("reports a cycle through three objects with the whole chain", function()
    local c = core.container()
    define_all(c, { { "a" }, { "b" }, { "c" }, { "d" } })
    c:add_dep("d", "a")
    c:add_dep("a", "b")
    c:add_dep("b", "c")
    c:add_dep("c", "a")
    local ok, msg, name = c:validate()
    assert.is_nil(ok)
    assert.are.equal("circular dependency: a -> b -> c -> a", msg)
    assert.are.equal("SR_ECYCLE", name)
  end)

  it("reports an object that depends on itself", function()
    local c = core.container()
    c:define("self")
    c:add_dep("self", "self", "props.me")
    assert.are.equal("circular dependency: self -> self", select(2, c:validate()))
  end)

  it("reports unknown parents, parent loops and refs to abstract definitions", function()
    local c = core.container()
    c:define("kid", { parent = "nobody" })
    assert.are.equal("object 'kid' has unknown parent 'nobody'", select(2, c:validate()))

    c = core.container()
    define_all(c, { { "p", { parent = "q" } }, { "q", { parent = "r" } }, { "r", { parent = "p" } } })
    assert.are.equal("circular parent chain: p -> q -> r -> p", select(2, c:validate()))

    c = core.container()
    define_all(c, { { "base", { abstract = true } }, { "user" } })
    c:add_dep("user", "base", "props.b")
    local ok, msg, name = c:validate()
    assert.is_nil(ok)
    assert.truthy(msg:find("object 'user' refers to abstract object 'base' (props.b)", 1, true))
    assert.are.equal("SR_EINVAL", name)
  end)

  it("orders eager singletons after what they depend on, through lazy and prototype objects", function()
    local c = core.container()
    define_all(c, {
      { "a" }, { "b" }, { "lazy", { lazy = true } }, { "proto", { prototype = true } },
      { "c" }, { "abstract", { abstract = true } }, { "d" },
    })
    c:add_dep("a", "c")     -- a needs c
    c:add_dep("c", "lazy")  -- c needs lazy, which needs d
    c:add_dep("lazy", "d")
    c:add_dep("b", "proto") -- b needs proto, which needs a
    c:add_dep("proto", "a")
    assert.is_true(c:validate())
    assert.are.same({ "d", "c", "a", "b" }, c:eager_order())
  end)

  it("handles a chain of 20000 definitions without recursion limits", function()
    local c = core.container()
    local n = 20000
    for i = 1, n do c:define("o" .. i) end
    for i = 1, n - 1 do c:add_dep("o" .. i, "o" .. (i + 1)) end
    assert.is_true(c:validate())
    local order = c:eager_order()
    assert.are.equal(n, #order)
    assert.are.equal("o" .. n, order[1])
    assert.are.equal("o1", order[n])
    c:add_dep("o" .. n, "o" .. (n - 2))
    local msg = select(2, c:validate())
    assert.are.equal(("circular dependency: o%d -> o%d -> o%d -> o%d"):format(n - 2, n - 1, n, n - 2), msg)
  end)

  it("walks a parent chain of 20000 definitions and finds a loop at its end", function()
    local c = core.container()
    local n = 20000
    for i = 1, n do c:define("p" .. i, { parent = i < n and "p" .. (i + 1) or nil }) end
    assert.is_true(c:validate())
    c:define("p" .. n, { parent = "p" .. (n - 1) })
    assert.are.equal(("circular parent chain: p%d -> p%d -> p%d"):format(n - 1, n, n - 1),
      select(2, c:validate()))
  end)

  it("detects a cycle on the creation stack and unwinds after errors", function()
    local c = core.container()
    define_all(c, { { "a" }, { "b" }, { "c" } })
    assert.is_true(c:enter("a"))
    assert.is_true(c:enter("b"))
    assert.is_true(c:enter("c"))
    local ok, msg, name = c:enter("a")
    assert.is_nil(ok)
    assert.are.equal("circular dependency: a -> b -> c -> a", msg)
    assert.are.equal("SR_ECYCLE", name)
    assert.are.equal(3, c:depth())
    assert.has_error(function() c:leave("b") end, "leave: 'b' is not the object being created")
    c:unwind(1)
    assert.are.equal(1, c:depth())
    c:leave("a")
    assert.are.equal(0, c:depth())
    assert.is_true(c:enter("c"))
  end)

  it("caches singletons and remembers their creation order", function()
    local c = core.container()
    define_all(c, { { "a" }, { "b" }, { "c" } })
    local A, B = {}, { "b" }
    assert.is_false(c:get("a"))
    c:store("b", B)
    c:store("a", A)
    c:store("c", false)
    local found, obj = c:get("a")
    assert.is_true(found)
    assert.are.equal(A, obj)
    assert.are.same({ true, false }, { c:get("c") })
    assert.are.same({ "b", "a", "c" }, c:created())
    assert.has_error(function() c:store("a", {}) end, "store: a singleton 'a' is already stored")
    assert.has_error(function() c:store("zz", {}) end, "store: no object named 'zz'")
    assert.has_error(function() c:store("b", nil) end, "store: object 'b' is nil")
  end)

  it("forgets one cached singleton on request", function()
    local c = core.container()
    define_all(c, { { "a" }, { "b" } })
    c:store("a", {})
    c:store("b", {})
    assert.is_true(c:forget("a"))
    assert.is_false(c:forget("a"))
    assert.is_false(c:get("a"))
    assert.are.same({ "b" }, c:created())
    c:store("a", { "again" })
    assert.are.same({ "b", "a" }, c:created())
    assert.has_error(function() c:forget("zz") end, "forget: no object named 'zz'")
  end)

  it("drops a redefined object's singleton from the cache and creation order", function()
    local c = core.container()
    define_all(c, { { "a" }, { "b" } })
    c:store("a", {})
    c:store("b", {})
    c:define("a")
    assert.is_false(c:get("a"))
    assert.are.same({ "b" }, c:created())
  end)

  it("releases the cached objects on clear so they can be collected", function()
    local c = core.container()
    c:define("a")
    local weak = setmetatable({}, { __mode = "v" })
    do
      local obj = {}
      weak[1] = obj
      c:store("a", obj)
    end
    collectgarbage()
    assert.is_not_nil(weak[1]) -- the container holds it
    c:clear()
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
    assert.are.same({}, c:created())
    assert.are.same({ "a" }, c:ids()) -- definitions stay
  end)

  it("raises on misuse and after free", function()
    local c = core.container()
    assert.has_error(function() c:define("") end, "define: object id must be a non-empty string")
    assert.has_error(function() c:add_dep("missing", "x") end, "add_dep: no object named 'missing'")
    assert.has_error(function() c:define("a", { parent = 5 }) end, "define: parent must be a string")
    c:free()
    c:free()
    assert.has_error(function() c:ids() end, "container is closed")
    assert.are.equal("springrun.Container (closed)", tostring(c))
  end)
end)
