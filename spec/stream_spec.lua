-- Item streams (Pyro4's ITEMSTREAMRESULT, get_next_stream_item,
-- close_stream): a Lua method returning springrun.stream(iter), iterated by
-- a real Python Pyro4 client and by springrun proxies (same process and
-- another one); a Lua client iterating a Python generator; the limits
-- (streams per connection, lifetime, linger) with small values.
local springrun = require "springrun"
local json = require "springrun.json"
local proc = require "helpers.proc"
local pyro4 = require "helpers.pyro4"
local client = require "helpers.client"
local uv = require "luv"

local function url_of(name, port) return string.format("PYRO:%s@127.0.0.1:%d", name, port) end

-- A streaming service exported with props (limits); count(n) streams 1..n,
-- open_streams() says how many streams the exporter holds.
local function export(cleanup, props)
  local ex
  local svc = {}
  function svc.count(_, n)
    local i = 0
    return springrun.stream(function()
      i = i + 1
      if i <= n then return i end
    end)
  end
  function svc.letters(_, t) return springrun.stream(setmetatable({}, { __pairs = function() return ipairs(t) end })) end
  function svc.open_streams() return ex:stream_count() end
  props = props or {}
  props.service_name, props.service = "streamer", svc
  props.service_host, props.service_port = "127.0.0.1", 0
  ex = springrun.PyroServiceExporter(props)
  ex:after_properties_set()
  cleanup(function() ex:destroy() end)
  return ex, url_of("streamer", ex:bound_port())
end

local function py(scenario, ...)
  local argv = { proc.python, pyro4.fixtures .. "/features_client.py", scenario, ... }
  return json.decode(pyro4.run_python(argv, { PYRO_SERIALIZER = "json" }))
end

