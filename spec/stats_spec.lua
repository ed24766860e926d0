-- Server-side call statistics per exported object: counted in the one
-- dispatch path (calls, errors, in flight, latency percentiles), read from
-- Lua (exporter:stats(), springrun.stats()) and over the wire by
-- `springrun inspect --stats` (Pyro.Daemon.get_stats), which passes the
-- daemon's handshake check like any call and honours remote_stats = false.
local springrun = require "springrun"
local core = require "springrun.core"
local runtime = require "springrun.runtime"
local json = require "springrun.json"
local log = require "springrun.log"
local uv = require "luv"
local task = require "helpers.task"
local wc = require "helpers.wireclient"
local proc = require "helpers.proc"
local pyro4 = require "helpers.pyro4"

local HOST = "127.0.0.1"

local held = {} -- tasks suspended in Service:hold, resumed by the spec

local Service = {}
Service.__index = Service
function Service.new() return setmetatable({}, Service) end
function Service:echo(v) return v end
function Service:fail(msg) error(msg, 0) end
function Service:sleep(ms)
  task.sleep(ms)
  return ms
end
function Service:hold()
  held[#held + 1] = runtime.current()
  coroutine.yield()
  return "released"
end

local function export(props)
  props.service = props.service or Service.new()
  props.service_host, props.service_port = HOST, props.service_port or 0
  local e = springrun.PyroServiceExporter(props)
  e:after_properties_set()
  return e
end

-- Turns the loop until pred() is true (10 s at most).
local function run_until(pred, what)
  local deadline = uv.hrtime() + 10e9
  while not pred() do
    assert(uv.hrtime() < deadline, "timed out waiting for " .. what)
    uv.run("once")
  end
end

-- Runs fn(proxy of url) in a task (a proxy call there yields to the loop, so
-- this process's own exporter answers it) and waits for it to finish.
local function in_task(url, fn)
  local done, err = false, nil
  runtime.spawn(function()
    local ok, e = pcall(function()
      local p = springrun.proxy(url, { timeout = 10 })
      fn(p)
      p:_pyro_release()
    end)
    done, err = true, (not ok) and e or nil
  end)
  run_until(function() return done end, "the task")
  assert(err == nil, tostring(err))
end

local function url_of(e) return string.format("PYRO:%s@%s:%d", e.service_name, HOST, e:bound_port()) end

-- INVOKEs method on e's object over a raw connection (no client-side
-- metadata check); returns the decoded result.
local function raw_call(e, method, params_json)
  local c = assert(wc.connect(HOST, e:bound_port()))
  c:send(core.wire_encode(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, core.SER_JSON,
    string.format('{"handshake": "hello", "object": "%s"}', e.service_name)))
  assert.are.equal(core.MSG_CONNECTOK, assert(c:recv()).type)
  c:send(core.wire_encode(core.MSG_INVOKE, 0, 1, core.SER_JSON, wc.invoke_json(e.service_name, method, params_json)))
  local m = assert(c:recv())
  c:close()
  return json.decode(m.data)
end

local function quiet(fn)
  local prev = log.set_output(function() end)
  local ok, err = pcall(fn)
  log.set_output(prev)
  assert(ok, err)
end

describe("call statistics in Lua #unit #net", function()
  it("count calls, errors (raised and refused) and batch items per object", function()
    local e = export({ service_name = "Counted" })
    local other = export({ service_name = "Other", service_port = e:bound_port() })
    finally(function() e:destroy() other:destroy() end)
    local st = e:stats()
    assert.are.same({ calls = 0, errors = 0, in_flight = 0 },
      { calls = st.calls, errors = st.errors, in_flight = st.in_flight })
    assert.are.same({ p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0, mean = 0 }, st.latency)
    quiet(function()
      in_task(url_of(e), function(p)
        for i = 1, 7 do assert.are.equal(i, p:echo(i)) end
        for _ = 1, 2 do assert.has_error(function() p:fail("boom") end) end
      end)
      in_task(url_of(other), function(p) p:echo(1) end)
      -- refused: a name not exposed, arguments that are not a list
      assert.are.equal("builtins.AttributeError", raw_call(e, "_private").__class__)
      assert.are.equal("builtins.TypeError", raw_call(e, "echo", '{"a": 1}').__class__)
      -- a batch counts each of its calls (the third raises)
      local r = raw_call(e, "<batch>", '[["echo", [1], {}], ["echo", [2], {}], ["fail", ["x"], {}]]')
      assert.are.equal(3, #r)
    end)
    st = e:stats()
    assert.are.same({ calls = 7 + 2 + 2 + 3, errors = 2 + 2 + 1, in_flight = 0 },
      { calls = st.calls, errors = st.errors, in_flight = st.in_flight })
    assert.are.equal(1, other:stats().calls)
    assert.are.equal(0, other:stats().errors)
    -- springrun.stats(): every object of the process, by URL
    local all = springrun.stats()
    assert.are.equal(st.calls, all[url_of(e)].calls)
    assert.are.equal(1, all[url_of(other)].calls)
  end)

  it("count a call in flight while its method waits, until it returns", function()
    local e = export({ service_name = "Held" })
    finally(function() e:destroy() end)
    held = {}
    local result
    runtime.spawn(function() result = springrun.proxy(url_of(e)):hold() end)
    run_until(function() return #held == 1 end, "the call to start")
    local st = e:stats()
    assert.are.same({ 0, 1 }, { st.calls, st.in_flight })
    runtime.resume(held[1])
    run_until(function() return result ~= nil end, "the reply")
    assert.are.equal("released", result)
    st = e:stats()
    assert.are.same({ 1, 0, 0 }, { st.calls, st.in_flight, st.errors })
  end)

  it("latency percentiles come from the calls' durations, never below them", function()
    local e = export({ service_name = "Timed" })
    finally(function() e:destroy() end)
    local t0 = uv.hrtime()
    local slow_took
    in_task(url_of(e), function(p)
      for i = 1, 9 do p:echo(i) end
      local s = uv.hrtime()
      p:sleep(200)
      slow_took = (uv.hrtime() - s) / 1e9
    end)
    local all_took = (uv.hrtime() - t0) / 1e9
    local lat = e:stats().latency
    -- ten calls: ranks 5 and 9 are quick ones, 10 (p99, p99.9) the slow one
    assert.is_true(lat.max >= 0.2, tostring(lat.max))
    assert.is_true(lat.max <= slow_took, tostring(lat.max)) -- measured inside the caller's time
    assert.are.equal(lat.max, lat.p99)
    assert.are.equal(lat.max, lat.p999)
    assert.is_true(lat.p50 <= lat.p90 and lat.p90 < 0.2, tostring(lat.p90))
    assert.is_true(lat.p50 > 0)
    assert.is_true(lat.mean >= 0.02 and lat.mean <= all_took / 10, tostring(lat.mean))
  end)

  it("an exporter on several ports reports its copies as one", function()
    local p1, p2 = proc.free_port(), proc.free_port()
    local e = export({ service_name = "Copies", service_port = { p1, p2 } })
    finally(function() e:destroy() end)
    in_task(string.format("PYRO:Copies@%s:%d", HOST, p1), function(p) p:echo(1) p:echo(2) end)
    in_task(string.format("PYRO:Copies@%s:%d", HOST, p2), function(p) p:echo(3) end)
    assert.are.equal(3, e:stats().calls)
    local all = springrun.stats()
    assert.are.equal(2, all[string.format("PYRO:Copies@%s:%d", HOST, p1)].calls)
    assert.are.equal(1, all[string.format("PYRO:Copies@%s:%d", HOST, p2)].calls)
  end)

  it("is nil while not exported, and remote_stats must be a boolean", function()
    local e = springrun.PyroServiceExporter { service_name = "N", service = Service.new() }
    assert.is_nil(e:stats())
    assert.has_error(function() export({ service_name = "Bad", remote_stats = "no" }) end,
      "PyroServiceExporter 'Bad': remote_stats must be true or false, got no")
  end)
end)

describe("the README's call statistics #net", function()
  it("runs as shown", function()
    local st, out, err = require("helpers.readme").run_lua(
      require("helpers.readme").block("## Call statistics", "lua"))
    assert.are.equal(0, st, err)
    assert.are.equal("101\t1\t0\ntrue\n", out)
  end)
end)

-- Runs `springrun ARGS...`; returns exit status, stdout, stderr.
local function sr(env, ...)
  local p = proc.spawn({ proc.bin, ... }, { env = env })
  local st = proc.wait_exit(p, 30)
  if not st then
    proc.stop(p)
    error("springrun " .. table.concat({ ... }, " ") .. " did not finish")
  end
  return st, p:stdout(), p:stderr()
end

local function start_server(cleanup, env)
  local p = proc.spawn({ proc.bin, pyro4.fixtures .. "/stats_server.lua" }, { env = env })
  cleanup(function() proc.stop(p) end)
  local port = tonumber(pyro4.wait_output(p, "PORT (%d+)\n", 15, "stats_server.lua"))
  return port
end

describe("springrun inspect --stats #net", function()
  it("prints the server's counters and latency percentiles of the object", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local url = string.format("PYRO:stats.Service@%s:%d", HOST, port)
    for i = 1, 3 do assert.are.equal(0, (sr(nil, "call", url, "get_data", tostring(i)))) end
    assert.are.equal(1, (sr(nil, "call", url, "fail", "boom")))
    assert.are.equal(0, (sr(nil, "call", url, "slow", "50")))
    local st, out, err = sr(nil, "inspect", "--stats", url)
    assert.are.equal(0, st, err)
    assert.truthy(out:find("^" .. url:gsub("%p", "%%%0") .. "\nmethods: fail, get_data, slow\n"), out)
    assert.truthy(out:find("\ncalls: 5 %(errors: 1, in flight: 0%)\n"), out)
    -- five calls: p90 and above are the 50 ms one
    local max = out:match("\nlatency: p50 [%d.]+ [mu]?s, p90 [%d.]+ [mu]?s, p99 [%d.]+ [mu]?s, "
      .. "p99%.9 [%d.]+ [mu]?s, max ([%d.]+ m?s), mean [%d.]+ [mu]?s\n$")
    assert.truthy(max, out)
    local v, unit = max:match("([%d.]+) (m?s)")
    assert.is_true(tonumber(v) * (unit == "ms" and 1e-3 or 1) >= 0.05, max)
    -- without --stats: no statistics
    st, out = sr(nil, "inspect", url)
    assert.are.equal(0, st)
    assert.is_nil(out:find("calls:", 1, true))
  end)

  it("needs the daemon's handshake secret, as any call does", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup, { SR_SECRET = "s3cret" })
    local url = string.format("PYRO:stats.Service@%s:%d", HOST, port)
    assert.are.equal(0, (sr(nil, "call", "--handshake", "s3cret", url, "get_data", "x")))
    local st, out, err = sr(nil, "inspect", "--stats", url)
    assert.are.equal(3, st)
    assert.are.equal("", out)
    assert.truthy(err:find("authentication failed", 1, true), err)
    -- the daemon object itself is behind the same check
    st, out, err = sr(nil, "call", string.format("PYRO:Pyro.Daemon@%s:%d", HOST, port), "get_stats", "stats.Service")
    assert.are.equal(3, st)
    assert.are.equal("", out)
    st, out, err = sr(nil, "inspect", "--stats", "--handshake", "s3cret", url)
    assert.are.equal(0, st, err)
    assert.truthy(out:find("\ncalls: 1 %(errors: 0, in flight: 0%)\n"), out)
  end)

  it("refuses an object exported with remote_stats = false, and says so", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local url = string.format("PYRO:stats.Quiet@%s:%d", HOST, port)
    assert.are.equal(0, (sr(nil, "call", url, "get_data", "x")))
    local st, out, err = sr(nil, "inspect", "--stats", url)
    assert.are.equal(1, st)
    assert.are.equal("", out)
    assert.are.equal("springrun inspect: Pyro4.errors.SecurityError: the statistics of 'stats.Quiet' are not"
      .. " exposed (remote_stats = false)\n", err)
    -- the same through the daemon object directly (a Python client would get it too)
    st, out, err = sr(nil, "call", string.format("PYRO:Pyro.Daemon@%s:%d", HOST, port), "get_stats", "stats.Quiet")
    assert.are.equal(1, st)
    assert.truthy(err:find("SecurityError", 1, true), err)
    -- its neighbour on the same daemon still reports
    st, out = sr(nil, "call", string.format("PYRO:Pyro.Daemon@%s:%d", HOST, port), "get_stats", "stats.Service")
    assert.are.equal(0, st)
    assert.are.equal(0, json.decode(out).calls)
  end)

  it("resolves a PYRONAME URL once, for the object and its daemon", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local ns, nsport = pyro4.start_springrun_ns()
    cleanup(function() proc.stop(ns) end)
    require("springrun.naming").register("stats.Named", string.format("PYRO:stats.Service@%s:%d", HOST, port),
      { ns_host = HOST, ns_port = nsport })
    assert.are.equal(1, (sr(nil, "call", string.format("PYRO:stats.Service@%s:%d", HOST, port), "fail", "x")))
    local url = string.format("PYRONAME:stats.Named@%s:%d", HOST, nsport)
    local st, out, err = sr(nil, "inspect", "--stats", url)
    assert.are.equal(0, st, err)
    assert.truthy(out:find("^" .. url:gsub("%p", "%%%0") .. "\nmethods: fail, get_data, slow\n"), out)
    assert.truthy(out:find("\ncalls: 1 %(errors: 1, in flight: 0%)\n"), out)
  end)

  it("says when the daemon is not springrun's (Python Pyro4)", function()
    local cleanup = proc.cleanups(finally)
    local _, port = proc.stop_at(cleanup, pyro4.start_py_service("ServiceName"))
    local url = string.format("PYRO:ServiceName@%s:%d", HOST, port)
    local st, out, err = sr(nil, "inspect", "--stats", url)
    assert.are.equal(1, st)
    assert.are.equal("", out)
    assert.are.equal("springrun inspect: builtins.AttributeError: the daemon at " .. url
      .. " does not report call statistics (its Pyro.Daemon has no get_stats: not a springrun daemon?)\n", err)
  end)
end)
