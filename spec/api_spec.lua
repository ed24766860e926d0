-- The public API is discoverable: pairs(springrun) lists all of it,
-- springrun.proxy is callable and carries stats(), and a proxy answers to
-- Pyro4's names (_pyroBind, _pyroRelease, _pyroTimeout, ...) as well.
local springrun = require "springrun"
local pyro4 = require "helpers.pyro4"
local proc = require "helpers.proc"

describe("springrun's public API #unit #net", function()
  it("pairs(springrun) lists every public name, loaded", function()
    local names = {}
    for k, v in pairs(springrun) do
      assert.is_not_nil(v, k)
      names[#names + 1] = k
    end
    assert.are.same({
      "ApplicationContext", "HessianProxyFactory", "HessianServiceExporter", "PoolProxyFactory",
      "PyroProxyFactory", "PyroServiceExporter", "async", "callback", "context", "context_from_xml",
      "current_context", "errors", "etcd", "first", "gather", "hessian", "hessian_proxy", "http",
      "json", "kwargs", "load_context", "log", "naming", "null", "object", "pool", "proxy", "ref",
      "register", "run", "runtime", "serpent", "set_correlation_id", "sleep", "spawn", "stats", "stop",
      "stream", "unregister", "version" }, names)
  end)

  -- The LuaLS annotations (---@class blocks of springrun/init.lua), read as
  -- an editor reads them: class name -> { field -> type text }.
  local function annotations()
    local path = assert(package.searchpath("springrun", package.path))
    local classes, current = {}, nil
    for line in io.lines(path) do
      local cls = line:match("^%-%-%-@class ([%w_.]+)")
      if cls then
        current = {}
        classes[cls] = current
      elseif current then
        local f, ty = line:match("^%-%-%-@field ([%w_]+) (%S+)")
        if f then current[f] = ty end
      end
    end
    return classes
  end

  it("the LuaLS annotations name exactly what pairs(springrun) lists", function()
    local ann = annotations()
    local annotated, listed = {}, {}
    for f in pairs(ann.springrun) do annotated[#annotated + 1] = f end
    for k in pairs(springrun) do listed[#listed + 1] = k end
    table.sort(annotated)
    table.sort(listed)
    assert.are.same(listed, annotated)
  end)

  it("the exporter's annotated fields are its properties and methods", function()
    local fields = annotations()["springrun.PyroServiceExporter"]
    local e = springrun.PyroServiceExporter {}
    local n = 0
    for f, ty in pairs(fields) do
      n = n + 1
      if ty:match("^fun%(") then
        assert.are.equal("function", type(e[f]), f)
      else
        -- an unknown property raises on assignment, naming the closest one
        e[f] = nil
      end
    end
    assert.is_true(n > 30)
    assert.has_error(function() e.servce = 1 end)
  end)

  it("a proxy has the helpers its annotations list", function()
    local p = springrun.proxy("PYRO:x@127.0.0.1:1")
    assert.is_nil(p._no_such_helper) -- "_" names are the proxy's own, never remote
    local n = 0
    for f, ty in pairs(annotations()["springrun.Proxy"]) do
      if ty:match("^fun%(") then
        n = n + 1
        assert.are.equal("function", type(p[f]), f)
      end
    end
    assert.is_true(n >= 8)
  end)

  it("springrun.proxy is the constructor and has stats()", function()
    assert.are.same({ "connections", "fast", "pipelined" }, (function()
      local ks = {}
      for k in pairs(springrun.proxy.stats()) do ks[#ks + 1] = k end
      table.sort(ks)
      return ks
    end)())
    local p = springrun.proxy("PYRO:x@127.0.0.1:1", { timeout = 2 })
    assert.is_true(springrun.proxy.is_proxy(p))
  end)

  it("a proxy answers to Pyro4's names next to the Lua ones, against a Python daemon", function()
    local cleanup = proc.cleanups(finally)
    local _, port = proc.stop_at(cleanup, pyro4.start_py_service("ServiceName"))
    local before = springrun.proxy.stats().connections
    local p = springrun.proxy(string.format("PYRO:ServiceName@127.0.0.1:%d", port))
    assert.are.same({}, p._pyroMethods)
    p._pyroTimeout = 5
    assert.are.equal(5, p.timeout)
    assert.are.equal(5, p._pyroTimeout)
    assert.are.equal("json", p._pyroSerializer)
    assert.are.equal(string.format("PYRO:ServiceName@127.0.0.1:%d", port), p._pyroUri)
    assert.is_true(p:_pyroBind())
    assert.are.equal(before + 1, springrun.proxy.stats().connections)
    assert.is_true(p._pyroMethods.get_data)
    assert.is_true(p._pyroOneway.log_event)
    assert.are.equal("You got remote data => x", p:get_data("x"))
    local seq = p._pyroSeq
    assert.are.equal(p._pyro_seq, seq)
    p:_pyroRelease()
    assert.are.equal("You got remote data => y", p:get_data("y"))
    assert.are.equal(before + 2, springrun.proxy.stats().connections)
    p:_pyroReconnect()
    assert.are.equal(before + 3, springrun.proxy.stats().connections)
    p:_pyroRelease()
  end)
end)
