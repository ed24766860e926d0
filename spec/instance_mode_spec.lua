-- Instance modes of an export (instance_mode = "single" | "session" |
-- "percall", service_factory, or service = springrun.ref of a
-- prototype-scoped definition), as Pyro4's @behavior(instance_mode=...):
-- checked with a real Python Pyro4 client, springrun proxies in this
-- process, and springrun proxies against another springrun process.
local springrun = require "springrun"
local errors = require "springrun.errors"
local proc = require "helpers.proc"
local pyro4 = require "helpers.pyro4"
local client = require "helpers.client"
local uv = require "luv"

local Counter = dofile(pyro4.fixtures .. "/counter_service.lua")

local function url_of(name, port) return string.format("PYRO:%s@127.0.0.1:%d", name, port) end

-- An exporter of props on 127.0.0.1, a free port; destroyed by cleanup.
local function export(cleanup, props)
  props.service_host, props.service_port = "127.0.0.1", 0
  local ex = springrun.PyroServiceExporter(props)
  ex:after_properties_set()
  cleanup(function() ex:destroy() end)
  return ex, url_of(props.service_name, ex:bound_port())
end

-- Two proxies (two connections): two calls on the first, one on the second.
local function lua_instances(cleanup, url)
  local p1 = springrun.proxy(url, { timeout = 10 })
  local p2 = springrun.proxy(url, { timeout = 10 })
  cleanup(function() p1:destroy(); p2:destroy() end)
  local a, b = p1:whoami(), p1:whoami()
  local c = p2:whoami()
  return { first = { a, b }, second = { c } }
end

local function py_instances(url)
  local out = pyro4.run_python({ proc.python, pyro4.fixtures .. "/features_client.py", "instances", url },
    { PYRO_SERIALIZER = "json" })
  return require("springrun.json").decode(out)
end

-- The assertions every client kind shares, by mode.
local function check(mode, r)
  local a, b, c = r.first[1], r.first[2], r.second[1]
  if mode == "single" then
    assert.are.equal(a.id, b.id)
    assert.are.equal(a.id, c.id)
    assert.are.same({ 1, 2, 3 }, { a.calls - a.calls + 1, b.calls - a.calls + 1, c.calls - a.calls + 1 })
  elseif mode == "session" then
    assert.are.equal(a.id, b.id)     -- one connection, one instance
    assert.are_not.equal(a.id, c.id) -- another connection, another instance
    assert.are.same({ 1, 2, 1 }, { a.calls, b.calls, c.calls })
  else
    assert.are_not.equal(a.id, b.id)
    assert.are_not.equal(b.id, c.id)
    assert.are_not.equal(a.id, c.id)
    assert.are.same({ 1, 1, 1 }, { a.calls, b.calls, c.calls })
  end
end

local MODES = {
  single = function() return { service = Counter.new() } end,
  session = function() return { service_factory = Counter.new } end,
  percall = function() return { service_factory = Counter.new } end,
}

