-- Correlation ids (Pyro4's CORR annotation and current_context): what a
-- service sees (springrun.current_context), what the calls it makes while
-- serving send, springrun.set_correlation_id, and the log lines of a call;
-- with a real Python Pyro4 client and daemon, another springrun process and
-- this process.
local springrun = require "springrun"
local json = require "springrun.json"
local log = require "springrun.log"
local proc = require "helpers.proc"
local pyro4 = require "helpers.pyro4"
local client = require "helpers.client"

local Corr = dofile(pyro4.fixtures .. "/corr_service.lua")

local ID = "00112233-4455-4677-8899-aabbccddeeff"
local ID2 = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local function url_of(name, port) return string.format("PYRO:%s@127.0.0.1:%d", name, port) end

local function export(cleanup, name, service)
  local ex = springrun.PyroServiceExporter { service_name = name, service = service,
    service_host = "127.0.0.1", service_port = 0 }
  ex:after_properties_set()
  cleanup(function() ex:destroy() end)
  return url_of(name, ex:bound_port())
end

local function py_daemon(cleanup)
  local p, port = client.start_python("features_service.py", { 0 })
  cleanup(function() proc.stop(p) end)
  return url_of("features", port)
end

local function py_corr(url, downstream, id)
  local argv = { proc.python, pyro4.fixtures .. "/features_client.py", "corr", url, downstream }
  if id then argv[#argv + 1] = id end
  return json.decode(pyro4.run_python(argv, { PYRO_SERIALIZER = "json" }))
end

describe("springrun correlation ids #interop", function()
  setup(function() pyro4.require_python() end)
  after_each(function() springrun.set_correlation_id(nil) end)

  it("gives a Lua service the CORR a Python client sent, and sends it on with the calls it makes", function()
    local cleanup = proc.cleanups(finally)
    local url = export(cleanup, "corr", Corr)
    local r = py_corr(url, py_daemon(cleanup), ID)
    assert.are.equal(ID, r.mine.correlation_id)
    assert.matches("^127%.0%.0%.1:%d+$", r.mine.client_address)
    assert.are.equal(ID, r.theirs.correlation_id) -- what the Python daemon saw
  end)

  it("makes a fresh id for a call that came without one, and sends that on", function()
    local cleanup = proc.cleanups(finally)
    local url = export(cleanup, "corr", Corr)
    local down = py_daemon(cleanup)
    local a, b = py_corr(url, down), py_corr(url, down)
    assert.matches(UUID, a.mine.correlation_id)
    assert.are.equal(a.mine.correlation_id, a.theirs.correlation_id)
    assert.are_not.equal(a.mine.correlation_id, b.mine.correlation_id)
  end)

  it("sends the id a Lua client set to a Python daemon, blocking and in a task", function()
    local cleanup = proc.cleanups(finally)
    local svc = springrun.proxy(py_daemon(cleanup), { timeout = 10 })
    cleanup(function() svc:destroy() end)
    -- none set: none sent (the Pyro4 daemon then makes one of its own)
    local own = svc:ctx().correlation_id
    assert.matches(UUID, own)
    assert.are_not.equal(own, svc:ctx().correlation_id)
    springrun.set_correlation_id(ID)
    assert.are.equal(ID, svc:ctx().correlation_id)
    assert.are.equal(ID, springrun.current_context().correlation_id)
    local ok, r = client.in_task(function() return svc:ctx() end)
    assert(ok, tostring(r))
    assert.are.equal(ID, r.correlation_id)
    springrun.set_correlation_id(ID2:upper())
    assert.are.equal(ID2, svc:ctx().correlation_id)
  end)

  it("carries the id between two springrun processes and back into the same one", function()
    local cleanup = proc.cleanups(finally)
    local port = proc.free_port()
    local p = proc.spawn({ proc.bin, pyro4.fixtures .. "/features_server.lua", tostring(port) })
    cleanup(function() proc.stop(p) end)
    pyro4.wait_output(p, "SERVING", 15, "features_server.lua")
    local local_url = export(cleanup, "corr.local", Corr)
    local remote = springrun.proxy(url_of("corr", port), { timeout = 10 })
    cleanup(function() remote:destroy() end)
    springrun.set_correlation_id(ID)
    -- this process -> the other one -> back here (served in this process)
    local ok, r = client.in_task(function() return remote:relay(local_url) end)
    assert(ok, tostring(r))
    assert.are.equal(ID, r.mine.correlation_id)
    assert.are.equal(ID, r.theirs.correlation_id)
    -- the other process -> itself
    r = remote:relay(url_of("corr", port))
    assert.are.same({ ID, ID }, { r.mine.correlation_id, r.theirs.correlation_id })
    -- inside this process only
    ok, r = client.in_task(function()
      local me = springrun.proxy(local_url, { timeout = 10 })
      local res = me:relay(local_url)
      me:destroy()
      return res
    end)
    assert(ok, tostring(r))
    assert.are.same({ ID, ID }, { r.mine.correlation_id, r.theirs.correlation_id })
  end)

  it("writes the call's id in the log lines of the call, and only there", function()
    local cleanup = proc.cleanups(finally)
    local url = export(cleanup, "corr", Corr)
    local lines = {}
    log.set_output(function(line) lines[#lines + 1] = line end)
    cleanup(function() log.set_output(nil) end)
    springrun.set_correlation_id(ID)
    local svc = springrun.proxy(url, { timeout = 10 })
    cleanup(function() svc:destroy() end)
    local ok, err = client.in_task(function() svc:log("inside the call") end)
    assert(ok, tostring(err))
    log.get("corr.service"):warning("outside any call")
    local found = {}
    for _, l in ipairs(lines) do
      if l:find("inside the call", 1, true) then found.inside = l end
      if l:find("outside any call", 1, true) then found.outside = l end
    end
    assert.matches("WARNING - [corr " .. ID .. "] inside the call", found.inside, 1, true)
    assert.is_nil(found.outside:find("[corr", 1, true))
  end)

  it("refuses an id that is not a UUID", function()
    local ok, e = pcall(springrun.set_correlation_id, "not-a-uuid")
    assert.is_false(ok)
    assert.matches('expected a UUID text (like 1b4e28ba-2fa1-41d2-883f-0016d3cca427) or nil, got "not-a-uuid"', e, 1, true)
    assert.is_nil(springrun.current_context().correlation_id)
    assert.is_nil(springrun.current_context().client_address)
  end)
end)

describe("README: Correlation ids", function()
  it("runs the example and prints the id its comment shows", function()
    local readme = require "helpers.readme"
    local st, out, err = readme.run_lua(readme.block("## Correlation ids (Pyro4's CORR, `springrun.current_context()`)", "lua"))
    assert.are.equal(0, st, err)
    assert.are.equal("1b4e28ba-2fa1-41d2-883f-0016d3cca427\n", out)
  end)
end)
