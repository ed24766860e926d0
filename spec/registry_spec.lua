-- PyroServiceExporter's etcd registration (springrun.registry) against a
-- real etcd and real server processes.
local proc = require "helpers.proc"
local etcd_server = require "helpers.etcd"
local etcd = require "springrun.etcd"
local registry = require "springrun.registry"
local springrun = require "springrun"
local uv = require "luv"

local SERVER = proc.root .. "/spec/fixtures/registry_server.lua"

local function run_until(pred, seconds)
  local deadline = uv.hrtime() + (seconds or 10) * 1e9
  local t = uv.new_timer()
  t:start(50, 50, function() end)
  while not pred() and uv.hrtime() < deadline do uv.run("once") end
  t:stop()
  t:close()
  return pred()
end

local function start_server(cleanup, reg_url, ttl)
  local port = proc.free_port()
  local p = proc.spawn({ proc.bin, SERVER, tostring(port), reg_url, tostring(ttl) })
  cleanup(function() proc.stop(p) end)
  assert(proc.wait_port("127.0.0.1", port, 10, p))
  return p, port
end

describe("springrun.registry #net", function()
  it("parses etcd://host:port/prefix URLs and rejects others", function()
    assert.same({ endpoint = "http://127.0.0.1:2379", prefix = "/services/" },
      registry.parse("etcd://127.0.0.1:2379/services"))
    assert.same({ endpoint = "http://h:1", prefix = "/" }, registry.parse("etcd://h:1"))
    for _, bad in ipairs({ "http://h:1/x", "etcd://h/x", "etcd:///x" }) do
      local ok, e = pcall(registry.parse, bad)
      assert.is_false(ok)
      assert.matches("registry must be an etcd://host:port/prefix URL, got " .. bad, e.message, 1, true)
    end
    assert.equal("/services/ServiceName/127.0.0.1:7000",
      registry.key("/services/", "ServiceName", "PYRO:ServiceName@127.0.0.1:7000"))
  end)

  it("a server registers under a lease; kill -9 and the entry goes when the lease expires", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local c = etcd.client(e.url)
    local reg_url = "etcd://127.0.0.1:" .. e.port .. "/services"
    local p1, port1 = start_server(cleanup, reg_url, 2)
    local _, port2 = start_server(cleanup, reg_url, 2)
    -- the port opens a moment before the exporter registers
    assert.is_true(run_until(function() return #c:range("/services/ServiceName/") == 2 end))
    local kvs = c:range("/services/ServiceName/")
    local urls = {}
    for i, kv in ipairs(kvs) do urls[i] = kv.value end
    table.sort(urls)
    local want = { "PYRO:ServiceName@127.0.0.1:" .. port1, "PYRO:ServiceName@127.0.0.1:" .. port2 }
    table.sort(want)
    assert.same(want, urls)
    -- the registered URL works
    assert.equal("You got remote data => etcd", springrun.proxy(urls[1]):get_data("etcd"))
    -- alive past its TTL (kept alive), then killed: gone once the lease expires
    local key1 = "/services/ServiceName/127.0.0.1:" .. port1
    run_until(function() return false end, 3)
    assert.equal("PYRO:ServiceName@127.0.0.1:" .. port1, (c:get(key1)))
    proc.kill(p1, "sigkill")
    proc.wait_exit(p1, 5)
    assert.is_true(run_until(function() return c:get(key1) == nil end, 15))
    assert.equal(1, #c:range("/services/ServiceName/"))
  end)

  it("a clean shutdown revokes the lease: the entry goes at once", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local c = etcd.client(e.url)
    local p, port = start_server(cleanup, "etcd://127.0.0.1:" .. e.port .. "/svc", 60)
    local key = "/svc/ServiceName/127.0.0.1:" .. port
    assert.is_true(run_until(function() return c:get(key) ~= nil end))
    assert.equal("PYRO:ServiceName@127.0.0.1:" .. port, (c:get(key)))
    proc.kill(p, "sigterm")
    assert.equal(0, proc.wait_exit(p, 10))
    assert.is_nil(c:get(key)) -- long before its 60 s lease would expire
  end)

  it("an exporter whose etcd is unreachable fails at after_properties_set, naming the registry", function()
    local url = "etcd://127.0.0.1:" .. proc.free_port() .. "/services"
    local ex = springrun.PyroServiceExporter {
      service_name = "Unreachable", service = { get_data = function() end },
      service_host = "127.0.0.1", service_port = 0, registry = url, registry_ttl = 5 }
    local ok, err = pcall(ex.after_properties_set, ex)
    assert.is_false(ok)
    assert.matches("cannot register in " .. url, tostring(err), 1, true)
    assert.matches("connection refused", tostring(err), 1, true)
    assert.is_false(ex:is_exported())
    ex = springrun.PyroServiceExporter { service_name = "NoRegistry", service = { get_data = function() end },
      service_host = "127.0.0.1", service_port = 0, registry_ttl = 5 }
    ok, err = pcall(ex.after_properties_set, ex)
    assert.is_false(ok)
    assert.matches("registry_ttl is set but registry is not", tostring(err), 1, true)
    assert.is_false(ex:is_exported())
  end)
end)
