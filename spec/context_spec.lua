-- springrun.context: the Lua DSL over the C container (definitions, refs,
-- scopes, lifecycle, disposal, errors, logging).
local springrun = require "springrun"
local context = require "springrun.context"
local log = require "springrun.log"

local ref, object = springrun.ref, springrun.object

local FIXTURES = "spec/fixtures/ctx/?.lua;"

-- Records lifecycle events of instances of the classes it makes.
local function recorder()
  local events = {}
  local function class(name)
    local C = {}
    C.__index = C
    function C.new(...)
      events[#events + 1] = "new:" .. name
      return setmetatable({ args = table.pack(...) }, C)
    end
    function C:after_properties_set() events[#events + 1] = "after_properties_set:" .. name end
    function C:start() events[#events + 1] = "init:" .. name end
    function C:stop() events[#events + 1] = "destroy:" .. name end
    return C
  end
  return events, class
end

-- Captures log lines at `level`; returns the lines and a restore function.
local function capture(level)
  local lines = {}
  local prev_out = log.set_output(function(line) lines[#lines + 1] = line end)
  local prev_level = log.get_level()
  log.set_level(level or "DEBUG")
  return lines, function()
    log.set_output(prev_out)
    log.set_level(prev_level)
  end
end

local function message_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function plain_class()
  local C = {}
  C.__index = C
  function C.new(...) return setmetatable({ args = table.pack(...) }, C) end
  return C
end

describe("springrun.context #unit", function()
  local saved_path
  before_each(function()
    saved_path = package.path
    package.path = FIXTURES .. package.path
  end)
  after_each(function()
    package.path = saved_path
    context.close_all()
  end)

  describe("classes", function()
    it("instantiates a table through new called with dot syntax", function()
      local C = plain_class()
      local ctx = springrun.context { a = { class = C, args = { 1, 2 } } }
      local a = ctx:get_object("a")
      assert.are.equal(C, getmetatable(a))
      assert.are.same({ 1, 2, n = 2 }, a.args)
    end)

    it("instantiates a table whose new is written C:new(...) with method syntax", function()
      local ctx = springrun.context { p = { class = "ctx_factories.Point", args = { 3, 4 } } }
      local p = ctx:get_object("p")
      local Point = require("ctx_factories").Point
      assert.are.equal(Point, p.class)
      assert.are.same({ 3, 4 }, { p.x, p.y })
    end)

    it("calls a table with __call and no new, and a constructor function", function()
      local Callable = setmetatable({}, { __call = function(cls, opts) return { made_by = cls, opts = opts } end })
      local ctx = springrun.context {
        c = { class = Callable, args = { name = "x" } },
        f = { class = function(a, b) return { sum = a + b } end, args = { 2, 5 } },
      }
      assert.are.equal(Callable, ctx:get_object("c").made_by)
      assert.are.same({ name = "x" }, ctx:get_object("c").opts)
      assert.are.equal(7, ctx:get_object("f").sum)
    end)

    it("resolves \"module.Class\" with require, like the seed's server.Service", function()
      local ctx = springrun.context { remoteService = { class = "server.Service" } }
      assert.are.equal("You got remote data => Hello", ctx:get_object("remoteService"):get_data("Hello"))
      assert.are.equal(require("Service"), getmetatable(ctx:get_object("remoteService")))
    end)

    it("resolves a dotless class name as a module", function()
      local ctx = springrun.context { service = { class = "Service" } }
      assert.are.equal("You got remote data => x", ctx:get_object("service"):get_data("x"))
    end)

    it("uses a factory function's or \"module.function\"'s return value as the object", function()
      local shared = { "the object" }
      local ctx = springrun.context {
        f = { factory = function(x) shared.x = x; return shared end, args = { "arg" } },
        g = { factory = "ctx_factories.make_pair", args = { ref "f", 9 } },
      }
      assert.are.equal(shared, ctx:get_object("f"))
      assert.are.equal("arg", shared.x)
      assert.are.same({ kind = "pair", a = shared, b = 9 }, ctx:get_object("g"))
    end)

    it("maps springpython.remoting.pyro classes to springrun.remoting.pyro", function()
      local fake = require "fake_pyro"
      local saved = package.loaded["springrun.remoting.pyro"]
      package.loaded["springrun.remoting.pyro"] = fake
      finally(function() package.loaded["springrun.remoting.pyro"] = saved end)
      local ctx = springrun.context {
        exporter = { class = "springpython.remoting.pyro.PyroServiceExporter",
                     props = { service_name = "ServiceName" } },
      }
      assert.are.equal(fake.PyroServiceExporter, getmetatable(ctx:get_object("exporter")))
    end)
  end)

  describe("args and props", function()
    it("passes positional args, then the named ones together as one table", function()
      local C = plain_class()
      local ctx = springrun.context { a = { class = C, args = { "x", "y", host = "h", port = 1 } } }
      assert.are.same({ "x", "y", { host = "h", port = 1 }, n = 3 }, ctx:get_object("a").args)
    end)

    it("passes nil positional args when args.n says how many there are", function()
      local C = plain_class()
      local ctx = springrun.context { a = { class = C, args = { n = 3, [2] = "mid" } } }
      assert.are.same({ n = 3, [2] = "mid" }, ctx:get_object("a").args)
    end)

    it("sets plain values, refs and inner definitions as properties", function()
      local C = plain_class()
      local ctx = springrun.context {
        target = { class = C },
        user = { class = C, props = {
          name = "n", port = 7000, flag = false,
          target = ref "target",
          helper = object { class = C, args = { "inner" }, props = { back = ref "target" } },
        } },
      }
      local user, target = ctx:get_object("user"), ctx:get_object("target")
      assert.are.equal("n", user.name)
      assert.are.equal(7000, user.port)
      assert.is_false(user.flag)
      assert.are.equal(target, user.target)
      assert.are.equal(C, getmetatable(user.helper))
      assert.are.same({ "inner", n = 1 }, user.helper.args)
      assert.are.equal(target, user.helper.back)
      assert.is_false(ctx:has_object("helper"))
    end)

    it("resolves refs and inner definitions inside lists and maps, recursively", function()
      local C = plain_class()
      local defs = {
        s1 = { class = C }, s2 = { class = C },
        pool = { class = C, props = {
          list = { ref "s1", ref "s2", object { class = C }, "plain" },
          map = { first = ref "s1", nested = { deeper = { ref "s2" } }, made = object { class = C } },
        }, args = { { ref "s2" }, opts = { target = ref "s1" } } },
      }
      local ctx = springrun.context(defs)
      local pool, s1, s2 = ctx:get_object("pool"), ctx:get_object("s1"), ctx:get_object("s2")
      assert.are.equal(s1, pool.list[1])
      assert.are.equal(s2, pool.list[2])
      assert.are.equal(C, getmetatable(pool.list[3]))
      assert.are.equal("plain", pool.list[4])
      assert.are.equal(4, #pool.list)
      assert.are.equal(s1, pool.map.first)
      assert.are.equal(s2, pool.map.nested.deeper[1])
      assert.are.equal(C, getmetatable(pool.map.made))
      assert.are.equal(s2, pool.args[1][1])
      assert.are.equal(s1, pool.args[2].opts.target)
      -- the definition tables are templates, never modified
      assert.is_true(context.is_ref(defs.pool.props.list[1]))
      assert.are_not.equal(pool.list, defs.pool.props.list)
    end)

    it("passes tables with a metatable as they are", function()
      local C = plain_class()
      local value = setmetatable({ x = 1 }, { __index = {} })
      local ctx = springrun.context { a = { class = C, props = { v = value } } }
      assert.are.equal(value, ctx:get_object("a").v)
    end)
  end)

  describe("scopes", function()
    it("returns the same singleton from get_object and through every ref", function()
      local C = plain_class()
      local ctx = springrun.context {
        s = { class = C },
        u1 = { class = C, props = { s = ref "s" } },
        u2 = { class = C, props = { list = { ref "s" } } },
      }
      local s = ctx:get_object("s")
      assert.are.equal(s, ctx:get_object("s"))
      assert.are.equal(s, ctx:get_object("u1").s)
      assert.are.equal(s, ctx:get_object("u2").list[1])
    end)

    it("creates a prototype anew on every get_object and every ref", function()
      local events, class = recorder()
      local P, C = class("p"), plain_class()
      local ctx = springrun.context {
        p = { class = P, scope = "prototype", props = { list = { 1 } } },
        u1 = { class = C, props = { p = ref "p" } },
        u2 = { class = C, props = { p = ref "p", again = ref "p" } },
      }
      local a, b = ctx:get_object("p"), ctx:get_object("p")
      assert.are_not.equal(a, b)
      assert.are_not.equal(a.list, b.list)
      local u2 = ctx:get_object("u2")
      assert.are_not.equal(u2.p, u2.again)
      assert.are_not.equal(ctx:get_object("u1").p, u2.p)
      local news = 0
      for _, e in ipairs(events) do if e == "new:p" then news = news + 1 end end
      assert.are.equal(5, news) -- u1 (1), u2 (2), two get_object calls
    end)

    it("creates eager singletons at context creation in dependency order", function()
      local events, class = recorder()
      -- sorted ids are a, b, c; the dependencies make the order c, b, a
      local ctx = springrun.context {
        a = { class = class("a"), props = { dep = ref "b" } },
        b = { class = class("b"), args = { ref "c" } },
        c = { class = class("c") },
        p = { class = class("p"), scope = "prototype" },
        l = { class = class("l"), lazy_init = true },
      }
      assert.are.same({
        "new:c", "after_properties_set:c", "new:b", "after_properties_set:b",
        "new:a", "after_properties_set:a",
      }, events)
      assert.is_truthy(ctx)
    end)

    it("defers a lazy_init singleton to its first get_object", function()
      local events, class = recorder()
      local ctx = springrun.context { l = { class = class("l"), lazy_init = true } }
      assert.are.same({}, events)
      local l = ctx:get_object("l")
      assert.are.same({ "new:l", "after_properties_set:l" }, events)
      assert.are.equal(l, ctx:get_object("l"))
      assert.are.equal(2, #events)
    end)

    it("creates a lazy singleton early when an eager one refers to it", function()
      local events, class = recorder()
      springrun.context {
        l = { class = class("l"), lazy_init = true },
        e = { class = class("e"), props = { l = ref "l" } },
      }
      assert.are.same({ "new:e", "new:l", "after_properties_set:l", "after_properties_set:e" }, events)
    end)

    it("creates depends_on objects first", function()
      local events, class = recorder()
      springrun.context {
        a = { class = class("a"), depends_on = { "z", "y" } },
        y = { class = class("y"), lazy_init = true },
        z = { class = class("z") },
      }
      assert.are.same({ "new:z", "new:y", "new:a" },
        { events[1], events[3], events[5] })
    end)
  end)

  describe("inheritance", function()
    it("inherits class, args and props from an abstract parent, child entries overriding", function()
      local C = plain_class()
      local ctx = springrun.context {
        base = { abstract = true, class = C, args = { "base-arg" },
                 props = { host = "127.0.0.1", port = 7766, target = ref "t" } },
        mid = { parent = "base", props = { port = 7000 } },
        leaf = { parent = "mid", props = { name = "leaf" }, args = { "own-arg" } },
        t = { class = C },
      }
      local mid, leaf = ctx:get_object("mid"), ctx:get_object("leaf")
      assert.are.equal(C, getmetatable(mid))
      assert.are.same({ "base-arg", n = 1 }, mid.args)
      assert.are.same({ "127.0.0.1", 7000 }, { mid.host, mid.port })
      assert.are.equal(ctx:get_object("t"), mid.target)
      assert.are.same({ "own-arg", n = 1 }, leaf.args)
      assert.are.same({ "127.0.0.1", 7000, "leaf" }, { leaf.host, leaf.port, leaf.name })
    end)

    it("does not inherit scope or lazy_init", function()
      local C = plain_class()
      local ctx = springrun.context {
        base = { class = C, scope = "prototype", lazy_init = true },
        child = { parent = "base" },
      }
      assert.are.equal(ctx:get_object("child"), ctx:get_object("child"))
      assert.are_not.equal(ctx:get_object("base"), ctx:get_object("base"))
    end)

    it("refuses to create an abstract definition and leaves it out of object_ids", function()
      local C = plain_class()
      local ctx = springrun.context { base = { abstract = true, class = C }, child = { parent = "base" } }
      assert.are.equal(
        "springrun.context: object 'base' is abstract and cannot be created directly (it only serves as a parent)",
        message_of(function() ctx:get_object("base") end))
      assert.is_false(ctx:has_object("base"))
      assert.is_true(ctx:has_object("child"))
      assert.are.same({ "child" }, ctx:object_ids())
    end)
  end)

  describe("lifecycle", function()
    it("injects props, then calls after_properties_set, then init_method", function()
      local seen = {}
      local C = {}
      C.__index = C
      function C.new() return setmetatable({}, C) end
      function C:after_properties_set() seen[#seen + 1] = "aps saw " .. tostring(self.value) end
      function C:setup() seen[#seen + 1] = "init saw " .. tostring(self.value) end
      springrun.context { a = { class = C, props = { value = 5 }, init_method = "setup" } }
      assert.are.same({ "aps saw 5", "init saw 5" }, seen)
    end)

    it("stores a singleton before initialising it, as the seed's log shows", function()
      local lines, restore = capture("DEBUG")
      finally(restore)
      local ctx
      local C = {}
      C.__index = C
      function C.new() return setmetatable({}, C) end
      function C:after_properties_set()
        log.get("springrun.spec.Exporter"):debug("Exporting %s", self.service_name)
        self.me = ctx:get_object("exporter")
      end
      ctx = springrun.context {
        exporter = { class = C, props = { service_name = "ServiceName" }, lazy_init = true },
      }
      ctx:get_object("exporter")
      local stored, exporting
      for i, l in ipairs(lines) do
        if l:find("Stored object 'exporter' in container's singleton storage", 1, true) then stored = i end
        if l:find("springrun.spec.Exporter - DEBUG - Exporting ServiceName", 1, true) then exporting = i end
      end
      assert.is_truthy(stored and exporting)
      assert.is_true(stored < exporting)
      assert.are.equal(ctx:get_object("exporter"), ctx:get_object("exporter").me)
    end)

    it("drops a singleton whose initialisation fails and does not destroy it", function()
      local events, class = recorder()
      local Flaky = class("flaky")
      local fail_now = true
      function Flaky:after_properties_set()
        events[#events + 1] = "after_properties_set:flaky"
        if fail_now then error("not ready") end
      end
      local ctx = springrun.context { flaky = { class = Flaky, lazy_init = true, destroy_method = "stop" } }
      assert.truthy(message_of(function() ctx:get_object("flaky") end):find("after_properties_set failed", 1, true))
      fail_now = false
      local obj = ctx:get_object("flaky")
      assert.are.equal(obj, ctx:get_object("flaky"))
      ctx:close()
      assert.are.same({ "new:flaky", "after_properties_set:flaky", "new:flaky", "after_properties_set:flaky",
        "destroy:flaky" }, events)
    end)

    it("destroys singletons in reverse creation order with destroy_method, skipping prototypes", function()
      local events, class = recorder()
      local ctx = springrun.context {
        a = { class = class("a"), props = { dep = ref "b" }, destroy_method = "stop" },
        b = { class = class("b"), destroy_method = "stop" },
        c = { class = class("c"), props = { dep = ref "a" }, destroy_method = "stop" },
        p = { class = class("p"), scope = "prototype", destroy_method = "stop" },
      }
      ctx:get_object("p")
      for i = #events, 1, -1 do events[i] = nil end
      ctx:close()
      assert.are.same({ "destroy:c", "destroy:a", "destroy:b" }, events)
      ctx:close() -- idempotent
      assert.are.equal(3, #events)
    end)

    it("calls destroy() on created _disposable objects", function()
      local fake = require "fake_pyro"
      for i = #fake.events, 1, -1 do fake.events[i] = nil end
      local ctx = springrun.context {
        exporter = { class = fake.PyroServiceExporter, props = { service_name = "S" } },
        proxy = { class = fake.PyroProxyFactory, props = { service_url = "PYRO:S@127.0.0.1:1" },
                  depends_on = "exporter" },
        plain = { class = plain_class() },
      }
      ctx:close()
      assert.are.same({
        "PyroServiceExporter:after_properties_set:S",
        "PyroProxyFactory:after_properties_set:PYRO:S@127.0.0.1:1",
        "PyroProxyFactory:destroy:PYRO:S@127.0.0.1:1",
        "PyroServiceExporter:destroy:S",
      }, fake.events)
    end)

    it("destroys a singleton's inner objects right after it, but not a prototype's", function()
      local events, class = recorder()
      local ctx = springrun.context {
        owner = { class = class("owner"), destroy_method = "stop", props = {
          list = { object { class = class("inner1"), destroy_method = "stop" },
                   object { class = class("inner2"), destroy_method = "stop" } } } },
        proto = { class = class("proto"), scope = "prototype", props = {
          x = object { class = class("proto_inner"), destroy_method = "stop" } } },
        user = { class = class("user"), destroy_method = "stop", props = { p = ref "proto" } },
      }
      ctx:close()
      local destroyed = {}
      for _, e in ipairs(events) do
        if e:find("^destroy:") then destroyed[#destroyed + 1] = e end
      end
      assert.are.same({ "destroy:user", "destroy:owner", "destroy:inner2", "destroy:inner1" }, destroyed)
    end)

    it("logs a failing destroy and still destroys the others", function()
      local lines, restore = capture("ERROR")
      finally(restore)
      local events, class = recorder()
      local Bad = class("bad")
      function Bad:stop() error("cannot stop bad") end
      local ctx = springrun.context {
        a = { class = class("a"), destroy_method = "stop" },
        bad = { class = Bad, props = { dep = ref "a" }, destroy_method = "stop" },
        z = { class = class("z"), props = { dep = ref "bad" }, destroy_method = "stop" },
      }
      ctx:close()
      assert.are.same({ "destroy:z", "destroy:a" }, { events[#events - 1], events[#events] })
      assert.are.equal(1, #lines)
      assert.truthy(lines[1]:find(" - springrun.context.ApplicationContext - ERROR - object 'bad': "
        .. "destroy_method 'stop' failed: ", 1, true))
      assert.truthy(lines[1]:find("cannot stop bad", 1, true))
    end)

    it("refuses get_object after close and closes on <close>", function()
      local events, class = recorder()
      do
        local ctx <close> = springrun.context { a = { class = class("a"), destroy_method = "stop" } }
        assert.is_truthy(ctx:get_object("a"))
      end
      assert.are.equal("destroy:a", events[#events])
      local ctx = springrun.context { a = { class = class("a") } }
      ctx:close()
      assert.are.equal("springrun.context: get_object('a'): the context is closed",
        message_of(function() ctx:get_object("a") end))
      assert.is_true(ctx:is_closed())
    end)

    it("close_all closes every open context, newest first", function()
      local events, class = recorder()
      local before = context.open_count()
      local c1 = springrun.context { one = { class = class("one"), destroy_method = "stop" } }
      springrun.context { two = { class = class("two"), destroy_method = "stop" } }
      assert.are.equal(before + 2, context.open_count())
      c1:close()
      assert.are.equal(before + 1, context.open_count())
      springrun.context { three = { class = class("three"), destroy_method = "stop" } }
      context.close_all()
      assert.are.equal(0, context.open_count())
      local destroyed = {}
      for _, e in ipairs(events) do
        if e:find("^destroy:") then destroyed[#destroyed + 1] = e end
      end
      assert.are.same({ "destroy:one", "destroy:three", "destroy:two" }, destroyed)
    end)

    it("destroys what it created when creating the context fails", function()
      local events, class = recorder()
      local Failing = function() error("no luck") end
      assert.has_error(function()
        springrun.context {
          a = { class = class("a"), destroy_method = "stop" },
          b = { class = Failing, props = { a = ref "a" } },
        }
      end)
      assert.are.equal("destroy:a", events[#events])
    end)
  end)

  describe("definitions", function()
    it("lets a later table override an earlier id, logging it", function()
      local lines, restore = capture("DEBUG")
      finally(restore)
      local C = plain_class()
      local ctx = springrun.context(
        { a = { class = C, props = { v = 1 } }, b = { class = C } },
        { a = { class = C, props = { v = 2 } } })
      assert.are.equal(2, ctx:get_object("a").v)
      local text = table.concat(lines, "\n")
      assert.truthy(text:find("springrun.container.ObjectContainer - DEBUG - a object definition "
        .. "already exists. Overriding with the new definition.", 1, true))
    end)

    it("lists ids in definition order and answers has_object", function()
      local C = plain_class()
      local ctx = springrun.context({ b = { class = C }, a = { class = C } }, { c = { class = C } })
      assert.are.same({ "a", "b", "c" }, ctx:object_ids())
      assert.is_true(ctx:has_object("a"))
      assert.is_false(ctx:has_object("zz"))
      assert.is_false(ctx:has_object(42))
    end)

    it("is also reachable as ApplicationContext(...) and ApplicationContext.new(...)", function()
      local C = plain_class()
      local ctx1 = springrun.ApplicationContext { a = { class = C } }
      local ctx2 = springrun.ApplicationContext.new { a = { class = C } }
      assert.is_true(context.is_context(ctx1))
      assert.is_true(context.is_context(ctx2))
      assert.are_not.equal(ctx1:get_object("a"), ctx2:get_object("a"))
    end)

    it("loads a context file returning definitions or a context", function()
      local ctx = springrun.load_context("spec/fixtures/ctx/context_file.lua")
      assert.are.equal("hello", ctx:get_object("holder").greeting.text)
      local ctx2 = springrun.load_context("spec/fixtures/ctx/context_file_ctx.lua")
      assert.are.equal(42, ctx2:get_object("answer").value)
      local bad = os.tmpname()
      finally(function() os.remove(bad) end)
      local f = assert(io.open(bad, "w"))
      f:write("return 5\n")
      f:close()
      assert.truthy(message_of(function() springrun.load_context(bad) end):find(
        "must return a table of definitions or a context, got number", 1, true))
      assert.truthy(message_of(function() springrun.load_context("/nonexistent/ctx.lua") end):find(
        "springrun.load_context: cannot load '/nonexistent/ctx.lua'", 1, true))
    end)
  end)

  describe("logging", function()
    it("logs the lifecycle the seed's log shows", function()
      local lines, restore = capture("DEBUG")
      finally(restore)
      springrun.context {
        remoteService = { class = "server.Service" },
        user = { class = plain_class(), props = { service = ref "remoteService" } },
      }
      local msgs = {}
      for i, line in ipairs(lines) do msgs[i] = line:match("^%d+%-%d+%-%d+ [%d:,]+ %- (.*)$") end
      local expected = {
        "springrun.container.ObjectContainer - DEBUG - === Scanning configuration LuaConfig(#1) for object definitions ===",
        "springrun.container.ObjectContainer - DEBUG - remoteService object definition does not exist. Adding to list of definitions.",
        "springrun.container.ObjectContainer - DEBUG - user object definition does not exist. Adding to list of definitions.",
        "springrun.container.ObjectContainer - DEBUG - === Done reading object definitions. ===",
        "springrun.context.ApplicationContext - DEBUG - Eagerly fetching remoteService",
        "springrun.context.ApplicationContext - DEBUG - Did NOT find object 'remoteService' in the singleton storage.",
        "springrun.context.ApplicationContext - DEBUG - Creating an instance of id=remoteService props=[] scope=scope.SINGLETON factory=ReflectiveObjectFactory(server.Service)",
        "springrun.factory.ReflectiveObjectFactory - DEBUG - Creating an instance of server.Service",
        "springrun.context.ApplicationContext - DEBUG - Stored object 'remoteService' in container's singleton storage",
        "springrun.context.ApplicationContext - DEBUG - Eagerly fetching user",
        "springrun.context.ApplicationContext - DEBUG - Did NOT find object 'user' in the singleton storage.",
      }
      for i, e in ipairs(expected) do assert.are.equal(e, msgs[i]) end
      assert.truthy(msgs[12]:find("Creating an instance of id=user props=[service] scope=scope.SINGLETON", 1, true))
      assert.are.equal("springrun.context.ApplicationContext - DEBUG - Stored object 'user' in container's singleton storage",
        msgs[#msgs])
    end)
  end)

  describe("errors", function()
    it("names an unknown ref and who refers to it, and where", function()
      local C = plain_class()
      assert.are.equal(
        "springrun.context: object 'user' refers to unknown object 'ghost' (props.pool[2])",
        message_of(function()
          springrun.context { s = { class = C }, user = { class = C, props = { pool = { ref "s", ref "ghost" } } } }
        end))
      assert.are.equal(
        "springrun.context: object 'user' refers to unknown object 'ghost' (args.opts.x)",
        message_of(function() springrun.context { user = { class = C, args = { opts = { x = ref "ghost" } } } } end))
      assert.are.equal(
        "springrun.context: object 'user' refers to unknown object 'ghost' (depends_on)",
        message_of(function() springrun.context { user = { class = C, depends_on = "ghost" } } end))
    end)

    it("reports a circular dependency through three objects with the whole chain", function()
      local C = plain_class()
      assert.are.equal("springrun.context: circular dependency: a -> b -> c -> a", message_of(function()
        springrun.context {
          a = { class = C, props = { next = ref "b" } },
          b = { class = C, args = { ref "c" } },
          c = { class = C, props = { map = { k = { ref "a" } } }, lazy_init = true },
        }
      end))
      assert.are.equal("springrun.context: circular dependency: a -> b -> a", message_of(function()
        springrun.context {
          a = { class = C, props = { b = object { class = C, props = { x = ref "b" } } } },
          b = { class = C, scope = "prototype", props = { a = ref "a" } },
        }
      end))
    end)

    it("reports a cycle met only at run time (a constructor asking the context) with its chain", function()
      local ctx
      local y_asks_x = true
      ctx = springrun.context {
        x = { factory = function() return { other = ctx:get_object("y") } end, lazy_init = true },
        y = { factory = function() return { other = y_asks_x and ctx:get_object("x") or nil } end, lazy_init = true },
      }
      local msg = message_of(function() ctx:get_object("x") end)
      assert.truthy(msg:find("circular dependency: x -> y -> x", 1, true), msg)
      -- the creation stack was unwound: once the loop is gone, x can be created
      y_asks_x = false
      local x = ctx:get_object("x")
      assert.are.equal(ctx:get_object("y"), x.other)
    end)

    it("tells a missing module from a missing field and from a module that fails to load", function()
      local nf = message_of(function() springrun.context { a = { class = "no_such_module.Thing" } } end)
      assert.truthy(nf:find("^springrun.context: object 'a': cannot resolve class 'no_such_module.Thing': "
        .. "module 'no_such_module' not found:"), nf)
      assert.are.equal(
        "springrun.context: object 'a': cannot resolve class 'server.Missing': module 'server' has no field 'Missing'",
        message_of(function() springrun.context { a = { class = "server.Missing" } } end))
      local broken = message_of(function() springrun.context { a = { class = "broken_module.X" } } end)
      assert.truthy(broken:find("object 'a': cannot resolve class 'broken_module.X': loading module "
        .. "'broken_module' failed: ", 1, true), broken)
      assert.truthy(broken:find("deliberate load failure", 1, true))
      assert.are.equal(
        "springrun.context: object 'f': cannot resolve factory 'server.nope': module 'server' has no field 'nope'",
        message_of(function() springrun.context { f = { factory = "server.nope" } } end))
    end)

    it("says a Spring Python class springrun does not have yet is not implemented", function()
      assert.are.equal(
        "springrun.context: object 'personService': class 'springpython.remoting.xmlrpc.XMLRPCServiceExporter' "
        .. "maps to springrun's 'springrun.remoting.xmlrpc.XMLRPCServiceExporter', which is not implemented yet "
        .. "(module 'springrun.remoting.xmlrpc' not found)",
        message_of(function()
          springrun.context { personService = { class = "springpython.remoting.xmlrpc.XMLRPCServiceExporter" } }
        end))
    end)

    it("keeps a constructor error's message and traceback", function()
      local function explode_in_constructor() error("constructor exploded") end
      local msg = message_of(function()
        springrun.context { boom = { class = { new = function() explode_in_constructor() end } } }
      end)
      assert.truthy(msg:find("^springrun.context: object 'boom': constructor of class table: 0x%x+ failed: "), msg)
      assert.truthy(msg:find("context_spec.lua:%d+: constructor exploded"), msg)
      assert.truthy(msg:find("stack traceback:", 1, true))
      assert.truthy(msg:find("explode_in_constructor", 1, true))
    end)

    it("keeps after_properties_set and init_method errors' messages and tracebacks", function()
      local C = plain_class()
      function C:after_properties_set() if self.fail_aps then error("aps broke") end end
      function C:go() error({ code = 7 }) end
      local aps = message_of(function() springrun.context { a = { class = C, props = { fail_aps = true } } } end)
      assert.truthy(aps:find("^springrun.context: object 'a': after_properties_set failed: .*aps broke\nstack traceback:"), aps)
      local init = message_of(function() springrun.context { a = { class = C, init_method = "go" } } end)
      assert.truthy(init:find("^springrun.context: object 'a': init_method 'go' failed: table: 0x%x+\nstack traceback:"), init)
      assert.are.equal("springrun.context: object 'a': init_method 'nope' not found on the object (got nil)",
        message_of(function() springrun.context { a = { class = C, init_method = "nope" } } end))
    end)

    it("rejects an unknown definition key, listing the valid ones", function()
      local C = plain_class()
      assert.are.equal(
        "springrun.context: object 'a': unknown definition key 'propertes' (did you mean 'props'?); valid keys: "
        .. "abstract, args, class, depends_on, destroy_method, factory, init_method, lazy_init, parent, props, scope",
        message_of(function() springrun.context { a = { class = C, propertes = { x = 1 } } } end))
      assert.truthy(message_of(function()
        springrun.context { a = { class = C, props = { inner = object { class = C, lazyinit = true } } } }
      end):find("object 'a', inner object at props.inner: unknown definition key 'lazyinit' (did you mean 'lazy_init'?)", 1, true))
    end)

    it("rejects malformed definitions naming the object", function()
      local C = plain_class()
      local cases = {
        { { a = "Service" }, "object 'a': a definition must be a plain table, got string" },
        { { a = ref "b", b = { class = C } }, "object 'a': a definition must be a plain table, got a ref" },
        { { a = { class = C, factory = C } }, "object 'a': give either class or factory, not both" },
        { { a = { class = 5 } }, "object 'a': class must be a table, a function or a \"module.Class\" string, got number" },
        { { a = { class = C, scope = "session" } }, "object 'a': scope must be \"singleton\" or \"prototype\", got session" },
        { { a = { class = C, lazy_init = "yes" } }, "object 'a': lazy_init must be a boolean, got string" },
        { { a = { props = {} } }, "object 'a' has neither class nor factory" },
        { { a = { class = C, props = { [1] = "x" } } }, "object 'a': props keys must be property names (strings), got number 1" },
        { { a = { class = C, parent = "nobody" } }, "object 'a' has unknown parent 'nobody'" },
        { { a = { class = {} } }, "object 'a': class table: " },
        { { a = { class = C, props = { b = ref "base" } }, base = { abstract = true, class = C } },
          "object 'a' refers to abstract object 'base' (props.b)" },
      }
      for _, case in ipairs(cases) do
        local msg = message_of(function() springrun.context(case[1]) end)
        assert.truthy(msg:find("springrun.context: " .. case[2], 1, true), msg)
      end
    end)

    it("names an unknown id asked of get_object and lists the defined ones", function()
      local C = plain_class()
      local ctx = springrun.context { a = { class = C }, b = { class = C } }
      assert.are.equal("springrun.context: no object named 'zz' (defined: a, b)",
        message_of(function() ctx:get_object("zz") end))
    end)

    it("fails when a constructor returns nil", function()
      assert.are.equal("springrun.context: object 'n': factory f returned nil", message_of(function()
        springrun.context { n = { factory = setmetatable({}, { __call = function() end, __name = "f" }) } }
      end))
    end)
  end)
end)
