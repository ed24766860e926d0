-- bench/sr_client.lua -- the springrun client side of the benchmark (one scenario
-- per run); same options and output as bench/pyro_client.py:
--   bin/springrun bench/sr_client.lua --uri PYRO:bench@127.0.0.1:P --scenario S
--       [--n N] [--size BYTES] [--warm N] [--pid SERVERPID] [--serializer NAME]
-- Scenarios: seq, oneway, echo, table, connect, timed (prints READY once
-- connected, reads "START_EPOCH DURATION" on stdin, prints latency samples),
-- async_one / async_many (rounds of 100 concurrent calls through one proxy
-- or through 100 proxies; springrun's client only).
local springrun = require "springrun"
local uv = require "luv"

local opts = { n = 10000, size = 1024, warm = 200, pid = 0, serializer = "json" }
do
  local i = 1
  while arg[i] do
    local k, v = arg[i]:match("^%-%-(.+)$"), arg[i + 1]
    if not k or v == nil then error("sr_client.lua: bad argument " .. tostring(arg[i])) end
    opts[k] = tonumber(v) or v
    i = i + 2
  end
end
if not opts.scenario then error("sr_client.lua: --scenario is required") end

local CLK = 100 -- sysconf(_SC_CLK_TCK) on Linux
local CONNECT_WARM = 50 -- connect: warm-up connections (as in bench/pyro_client.py, floor.c)

local function proc_cpu(pid)
  if not pid or pid == 0 then return nil end
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local rest = s:match("%)%s(.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  -- rest starts at field 3 (state): utime is field 14 -> index 12
  return (tonumber(fields[12]) + tonumber(fields[13])) / CLK
end

local function now() return uv.hrtime() * 1e-9 end

local function json_number(x)
  if x == math.floor(x) and math.abs(x) < 1e15 then return string.format("%d", x) end
  return string.format("%.6f", x)
end

local function result(scenario, calls, secs, lat, cpu0, cpu1, nbytes)
  local parts = {
    string.format('"scenario":"%s"', scenario),
    '"calls":' .. json_number(calls),
    '"secs":' .. json_number(secs),
    '"rate":' .. json_number(secs > 0 and calls / secs or 0),
  }
  if lat and #lat > 0 then
    table.sort(lat)
    local function pct(p) return lat[math.floor(p * (#lat - 1) + 0.5) + 1] * 1e6 end
    parts[#parts + 1] = '"p50_us":' .. json_number(pct(0.5))
    parts[#parts + 1] = '"p99_us":' .. json_number(pct(0.99))
  end
  if cpu0 and cpu1 then parts[#parts + 1] = '"server_cpu_s":' .. json_number(cpu1 - cpu0) end
  if nbytes and nbytes > 0 then parts[#parts + 1] = '"bytes":' .. json_number(nbytes) end
  io.stdout:write("{", table.concat(parts, ","), "}\n")
  io.stdout:flush()
end

local function array(t)
  local json = springrun.json
  if json and json.array then return json.array(t) end
  return t
end

-- The same structure as nested_table() in bench/pyro_client.py: 100 records of
-- 11 values each (1,100 elements).
local function nested_table()
  local list = {}
  for i = 0, 99 do
    list[#list + 1] = {
      id = i, name = "item-" .. i, score = i * 0.5 + 0.25, ok = i % 2 == 0,
      tags = array { "red", "green", "blue" }, pos = { x = i, y = -i },
    }
  end
  return array(list)
end

local function release(p)
  p:destroy()
end

local function loop_calls(fn, arg1, n, scenario, nbytes_per_call)
  local lat = {}
  local cpu0 = proc_cpu(opts.pid)
  local t0 = now()
  for i = 1, n do
    local a = now()
    fn(arg1)
    lat[i] = now() - a
  end
  local t1 = now()
  result(scenario, n, t1 - t0, lat, cpu0, proc_cpu(opts.pid), (nbytes_per_call or 0) * n)
end

local function new_proxy()
  return springrun.proxy(opts.uri, { serializer = opts.serializer })
end

local sc = opts.scenario
if sc == "connect" then
  for _ = 1, math.min(opts.warm, CONNECT_WARM) do
    local p = new_proxy()
    p:get_data("Hello")
    release(p)
  end
  local lat = {}
  local cpu0 = proc_cpu(opts.pid)
  local t0 = now()
  for i = 1, opts.n do
    local a = now()
    local p = new_proxy()
    p:get_data("Hello")
    release(p)
    lat[i] = now() - a
  end
  result("connect", opts.n, now() - t0, lat, cpu0, proc_cpu(opts.pid))
  return
end

if sc == "async_one" or sc == "async_many" then
  -- rounds of 100 concurrent calls (futures, springrun.gather) through one
  -- shared proxy (its default max_connections) or through 100 proxies, one
  -- each; latency: from a call's start to its future's end
  local width = 100
  local proxies = {}
  for i = 1, width do proxies[i] = (sc == "async_one" and i > 1) and proxies[1] or new_proxy() end
  local lat = {}
  local function round(record)
    local futures, started = {}, now()
    for i = 1, width do
      local f = proxies[i]:async("get_data", "Hello")
      if record then f:on_done(function() lat[#lat + 1] = now() - started end) end
      futures[i] = f
    end
    springrun.gather(futures)
  end
  for _ = 1, math.max(1, math.min(opts.warm, opts.n) // width) do round(false) end
  local rounds = math.max(1, opts.n // width)
  local cpu0 = proc_cpu(opts.pid)
  local t0 = now()
  for _ = 1, rounds do round(true) end
  result(sc, rounds * width, now() - t0, lat, cpu0, proc_cpu(opts.pid))
  for i = 1, width do proxies[i]:destroy() end
  return
end

local p = new_proxy()
if sc == "pool_seq" then
  -- the same sequential calls through a pool of one member (springrun.pool)
  p:destroy()
  p = springrun.pool { urls = { opts.uri }, serializer = opts.serializer }
end
for _ = 1, math.min(opts.warm, opts.n) do p:get_data("Hello") end

if sc == "seq" or sc == "pool_seq" then
  loop_calls(function(x) return p:get_data(x) end, "Hello", opts.n, sc)
elseif sc == "oneway" then
  local cpu0 = proc_cpu(opts.pid)
  local t0 = now()
  for _ = 1, opts.n do p:ping() end
  p:get_data("Hello")
  result("oneway", opts.n, now() - t0, nil, cpu0, proc_cpu(opts.pid))
elseif sc == "echo" then
  local s = string.rep("x", opts.size)
  assert(#p:echo(s) == opts.size, "echo returned a different string")
  loop_calls(function(x) return p:echo(x) end, s, opts.n, "echo", 2 * opts.size)
elseif sc == "table" then
  local t = nested_table()
  local back = p:echo(t)
  assert(#back == 100 and back[100].name == "item-99" and back[100].pos.y == -99,
    "echo returned a different table")
  loop_calls(function(x) return p:echo(x) end, t, opts.n, "table")
elseif sc == "timed" then
  io.stdout:write("READY\n")
  io.stdout:flush()
  local start, dur = io.read("n", "n")
  local sec, usec = uv.gettimeofday()
  local wall = sec + usec * 1e-6
  if start > wall then uv.sleep(math.floor((start - wall) * 1000)) end
  local lat, calls = {}, 0
  local t0 = now()
  local stop = t0 + dur
  while calls < 100000000 do
    local a = now()
    if a >= stop then break end
    p:get_data("Hello")
    calls = calls + 1
    lat[calls] = now() - a
  end
  local secs = now() - t0
  local step = math.max(1, #lat // 2000)
  local samples = {}
  for i = 1, #lat, step do
    if #samples >= 2000 then break end
    samples[#samples + 1] = string.format("%.2f", lat[i] * 1e6)
  end
  io.stdout:write('{"lat_us":[', table.concat(samples, ","), "]}\n")
  result("timed", calls, secs, lat)
else
  error("sr_client.lua: unknown scenario " .. sc)
end
release(p)
