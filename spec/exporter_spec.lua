-- PyroServiceExporter: properties, validation, lifecycle of shared daemons
-- (one per host:port), port 0, errors naming host:port, logging as the seed
-- shows it, containers, and the runtime loop around it.
local springrun = require "springrun"
local core = require "springrun.core"
local log = require "springrun.log"
local uv = require "luv"
local runtime = require "springrun.runtime"
local wc = require "helpers.wireclient"
local proc = require "helpers.proc"

local PyroServiceExporter = springrun.PyroServiceExporter

local Service = {}
Service.__index = Service
function Service.new() return setmetatable({}, Service) end
function Service:get_data(p) return "You got remote data => " .. tostring(p) end
function Service:log_event() end

local function handshake(port, name)
  local c, err = wc.connect("127.0.0.1", port)
  if not c then return nil, err end
  c:send(core.wire_encode(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, core.SER_JSON,
    string.format('{"handshake": "hello", "object": "%s"}', name)))
  local m, rerr = c:recv()
  c:close()
  if not m then return nil, rerr end
  return m.type == core.MSG_CONNECTOK, m
end

local function exporter(opts)
  opts.service = opts.service or Service.new()
  opts.service_host = opts.service_host or "127.0.0.1"
  if opts.service_port == nil then opts.service_port = 0 end
  return PyroServiceExporter(opts)
end

