-- Pyro4's batches and asynchronous proxies on a springrun proxy
-- (proxy:_pyroBatch(), proxy:_pyroAsync()), against a springrun server
-- (spec/fixtures/interop_server.lua) and a real Python Pyro4 daemon
-- (spec/fixtures/interop_service.py) with the same methods, with both
-- serializers, from plain code (a blocking call) and from a task; what goes
-- on the wire (a hand-driven Pyro4 daemon that reports it); the README's
-- example. A Python Pyro4 client's batches to a springrun exporter:
-- spec/interop_pyro4_spec.lua.
local springrun = require "springrun"
local errors = require "springrun.errors"
local future = require "springrun.future"
local json = require "springrun.json"
local proc = require "helpers.proc"
local pyro4 = require "helpers.pyro4"
local client = require "helpers.client"

-- Every value the iterator it yields, as a list (n: how many).
local function collect(it)
  local out = { n = 0 }
  for r in it do
    out.n = out.n + 1
    out[out.n] = r
  end
  return out
end

-- A tag no other test uses (the services keep their events).
local ntags = 0
local function tag(what)
  ntags = ntags + 1
  return string.format("%s-%d-%d", what, ntags, math.random(1, 1 << 30))
end

local function has(list, v)
  for i = 1, #list do
    if list[i] == v then return true end
  end
  return false
end

-- p:events() once it holds every one of want (oneway calls may land a
-- little later), or after 10 s.
local function events_with(p, want)
  local got
  for _ = 1, 500 do
    got = p:events()
    local all = true
    for _, w in ipairs(want) do
      if not has(got, w) then all = false end
    end
    if all then break end
    proc.poll_step(20)
  end
  return got
end

-- The index of v in list, or nil.
local function index_of(list, v)
  for i = 1, #list do
    if list[i] == v then return i end
  end
end

local SERVERS = {
  {
    name = "a springrun server",
    start = function()
      local p, port = pyro4.start_lua_server()
      return p, string.format("PYRO:interop.Service@127.0.0.1:%d", port)
    end,
    -- what describe(1, kwargs{a = "x"}) answers: Lua gets the kwargs as a
    -- trailing map, Python as **kwargs
    described = "2: int 1 | {a=str(1) x}",
  },
  {
    name = "a Python Pyro4 daemon",
    start = function()
      local p, _, uri = pyro4.start_py_service("-")
      return p, uri
    end,
    described = "2: int 1 | a=str 'x'",
  },
}

