-- Objects passed by reference (Pyro4's AUTOPROXY and callbacks):
-- springrun.register / springrun.callback, exported objects travelling as
-- Pyro4 Proxy class dicts and received ones becoming proxies; with a real
-- Python Pyro4 client and daemon, another springrun process and this one;
-- hostile class dicts and the per-connection bound on registrations.
local springrun = require "springrun"
local json = require "springrun.json"
local refs = require "springrun.refs"
local proc = require "helpers.proc"
local pyro4 = require "helpers.pyro4"
local client = require "helpers.client"
local uv = require "luv"

local Refs = dofile(pyro4.fixtures .. "/refs_service.lua")

local function url_of(name, port) return string.format("PYRO:%s@127.0.0.1:%d", name, port) end

local function export(cleanup, props)
  props = props or {}
  props.service_name, props.service = "refs", Refs
  props.service_host, props.service_port = "127.0.0.1", 0
  local ex = springrun.PyroServiceExporter(props)
  ex:after_properties_set()
  cleanup(function() ex:destroy() end)
  return ex, url_of("refs", ex:bound_port())
end

local function wait_for(pred, seconds)
  local deadline = uv.hrtime() + (seconds or 5) * 1e9
  while not pred() and uv.hrtime() < deadline do proc.poll_step(20) end
  return pred()
end

-- A Lua callback object, registered (unregistered by cleanup).
local function lua_callback(cleanup)
  local cb = springrun.callback({ notify = function(_, x) return "lua notified " .. tostring(x) end })
  cleanup(function() springrun.unregister(cb) end)
  return cb
end

describe("springrun pass-by-reference #interop", function()
  setup(function() pyro4.require_python() end)

  it("lets a Python client pass a @Pyro4.callback object that the Lua service calls back, and get Lua objects as proxies", function()
    local cleanup = proc.cleanups(finally)
    local _, url = export(cleanup)
    local r = json.decode(pyro4.run_python({ proc.python, pyro4.fixtures .. "/features_client.py", "refs", url },
      { PYRO_SERIALIZER = "json" }))
    assert.are.equal("python notified 5", r.call_me)
    assert.are.equal("Proxy", r.child_type)
    assert.are.equal("child 7", r.child)
    assert.are.equal("SerializeError: unsupported serialized class: evil.Thing", r.evil)
    assert.are.same({ 1 }, r.after)
  end)

  it("gives a Lua client the objects a Python daemon returns as proxies, and lets it call back into Lua", function()
    local cleanup = proc.cleanups(finally)
    local p, port = client.start_python("features_service.py", { 0 })
    cleanup(function() proc.stop(p) end)
    local svc = springrun.proxy(url_of("features", port), { timeout = 10 })
    cleanup(function() svc:destroy() end)
    local child = svc:make_child(3)
    assert.is_true(springrun.proxy.is_proxy(child))
    assert.are.equal("child 3", child:hello())
    child:destroy()
    local cb = lua_callback(cleanup)
    assert.are.equal("lua notified 4", svc:call_back(cb, 4)) -- the loop turns while it waits
    local ok, r = client.in_task(function() return svc:call_back(cb, 5) end)
    assert(ok, tostring(r))
    assert.are.equal("lua notified 5", r)
  end)

  it("passes objects both ways between two springrun processes, and inside one", function()
    local cleanup = proc.cleanups(finally)
    local port = proc.free_port()
    local sp = proc.spawn({ proc.bin, pyro4.fixtures .. "/features_server.lua", tostring(port) })
    cleanup(function() proc.stop(sp) end)
    pyro4.wait_output(sp, "SERVING", 15, "features_server.lua")
    local remote = springrun.proxy(url_of("refs", port), { timeout = 10 })
    cleanup(function() remote:destroy() end)
    local r = remote:make(5)
    assert.is_true(springrun.proxy.is_proxy(r.child))
    assert.are.equal("child 5", r.child:hello())
    r.child:destroy()
    local cb = lua_callback(cleanup)
    assert.are.equal("lua notified 6", remote:call_me(cb, 6))
    -- in one process: the service's own objects and a callback
    local _, url = export(cleanup)
    local ok, res = client.in_task(function()
      local p = springrun.proxy(url, { timeout = 10 })
      local out = { p:make(8).child:hello(), p:call_me(cb, 9) }
      p:destroy()
      return out
    end)
    assert(ok, tostring(res))
    assert.are.same({ "child 8", "lua notified 9" }, res)
  end)

  it("never dials a received proxy on decode, only when the service calls it", function()
    local cleanup = proc.cleanups(finally)
    local _, url = export(cleanup)
    local accepted = 0
    local server = uv.new_tcp()
    server:bind("127.0.0.1", 0)
    server:listen(8, function()
      accepted = accepted + 1
      local c = uv.new_tcp()
      server:accept(c)
      c:close()
    end)
    cleanup(function() server:close() end)
    local lport = server:getsockname().port
    local dict = { __class__ = "Pyro4.core.Proxy", state = json.array({ url_of("x", lport),
      json.array({}), json.array({ "hello" }), json.array({}), 0.0, json.null, "hello", 0, json.null }) }
    local svc = springrun.proxy(url, { timeout = 10 })
    cleanup(function() svc:destroy() end)
    local ok, r = client.in_task(function() return svc:keep(dict) end)
    assert(ok, tostring(r))
    assert.is_true(r)
    proc.poll_step(100)
    assert.are.equal(0, accepted)
    ok = client.in_task(function() return svc:use(dict) end)
    assert.is_false(ok)
    assert.is_true(wait_for(function() return accepted >= 1 end))
  end)

  it("answers other class dicts with SerializeError and passes URI dicts through", function()
    local cleanup = proc.cleanups(finally)
    local _, url = export(cleanup)
    local svc = springrun.proxy(url, { timeout = 10 })
    cleanup(function() svc:destroy() end)
    local ok, e = client.in_task(function() return svc:echo({ { __class__ = "evil.Thing", x = 1 } }) end)
    assert.is_false(ok)
    assert.are.equal("Pyro4.errors.SerializeError", e.class)
    assert.matches("unsupported serialized class: evil.Thing", tostring(e), 1, true)
    local uri = { __class__ = "Pyro4.core.URI", state = json.array({ "PYRO", "x", json.null, "127.0.0.1", 9 }) }
    local ok2, r = client.in_task(function() return svc:echo(uri) end)
    assert(ok2, tostring(r))
    assert.are.equal("Pyro4.core.URI", r.__class__)
  end)

  it("bounds registrations per connection and releases them when it closes", function()
    local cleanup = proc.cleanups(finally)
    assert.is_true(wait_for(function() return refs.count() == 0 end))
    local _, url = export(cleanup, { max_registrations_per_connection = 2 })
    local svc = springrun.proxy(url, { timeout = 10 })
    cleanup(function() svc:destroy() end)
    local ok, r = client.in_task(function()
      local a, b = svc:make(1), svc:make(2)
      local ok3, e3 = pcall(svc.make, svc, 3)
      return { a.child:hello(), b.child:hello(), ok3, tostring(e3), a.child }
    end)
    assert(ok, tostring(r))
    assert.are.equal("child 1", r[1])
    assert.are.equal("child 2", r[2])
    assert.is_false(r[3])
    assert.matches("too many objects registered for this connection (max_registrations_per_connection 2)", r[4], 1, true)
    assert.are.equal(2, refs.count())
    svc:destroy()
    assert.is_true(wait_for(function() return refs.count() == 0 end))
    local child = r[5]
    local ok4, e4 = client.in_task(function() return child:hello() end)
    assert.is_false(ok4)
    assert.matches("unknown object", tostring(e4), 1, true)
    child:destroy()
  end)
end)

describe("README: Objects by reference and callbacks", function()
  it("runs the example and prints what its comment says", function()
    local readme = require "helpers.readme"
    local st, out, err = readme.run_lua(readme.block(
      "## Objects by reference and callbacks (`springrun.register`, `springrun.callback`)", "lua"))
    assert.are.equal(0, st, err)
    assert.are.equal("hello world\n", out)
  end)
end)