describe("springrun.exporter #unit #net", function()
  setup(function()
    -- start from a process that exports nothing (an earlier spec file may
    -- have left an exporter running; runtime.run below relies on this)
    require("springrun.exporter").unexport_all()
  end)

  after_each(function()
    require("springrun.exporter").unexport_all()
    uv.run("nowait") -- luv 1.44 needs a turn after closing handles before the state closes
  end)

  it("takes properties from the constructor table, assignment, setters; defaults localhost:7766", function()
    local e = PyroServiceExporter()
    assert.are.equal("localhost", e.service_host)
    assert.are.equal(7766, e.service_port)
    assert.is_true(e._disposable)
    e.service_name = "A"
    e:set_service_port(7000)
    e:set_service_host("127.0.0.1")
    e:set_oneway({ "log_event" })
    assert.are.equal("A", e.service_name)
    assert.are.equal(7000, e.service_port)
    assert.are.equal("127.0.0.1", e.service_host)
    assert.are.same({ "log_event" }, e.oneway)
    local svc = Service.new()
    local e2 = PyroServiceExporter{ service_name = "B", service = svc, service_port = 7001 }
    assert.are.equal(svc, e2.service)
    assert.are.equal(7001, e2.service_port)
    assert.are.equal(PyroServiceExporter, require("springrun.remoting.pyro").PyroServiceExporter)
    local ok, err = pcall(function() PyroServiceExporter{ service_nam = "x" } end)
    assert.is_false(ok)
    assert.are.equal("unknown property 'service_nam' of PyroServiceExporter (did you mean 'service_name'?)",
      tostring(err))
    ok, err = pcall(function() PyroServiceExporter{ zzz = 1 } end)
    assert.is_false(ok)
    assert.truthy(err:find("unknown property 'zzz' of PyroServiceExporter (properties: service_name, service, service_host, service_port, oneway", 1, true))
    -- assignment after construction (as a context's props do) is checked too
    local e3 = PyroServiceExporter{}
    ok, err = pcall(function() e3.servce = svc end)
    assert.is_false(ok)
    assert.are.equal("unknown property 'servce' of PyroServiceExporter (did you mean 'service'?)", tostring(err))
  end)

  it("refuses to start without service_name or service, naming the property", function()
    local ok, err = pcall(function() PyroServiceExporter{ service = Service.new() }:after_properties_set() end)
    assert.is_false(ok)
    assert.truthy(err:find("PyroServiceExporter: property service_name is not set", 1, true))
    ok, err = pcall(function() PyroServiceExporter{ service_name = "S" }:after_properties_set() end)
    assert.is_false(ok)
    assert.truthy(err:find("PyroServiceExporter 'S': property service is not set", 1, true))
    ok, err = pcall(function() exporter{ service_name = "S", service_port = 70000 }:after_properties_set() end)
    assert.truthy(err:find("service_port must be an integer 0..65535, got 70000", 1, true))
    ok, err = pcall(function() exporter{ service_name = "S", oneway = { "nope" } }:after_properties_set() end)
    assert.truthy(err:find("oneway method 'nope' is not a method of the service", 1, true))
    assert.is_false(runtime.has_exports())
  end)

  it("binds a free port for service_port 0 and exposes it as service_port and bound_port()", function()
    local e = exporter{ service_name = "Free" }
    assert.is_nil(e:bound_port())
    e:after_properties_set()
    assert.is_true(e.service_port > 0)
    assert.are.equal(e.service_port, e:bound_port())
    assert.is_true(e:is_exported())
    assert.is_true(runtime.has_exports())
    assert.is_true((handshake(e.service_port, "Free")))
    e:destroy()
    assert.is_nil(e:bound_port())
    assert.is_false(runtime.has_exports())
  end)

  it("accepts a numeric string port, as XML configuration gives it", function()
    local port = proc.free_port()
    local e = exporter{ service_name = "Str", service_port = tostring(port) }
    e:after_properties_set()
    assert.are.equal(port, e.service_port)
    e:destroy()
  end)

  it("shares one daemon between exporters on the same host:port; the last destroy stops listening", function()
    local base = core.daemon_count() -- other specs may leave daemons running
    local a = exporter{ service_name = "A" }
    a:after_properties_set()
    local port = a.service_port
    local b = exporter{ service_name = "B", service_port = port }
    b:after_properties_set()
    assert.are.equal(port, b.service_port)
    assert.are.equal(base + 1, core.daemon_count())
    assert.is_true((handshake(port, "A")))
    assert.is_true((handshake(port, "B")))
    a:destroy()
    assert.is_true(proc.port_open("127.0.0.1", port))
    local ok, m = handshake(port, "A")
    assert.is_false(ok)
    assert.are.equal('"unknown object"', m.data)
    assert.is_true((handshake(port, "B")))
    b:destroy()
    b:destroy() -- idempotent
    assert.are.equal(base, core.daemon_count())
    assert.is_true(proc.wait_port_closed("127.0.0.1", port, 5))
  end)

  it("treats localhost and 127.0.0.1 as one address", function()
    local base = core.daemon_count()
    local a = exporter{ service_name = "A" }
    a:after_properties_set()
    local b = exporter{ service_name = "B", service_host = "localhost", service_port = a.service_port }
    b:after_properties_set()
    assert.are.equal(base + 1, core.daemon_count())
  end)

  it("fails at after_properties_set when the port is in use, naming host:port", function()
    local blocker = uv.new_tcp()
    assert(blocker:bind("127.0.0.1", 0))
    assert(blocker:listen(8, function() end))
    local port = blocker:getsockname().port
    finally(function() blocker:close() uv.run("nowait") end)
    local base = core.daemon_count()
    local had_exports = runtime.has_exports()
    local e = exporter{ service_name = "Busy", service_port = port }
    local ok, err = pcall(e.after_properties_set, e)
    assert.is_false(ok)
    assert.are.equal("cannot export Busy: 127.0.0.1:" .. port .. " is already in use", tostring(err))
    assert.is_false(e:is_exported())
    assert.are.equal(had_exports, runtime.has_exports())
    assert.are.equal(base, core.daemon_count())
  end)

  it("listens on an IPv6 address and names it in brackets", function()
    local probe = uv.new_tcp()
    local can = probe:bind("::1", 0)
    probe:close()
    uv.run("nowait")
    if not can then
      pending("no IPv6 loopback here")
      return
    end
    local e = exporter{ service_name = "Six", service_host = "::1" }
    e:after_properties_set()
    local c = assert(wc.connect("::1", e.service_port))
    c:send(core.wire_encode(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, core.SER_JSON,
      '{"handshake": "hello", "object": "Six"}'))
    assert.are.equal(core.MSG_CONNECTOK, assert(c:recv()).type)
    c:close()
    local blocker = exporter{ service_name = "Other", service_host = "::1", service_port = e.service_port }
    assert.is_true(pcall(blocker.after_properties_set, blocker)) -- same address: shared daemon
    local busy = exporter{ service_name = "Busy" }
    local t = uv.new_tcp()
    assert(t:bind("::1", 0))
    assert(t:listen(4, function() end))
    local port = t:getsockname().port
    finally(function() t:close() uv.run("nowait") end)
    busy.service_host, busy.service_port = "::1", port
    local ok, err = pcall(busy.after_properties_set, busy)
    assert.is_false(ok)
    assert.are.equal("cannot export Busy: [::1]:" .. port .. " is already in use", tostring(err))
  end)

  it("fails on an unknown host, naming it", function()
    local e = exporter{ service_name = "Nowhere", service_host = "no-such-host.invalid" }
    local ok, err = pcall(e.after_properties_set, e)
    assert.is_false(ok)
    assert.truthy(err:find("cannot listen on no-such-host.invalid:0: unknown host", 1, true))
  end)

  it("refuses a second service with the same name on one address", function()
    local base = core.daemon_count()
    local a = exporter{ service_name = "Same" }
    a:after_properties_set()
    local b = exporter{ service_name = "Same", service_port = a.service_port }
    local ok, err = pcall(b.after_properties_set, b)
    assert.is_false(ok)
    assert.truthy(err:find("service name 'Same' is already exported at 127.0.0.1:" .. a.service_port, 1, true))
    a:destroy()
    assert.are.equal(base, core.daemon_count())
  end)

  it("can export again after destroy", function()
    local e = exporter{ service_name = "Again" }
    e:after_properties_set()
    local first = e.service_port
    e:destroy()
    assert.is_true(proc.wait_port_closed("127.0.0.1", first, 5))
    e:after_properties_set()
    assert.is_true((handshake(e.service_port, "Again")))
    assert.has_error(function() e:after_properties_set() end)
  end)

  it("logs the seed's lifecycle lines at DEBUG", function()
    local lines = {}
    local prev = log.set_output(function(l) lines[#lines + 1] = l end)
    local pyro = log.get("springrun.remoting.pyro")
    pyro:set_level("DEBUG")
    finally(function()
      pyro:set_level(nil)
      log.set_output(prev)
    end)
    local e = exporter{ service_name = "ServiceName" }
    e:after_properties_set()
    local text = table.concat(lines, "\n")
    local expect = {
      "springrun.remoting.pyro.PyroServiceExporter - DEBUG - Exporting ServiceName as a Pyro service at 127.0.0.1:0",
      "springrun.remoting.pyro.PyroDaemonHolder - DEBUG - Registering ServiceName at 127.0.0.1:0 with the Pyro server",
      "springrun.remoting.pyro.PyroDaemonHolder - DEBUG - Pyro thread needs to be started at 127.0.0.1:0",
      "springrun.remoting.pyro.PyroDaemonHolder._PyroThread - DEBUG - Starting up Pyro server thread for 127.0.0.1:0",
    }
    local pos = 1
    for _, want in ipairs(expect) do
      local s, e2 = text:find(want, pos, true)
      assert.is_truthy(s, "missing or out of order: " .. want .. "\nin:\n" .. text)
      pos = e2 + 1
    end
  end)

  it("is created, exported and destroyed by a context (props, class string, close)", function()
    local port = proc.free_port()
    local ctx = springrun.context {
      remoteService = { class = Service },
      service_exporter = {
        class = "springrun.remoting.pyro.PyroServiceExporter",
        props = { service_name = "ServiceName", service = springrun.ref "remoteService",
                  service_host = "127.0.0.1", service_port = port },
      },
    }
    assert.is_true((handshake(port, "ServiceName")))
    ctx:close()
    assert.is_false(runtime.has_exports())
    assert.is_true(proc.wait_port_closed("127.0.0.1", port, 5))
  end)

  it("lets a service call another service of the same process through a proxy without deadlock", function()
    local inner = exporter{ service_name = "Inner" }
    inner:after_properties_set()
    local Outer = {}
    function Outer:relay(p)
      local px = springrun.proxy("PYRO:Inner@127.0.0.1:" .. inner.service_port)
      return "outer(" .. px:get_data(p) .. ")"
    end
    local outer = exporter{ service_name = "Outer", service = Outer, service_port = inner.service_port }
    outer:after_properties_set()
    local px = springrun.proxy("PYRO:Outer@127.0.0.1:" .. inner.service_port)
    assert.are.equal("outer(You got remote data => x)", px:relay("x"))
    px:_pyro_release()
  end)

  it("runtime.run returns when the last export is destroyed, and on stop()", function()
    local e = exporter{ service_name = "Loop" }
    e:after_properties_set()
    local t = uv.new_timer()
    t:start(30, 0, function() t:close() e:destroy() end)
    runtime.run()
    assert.is_false(runtime.has_exports())
    local e2 = exporter{ service_name = "Loop2" }
    e2:after_properties_set()
    local t2 = uv.new_timer()
    t2:start(30, 0, function() t2:close() runtime.stop() end)
    runtime.run()
    assert.is_true(e2:is_exported())
    e2:destroy()
    runtime.run() -- nothing exported: returns at once
  end)

  it("runs tasks: current() inside, nil outside; errors are reported, not raised", function()
    assert.is_nil(runtime.current())
    local inside
    local co = runtime.spawn(function(a)
      inside = runtime.current()
      local b = coroutine.yield()
      inside = a + b
    end, 1)
    assert.are.equal(co, inside)
    assert.are.equal(1, runtime.tasks())
    runtime.resume(co, 2)
    assert.are.equal(3, inside)
    assert.are.equal(0, runtime.tasks())
    local lines = {}
    local prev = log.set_output(function(l) lines[#lines + 1] = l end)
    runtime.spawn(function() error("task kaboom") end)
    log.set_output(prev)
    assert.truthy(table.concat(lines):find("task kaboom", 1, true))
    assert.are.equal(0, runtime.tasks())
    assert.has_error(function() runtime.resume(co) end)
  end)
end)