local function collect(it)
  local out = {}
  for item in it do out[#out + 1] = item end
  return out
end

local function wait_for(pred, seconds)
  local deadline = uv.hrtime() + (seconds or 5) * 1e9
  while not pred() and uv.hrtime() < deadline do proc.poll_step(20) end
  return pred()
end

describe("springrun item streams #interop", function()
  setup(function() pyro4.require_python() end)

  it("streams a Lua iterator to a Python Pyro4 client, and frees a stream it abandons", function()
    local cleanup = proc.cleanups(finally)
    local ex, url = export(cleanup)
    local r = py("stream", url)
    assert.are.same({ 1, 2, 3, 4, 5 }, r.full)
    assert.are.same({ 1, 2, 3 }, r.first)
    assert.are.equal(1, r.open_during)
    assert.are.equal(0, r.open_after_close)
    assert.are.equal(1, r.again)
    assert.are.equal(0, r.open_after_del)
    assert.are.same({}, r.empty)
    assert.are.equal(0, ex:stream_count())
  end)

  it("gives a springrun proxy an iterator, in a for loop, in this process and another one", function()
    local cleanup = proc.cleanups(finally)
    local ex, url = export(cleanup)
    local p = springrun.proxy(url, { timeout = 10 })
    cleanup(function() p:destroy() end)
    local ok, r = client.in_task(function()
      local out = { all = collect(p:count(4)), letters = collect(p:letters({ "a", "b" })) }
      for item in p:count(100) do if item == 2 then break end end -- closes it
      out.open = ex:stream_count()
      local it = p:count(3)
      out.first = it()
      out.during = ex:stream_count()
      it:close()
      out.after = ex:stream_count()
      return out
    end)
    assert(ok, tostring(r))
    assert.are.same({ 1, 2, 3, 4 }, r.all)
    assert.are.same({ "a", "b" }, r.letters)
    assert.are.same({ 0, 1, 1, 0 }, { r.open, r.first, r.during, r.after })
    -- another springrun process, blocking calls
    local port = proc.free_port()
    local sp = proc.spawn({ proc.bin, pyro4.fixtures .. "/features_server.lua", tostring(port) })
    cleanup(function() proc.stop(sp) end)
    pyro4.wait_output(sp, "SERVING", 15, "features_server.lua")
    local remote = springrun.proxy(url_of("streamer", port), { timeout = 10 })
    cleanup(function() remote:destroy() end)
    assert.are.same({ 1, 2, 3 }, collect(remote:count(3)))
    assert.are.same({}, collect(remote:count(0)))
  end)

  it("iterates a Python generator method from Lua and closes it when the loop is left early", function()
    local cleanup = proc.cleanups(finally)
    local p, port = client.start_python("features_service.py", { 0 })
    cleanup(function() proc.stop(p) end)
    local svc = springrun.proxy(url_of("features", port), { timeout = 10 })
    cleanup(function() svc:destroy() end)
    assert.are.same({ 1, 2, 3, 4, 5 }, collect(svc:count(5)))
    assert.are.equal(0, svc:streams())
    for item in svc:count(50) do if item == 3 then break end end
    assert.are.equal(0, svc:streams())
    local it = svc:count(50)
    assert.are.equal(1, it())
    assert.are.equal(1, svc:streams())
    it:close()
    assert.are.equal(0, svc:streams())
    local ok, r = client.in_task(function() return collect(svc:count(2)) end)
    assert(ok, tostring(r))
    assert.are.same({ 1, 2 }, r)
  end)

  it("refuses a stream past max_streams_per_connection, naming the limit, and serves on", function()
    local cleanup = proc.cleanups(finally)
    local ex, url = export(cleanup, { max_streams_per_connection = 2 })
    local r = py("stream_limit", url, "3")
    assert.are.same({ 1, 1, "PyroError: too many open item streams on this connection (max_streams_per_connection 2)", 1 }, r)
    assert.is_true(wait_for(function() return ex:stream_count() == 0 end) or ex:stream_count() <= 2)
  end)

  it("frees the streams of a closed connection at once with stream_linger = 0, after the linger otherwise", function()
    local cleanup = proc.cleanups(finally)
    local ex, url = export(cleanup, { stream_linger = 0 })
    assert.are.equal(1, py("stream_open", url))
    assert.is_true(wait_for(function() return ex:stream_count() == 0 end, 3))
    ex:destroy()
    local ex2, url2 = export(cleanup, { stream_linger = 0.6 })
    assert.are.equal(1, py("stream_open", url2))
    proc.poll_step(200)
    assert.are.equal(1, ex2:stream_count()) -- lingering
    assert.is_true(wait_for(function() return ex2:stream_count() == 0 end, 5))
  end)

  it("closes a stream left unused for stream_lifetime; asking it then says it terminated", function()
    local cleanup = proc.cleanups(finally)
    local ex, url = export(cleanup, { stream_lifetime = 0.3 })
    local p = springrun.proxy(url, { timeout = 10 })
    cleanup(function() p:destroy() end)
    local it = p:count(10)
    assert.are.equal(1, it())
    assert.are.equal(1, ex:stream_count())
    assert.is_true(wait_for(function() return ex:stream_count() == 0 end, 5))
    local ok, e = pcall(it)
    assert.is_false(ok)
    assert.are.equal("Pyro4.errors.PyroError", e.class)
    assert.matches("item stream terminated", tostring(e), 1, true)
  end)

  it("refuses bad stream limits and springrun.stream of a non-iterator", function()
    local ex = springrun.PyroServiceExporter { service_name = "x", service = { f = function() end },
      service_host = "127.0.0.1", service_port = 0, max_streams_per_connection = 0 }
    local ok, e = pcall(ex.after_properties_set, ex)
    assert.is_false(ok)
    assert.matches("max_streams_per_connection must be an integer >= 1, got 0", tostring(e), 1, true)
    ok, e = pcall(springrun.stream, 42)
    assert.is_false(ok)
    assert.matches("springrun.stream: expected an iterator function or a table with __call or __pairs, got number", e, 1, true)
  end)
end)

describe("README: Item streams", function()
  it("runs the example and prints what its comments say", function()
    local readme = require "helpers.readme"
    local st, out, err = readme.run_lua(readme.block("## Item streams (`springrun.stream`, Pyro4's iterator results)", "lua"))
    assert.are.equal(0, st, err)
    assert.are.equal("1 2 3 0\n", out)
  end)
end)