for _, server in ipairs(SERVERS) do
  describe("proxy:_pyroBatch() and :_pyroAsync() against " .. server.name .. " #net #interop", function()
    local p_server, url
    setup(function()
      pyro4.require_python()
      p_server, url = server.start()
    end)
    teardown(function()
      if p_server then proc.stop(p_server) end
    end)

    for _, ser in ipairs({ "json", "serpent" }) do
      for _, mode in ipairs({ "blocking", "task" }) do
        local where = string.format(" (%s, %s)", ser, mode == "task" and "in a task" or "outside a task")

        -- fn(proxy) outside a task or as a task, as mode says; a new proxy
        -- (destroyed after) to the server
        local function run(fn)
          local p = springrun.proxy(url, { timeout = 10, serializer = ser })
          finally(function() p:destroy() end)
          if mode == "blocking" then return fn(p) end
          local ok, e = client.in_task(function() return fn(p) end)
          assert(ok, tostring(e))
        end

        it("sends the recorded calls as one request and yields the results in order" .. where, function()
          run(function(p)
            assert.is_true(p:_pyroBind())
            local b = p:_pyroBatch()
            b:add(1, 2)
            b:get_data("x")
            b:nothing()
            b:echo({ 1, { a = "b" } })
            b:describe(1, springrun.kwargs { a = "x" })
            b:add(3, 4)
            assert.are.equal(6, #b)
            local seq = p._pyroSeq
            local results = b()
            assert.are.equal((seq + 1) & 0xFFFF, p._pyroSeq) -- one INVOKE, one sequence number
            assert.are.equal(0, #b)                           -- the calls went out; b is empty again
            assert.is_true(require("springrun.results").is_batch_results(results))
            local got = collect(results)
            assert.are.equal(6, got.n)
            assert.are.same({ 3, "You got remote data => x", json.null, { 1, { a = "b" } }, server.described, 7 },
              { table.unpack(got, 1, got.n) })
            assert.is_nil(results()) -- ended
            -- b records anew; an empty batch is a batch of nothing
            b:add(10, 20)
            assert.are.same({ 30, n = 1 }, collect(b()))
            assert.are.same({ n = 0 }, collect(b()))
            assert.are.equal(3, p:add(1, 2)) -- the connection serves plain calls as before
          end)
        end)

        it("raises the remote error at the call that failed; the calls after it did not run" .. where, function()
          run(function(p)
            local before, after = tag("before"), tag("after")
            local b = p:_pyroBatch()
            b:add(1, 2)
            b:log_event(before)
            b:fail_typed("boom")
            b:log_event(after)
            b:add(5, 6)
            local results = b()
            assert.are.equal(3, results())
            assert.are.equal(json.null, results()) -- log_event's None
            local ok, e = pcall(results)
            assert.is_false(ok)
            assert.is_true(errors.is(e, "remote"), tostring(e))
            assert.are.equal("builtins.ValueError", e.class)
            assert.are.equal("boom", e.message)
            assert.are.equal("fail_typed", e.method)
            assert.are.equal(url, e.url)
            assert.is_nil(results()) -- nothing after the error
            local events = p:events()
            assert.is_true(has(events, before))
            assert.is_false(has(events, after))
            -- the same from a for loop
            b:add(1, 1)
            b:fail_typed("again")
            local seen = {}
            local e2 = client.error_of(function()
              for r in b() do seen[#seen + 1] = r end
            end)
            assert.are.same({ 2 }, seen)
            assert.are.equal("again", e2.message)
          end)
        end)

        it("fails the whole batch for a method the object lacks" .. where, function()
          run(function(p)
            local b = p:_pyroBatch()
            b:nosuch(1)
            b:add(1, 2)
            local e = client.error_of(b)
            assert.is_true(errors.is(e, "remote"), tostring(e))
            assert.are.equal("builtins.AttributeError", e.class)
            assert.truthy(e.message:find("nosuch", 1, true), e.message)
            assert.are.equal(0, #b)
            assert.are.equal(3, p:add(1, 2))
          end)
        end)

        it("sends a oneway batch without awaiting a reply; its calls run" .. where, function()
          run(function(p)
            local a, c = tag("oneway-a"), tag("oneway-b")
            local b = p:_pyroBatch()
            b:log_event(a)
            b:log_event(c)
            assert.are.equal(0, select("#", b { oneway = true }))
            assert.are.equal(0, #b)
            -- no reply is on its way: the next call on the connection gets its own
            assert.are.equal(4, p:add(2, 2))
            local events = events_with(p, { a, c })
            assert.is_true(has(events, a), "oneway batch ran")
            assert.is_true(index_of(events, a) < index_of(events, c), "in order")
          end)
        end)

        it("gives a future of the results for b{ async = true }" .. where, function()
          run(function(p)
            local b = p:_pyroBatch()
            b:add(1, 2)
            b:add(3, 4)
            local f = b { async = true }
            assert.is_true(future.is_future(f))
            assert.are.equal(0, #b)
            b:add(100, 1) -- recording goes on while the batch is under way
            assert.are.same({ 3, 7, n = 2 }, collect(f:wait()))
            assert.are.same({ 101, n = 1 }, collect(b { asynchronous = true }:wait()))
            -- the failing call raises when the iterator reaches it
            b:add(1, 1)
            b:fail_typed("late")
            local it = b { async = true }:wait()
            assert.are.equal(2, it())
            assert.are.equal("late", client.error_of(it).message)
            -- a batch that fails as a whole fails the future
            b:nosuch()
            local fa = b { async = true }
            assert.are.equal("builtins.AttributeError", client.error_of(fa.wait, fa).class)
          end)
        end)

        it("switches the proxy to futures with _pyroAsync() and back with _pyroAsync(false)" .. where, function()
          run(function(p)
            p:_pyroAsync()
            local f1, f2 = p:add(1, 2), p:get_data("y")
            assert.is_true(future.is_future(f1))
            assert.is_true(future.is_future(f2))
            assert.are.same({ 3, "You got remote data => y", n = 2 }, springrun.gather { f1, f2 })
            local f3 = p:_pyro_call("add", 2, 2)
            assert.are.equal(4, f3:wait())
            local ev = tag("async")
            local f4 = p:log_event(ev) -- oneway: a future of nothing
            assert.are.equal(0, select("#", f4:wait()))
            local ff = p:fail_typed("x")
            assert.are.equal("builtins.ValueError", client.error_of(ff.wait, ff).class)
            -- a name the object lacks: the future fails, as the call would
            local fn = p:nosuch()
            assert.are.equal("attribute", client.error_of(fn.wait, fn).kind)
            -- batches are sent as the batch says, whatever the mode
            local b = p:_pyroBatch()
            b:add(1, 1)
            assert.are.same({ 2, n = 1 }, collect(b()))
            p:_pyroAsync(false)
            assert.are.equal(3, p:add(1, 2))
            assert.is_true(has(events_with(p, { ev }), ev))
            p:_pyroAsync(true)
            assert.are.equal(5, p:add(2, 3):wait())
            p:_pyro_async(false)
            assert.are.equal(5, p:add(2, 3))
          end)
        end)
      end
    end
  end)
end

describe("proxy:_pyroBatch() #unit", function()
  it("records calls made with ':' only, and has no names of its own", function()
    local p = springrun.proxy("PYRO:x@127.0.0.1:1")
    local b = p:_pyroBatch()
    assert.are.equal(p._pyro_batch, p._pyroBatch)
    assert.are.equal(0, #b)
    b:a(1)
    b:b(nil, 2)
    assert.are.equal(2, #b)
    assert.are.equal("springrun.BatchProxy(2 calls to PYRO:x@127.0.0.1:1)", tostring(b))
    local e = client.error_of(function() b.c(1) end)
    assert.is_true(errors.is(e, "config"))
    assert.are.equal("batch: record calls with ':' (batch:c(...))", e.message)
    assert.is_nil(b._private)
    e = client.error_of(function() b.x = 1 end)
    assert.are.equal("batch: cannot set 'x' (record calls with batch:x(...))", e.message)
    assert.are.equal(2, #b)
  end)

  it("refuses unknown options, non-boolean ones, and oneway with async", function()
    local b = springrun.proxy("PYRO:x@127.0.0.1:1"):_pyroBatch()
    b:a()
    local e = client.error_of(b, { onway = true })
    assert.are.equal("batch: unknown option 'onway' (did you mean 'oneway'?)", e.message)
    e = client.error_of(b, { whatever = true })
    assert.are.equal("batch: unknown option 'whatever' (options: oneway, async, asynchronous)", e.message)
    e = client.error_of(b, { oneway = 1 })
    assert.are.equal("batch: option oneway must be true or false, got number", e.message)
    e = client.error_of(b, "oneway")
    assert.are.equal("batch: expected a table of options (oneway, async), got string", e.message)
    e = client.error_of(b, { oneway = true, async = true })
    assert.are.equal("batch: oneway and async together make no sense (a oneway batch has no result)", e.message)
    assert.is_true(errors.is(e, "config"))
    assert.are.equal(1, #b) -- nothing was sent: the calls are still there
  end)

  it("checks _pyroAsync's argument", function()
    local p = springrun.proxy("PYRO:x@127.0.0.1:1")
    local e = client.error_of(p._pyroAsync, p, "yes")
    assert.are.equal("PyroProxyFactory:_pyroAsync: expected true, false or nothing, got string", e.message)
  end)
end)

describe("proxy:_pyroBatch() on the wire #net #interop", function()
  it("is one INVOKE of <batch> with FLAGS_BATCH and params [[name, [args], {kwargs}], ...]", function()
    local cleanup = proc.cleanups(finally)
    local server, port = client.start_python("raw_pyro_server.py", { "record" })
    cleanup(function() proc.stop(server) end)
    local p = springrun.proxy(string.format("PYRO:Obj@127.0.0.1:%d", port), { timeout = 10 })
    cleanup(function() p:destroy() end)
    assert.are.equal(1, p:seq()[1])
    local b = p:_pyroBatch()
    b:seq(1, 2)
    b:last()
    b:seq(nil, "x", springrun.kwargs { k = { 1 } })
    -- the hand-driven daemon answers any INVOKE with what it got: the
    -- "results" are [seq, flags, params, kwargs, object, method]
    local r = collect(b())
    assert.are.equal(6, r.n)
    assert.are.equal(2, r[1])     -- the next sequence number, one for the batch
    assert.are.equal(0x08, r[2])  -- FLAGS_BATCH
    assert.are.equal('[["seq", [1, 2], {}], ["last", [], {}], ["seq", [null, "x"], {"k": [1]}]]',
      json.encode(r[3]))
    assert.are.equal("{}", json.encode(r[4]))
    assert.are.equal("Obj", r[5])
    assert.are.equal("<batch>", r[6])
    -- from a task: the same message
    local ok, v = client.in_task(function()
      local b2 = p:_pyroBatch()
      b2:last()
      return collect(b2())
    end)
    assert.is_true(ok, tostring(v))
    assert.are.same({ 3, 0x08, '[["last", [], {}]]', "<batch>" }, { v[1], v[2], json.encode(v[3]), v[6] })
  end)
end)

describe("the README's batch and _pyroAsync example #net", function()
  it("runs as shown", function()
    local readme = require "helpers.readme"
    local st, out, err = readme.run_lua(readme.block(
      "### Batches and asynchronous proxies (Pyro4's `_pyroBatch`, `_pyroAsync`)", "lua"))
    assert.are.equal(0, st, err)
    assert.are.equal("3\n4\nfalse\tbuiltins.RuntimeError\tdiv\n4\n6\n6\n7\n", out)
  end)
end)