describe("springrun instance modes #interop", function()
  setup(function() pyro4.require_python() end)

  for _, mode in ipairs({ "single", "session", "percall" }) do
    it("gives a Python Pyro4 client " .. mode .. " instances", function()
      local cleanup = proc.cleanups(finally)
      local props = MODES[mode]()
      props.service_name, props.instance_mode = "counter." .. mode, mode
      local _, url = export(cleanup, props)
      check(mode, py_instances(url))
    end)

    it("gives springrun proxies in the same process " .. mode .. " instances", function()
      local cleanup = proc.cleanups(finally)
      local props = MODES[mode]()
      props.service_name, props.instance_mode = "counter." .. mode, mode
      local _, url = export(cleanup, props)
      local ok, r = client.in_task(function() return lua_instances(cleanup, url) end)
      assert(ok, tostring(r))
      check(mode, r)
    end)
  end

  it("gives springrun proxies of another process each mode (a context's prototype ref and service_factory)", function()
    local cleanup = proc.cleanups(finally)
    local port = proc.free_port()
    local p = proc.spawn({ proc.bin, pyro4.fixtures .. "/features_server.lua", tostring(port) })
    cleanup(function() proc.stop(p) end)
    pyro4.wait_output(p, "SERVING", 15, "features_server.lua")
    for _, mode in ipairs({ "single", "session", "percall" }) do
      check(mode, lua_instances(cleanup, url_of(mode, port)))
      check(mode, py_instances(url_of(mode, port)))
    end
  end)

  it("makes session instances from a context's prototype definition and drops them after the connection closes", function()
    local cleanup = proc.cleanups(finally)
    local ctx = springrun.context {
      counter = { class = Counter.new, scope = "prototype" },
      exporter = { class = springrun.PyroServiceExporter, props = {
        service_name = "counter.proto", service = springrun.ref "counter", instance_mode = "session",
        service_host = "127.0.0.1", service_port = 0 } },
    }
    cleanup(function() ctx:close() end)
    local ex = ctx:get_object("exporter")
    local url = url_of("counter.proto", ex:bound_port())
    assert.are.equal(0, ex:session_count())
    check("session", py_instances(url))
    local p1 = springrun.proxy(url, { timeout = 10 })
    local p2 = springrun.proxy(url, { timeout = 10 })
    cleanup(function() p1:destroy(); p2:destroy() end)
    local ok, err = client.in_task(function() p1:whoami(); p2:whoami() end)
    assert(ok, tostring(err))
    local function wait_count(n)
      local deadline = uv.hrtime() + 5e9
      while ex:session_count() ~= n and uv.hrtime() < deadline do proc.poll_step(20) end
      return ex:session_count()
    end
    -- the Python client's two connections are gone; the two proxies' are open
    assert.are.equal(2, wait_count(2))
    p1:destroy()
    assert.are.equal(1, wait_count(1))
    p2:destroy()
    assert.are.equal(0, wait_count(0))
  end)

  it("answers a call whose instance cannot be made with the factory's error, and keeps serving", function()
    local cleanup = proc.cleanups(finally)
    local n = 0
    local _, url = export(cleanup, { service_name = "counter.flaky", instance_mode = "percall",
      service_factory = function()
        n = n + 1
        if n == 2 then error("no instance today") end
        return Counter.new()
      end })
    local svc = springrun.proxy(url, { timeout = 10 })
    cleanup(function() svc:destroy() end)
    -- the first call gets the object made at export; the second a new one: it fails
    local ok1, r1 = client.in_task(function() return svc:whoami() end)
    assert(ok1, tostring(r1))
    local ok, e = client.in_task(function() return svc:whoami() end)
    assert.is_false(ok)
    assert.are.equal("remote", e.kind)
    assert.matches("no instance today", tostring(e), 1, true)
    local ok2, r = client.in_task(function() return svc:whoami() end)
    assert(ok2, tostring(r))
    assert.are.equal(1, r.calls)
  end)

  it("refuses configurations that cannot work, naming the property", function()
    local function fails(props, msg)
      props.service_name, props.service_host, props.service_port = "bad", "127.0.0.1", 0
      local ex = springrun.PyroServiceExporter(props)
      local ok, e = pcall(ex.after_properties_set, ex)
      assert.is_false(ok)
      assert.is_true(errors.is_config(e))
      assert.matches(msg, tostring(e), 1, true)
      ex:destroy()
    end
    fails({ service = Counter.new(), instance_mode = "pooled" },
      "instance_mode must be \"single\", \"session\" or \"percall\", got pooled")
    fails({ service = Counter.new(), instance_mode = "session" },
      "instance_mode \"session\" needs service_factory (a function) or service = springrun.ref of a prototype-scoped definition")
    fails({ service = Counter.new(), service_factory = Counter.new, instance_mode = "percall" },
      "set service or service_factory, not both")
    fails({ service_factory = "Counter.new", instance_mode = "percall" },
      "service_factory must be a function")
    fails({ service_factory = function() error("broken") end, instance_mode = "percall" },
      "service_factory failed: ")
  end)
end)

describe("README: Instance modes", function()
  it("runs the example and prints what its comment says", function()
    local readme = require "helpers.readme"
    local code = readme.block("## Instance modes (one object, one per connection, one per call)", "lua")
    local st, out, err = readme.run_lua(code)
    assert.are.equal(0, st, err)
    assert.are.equal("1\t1\t2\n", out)
  end)
end)
