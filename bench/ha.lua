-- bench/ha.lua -- the pool figures of issue 15, run by bench/run.py (part "ha"):
--   bin/springrun bench/ha.lua [--quick]
-- Starts its own servers (bench/sr_server.lua, each its own process) and, for
-- the etcd rows, an etcd (/usr/bin/etcd, or SPRINGRUN_ETCD) on free loopback
-- ports with a temporary data directory; stops every process by pid.
-- Prints one JSON object per line:
--   {"row":"conc","members":3|1,"rate":calls/s,...}   32 task callers, one pool
--   {"row":"kill","probe":"...","lost":n,"calls":n,"stall_ms":..,"rejoin_ms":..,
--    "rejoin_max_ms":..,"runs":n}       kill -9 of one of three members, 8 callers
--   {"row":"etcd","reg_to_call_ms":..,"kill_to_removal_ms":..,"ttl":s}
--   {"row":..., "error":"..."}                     when a part could not run
local springrun = require "springrun"
local json = require "springrun.json"
local runtime = require "springrun.runtime"
local uv = require "luv"

local quick = arg[1] == "--quick"
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local SR = here .. "/../bin/springrun"
local SERVER = here .. "/sr_server.lua"
local ETCD = os.getenv("SPRINGRUN_ETCD") or "/usr/bin/etcd"

local CONC_DUR = quick and 1.0 or 3.0
local CONC_REPS = quick and 1 or 3
local ETCD_REPS = quick and 2 or 5
local KILL_REPS = quick and 1 or 3

local function now() return uv.hrtime() / 1e9 end
local function wall()
  local sec, usec = uv.gettimeofday()
  return sec + usec * 1e-6
end

local function emit(fields)
  local parts = {}
  for k, v in pairs(fields) do
    local val
    if type(v) == "number" then
      val = math.type(v) == "integer" and tostring(v) or string.format("%.3f", v)
    else
      val = json.encode(tostring(v))
    end
    parts[#parts + 1] = string.format("%q:%s", k, val)
  end
  table.sort(parts)
  io.stdout:write("{", table.concat(parts, ","), "}\n")
  io.stdout:flush()
end

-- Turns the loop until pred() or `seconds`; returns pred().
local function run_until(pred, seconds)
  local deadline = now() + seconds
  local t = uv.new_timer()
  t:start(1, 1, function() end)
  while not pred() and now() < deadline do uv.run("once") end
  t:stop()
  t:close()
  return pred()
end

local function sleep(seconds) run_until(function() return false end, seconds) end

local function free_port()
  local s = uv.new_tcp()
  s:bind("127.0.0.1", 0)
  local port = s:getsockname().port
  s:close()
  return port
end

local ENV = {}
for k, v in pairs(uv.os_environ()) do ENV[#ENV + 1] = k .. "=" .. v end

local procs = {}

-- Starts argv with extra environment; collects its stdout lines in p.lines.
local function spawn(argv, env)
  local e = { table.unpack(ENV) }
  for k, v in pairs(env or {}) do e[#e + 1] = k .. "=" .. v end
  local out = uv.new_pipe()
  local p = { lines = {}, alive = true }
  local buf = ""
  local args = { table.unpack(argv, 2) }
  local handle, pid
  handle, pid = uv.spawn(argv[1], { args = args, env = e, stdio = { 0, out, 2 } }, function()
    p.alive = false
    handle:close()
  end)
  if not handle then error("cannot start " .. argv[1] .. ": " .. tostring(pid)) end
  p.handle, p.pid = handle, pid
  out:read_start(function(_, data)
    if not data then
      out:close()
      return
    end
    buf = buf .. data
    for line in buf:gmatch("([^\n]*)\n") do p.lines[#p.lines + 1] = line end
    buf = buf:match("[^\n]*$")
  end)
  procs[#procs + 1] = p
  return p
end

local function line_of(p, prefix, seconds)
  local found
  run_until(function()
    for _, l in ipairs(p.lines) do
      if l:sub(1, #prefix) == prefix then
        found = l
        return true
      end
    end
    return not p.alive
  end, seconds or 20)
  return found
end

local function stop(p, sig)
  if p.alive then uv.kill(p.pid, sig or "sigterm") end
  run_until(function() return not p.alive end, 10)
  if p.alive then
    uv.kill(p.pid, "sigkill")
    run_until(function() return not p.alive end, 5)
  end
end

local function server(port, env)
  local p = spawn({ SR, SERVER, tostring(port or 0) }, env)
  local l = line_of(p, "PORT ")
  if not l then error("bench/sr_server.lua did not start") end
  p.port = tonumber(l:match("^PORT (%d+)"))
  p.url = string.format("PYRO:bench@127.0.0.1:%d", p.port)
  local r = line_of(p, "REGISTERED ", 0)
  p.registered = r and tonumber(r:match("^REGISTERED (%S+)"))
  return p
end

local function median(list)
  table.sort(list)
  local n = #list
  if n == 0 then return nil end
  if n % 2 == 1 then return list[(n + 1) // 2] end
  return (list[n // 2] + list[n // 2 + 1]) / 2
end

local function member(pool, url)
  for _, m in ipairs(pool:members()) do
    if m.url == url then return m end
  end
end

-- n task callers calling get_data through pool until stop() says so; returns
-- a state table: calls, lost (errors), stall (longest call, s), running.
local function callers(pool, n, stop_fn)
  local st = { calls = 0, lost = 0, stall = 0, running = n, errors = {} }
  for i = 1, n do
    runtime.spawn(function()
      while not stop_fn() do
        local t0 = now()
        local ok, e = pcall(pool.get_data, pool, i)
        local d = now() - t0
        if d > st.stall then st.stall = d end
        if ok then
          st.calls = st.calls + 1
        else
          st.lost = st.lost + 1
          if #st.errors < 3 then st.errors[#st.errors + 1] = tostring(e) end
        end
      end
      st.running = st.running - 1
    end)
  end
  return st
end

-- ---- 32 concurrent task callers: a pool of three vs one server ------------------

local function conc(servers, members)
  local urls = {}
  for i = 1, members do urls[i] = servers[i].url end
  local pool = springrun.pool { urls = urls, idempotent = { "get_data" } }
  -- warm up: every caller's connection made
  local stop_at = now() + 0.3
  local st = callers(pool, 32, function() return now() >= stop_at end)
  run_until(function() return st.running == 0 end, 30)
  stop_at = now() + CONC_DUR
  local t0 = now()
  st = callers(pool, 32, function() return now() >= stop_at end)
  run_until(function() return st.running == 0 end, CONC_DUR + 30)
  local secs = now() - t0
  pool:close()
  return st.calls / secs, st.lost
end

local function part_conc()
  local servers = { server(), server(), server() }
  local rates = { [1] = {}, [3] = {} }
  for _ = 1, CONC_REPS do
    for _, m in ipairs({ 3, 1 }) do
      local rate, lost = conc(servers, m)
      if lost > 0 then error(string.format("%d calls failed with %d members", lost, m)) end
      rates[m][#rates[m] + 1] = rate
    end
  end
  for _, s in ipairs(servers) do stop(s) end
  for _, m in ipairs({ 3, 1 }) do
    emit { row = "conc", members = m, callers = 32, rate = median(rates[m]), runs = #rates[m],
      min = math.min(table.unpack(rates[m])), max = math.max(table.unpack(rates[m])) }
  end
end

-- ---- kill -9 of one member during calls -------------------------------------------

local function kill_once(props)
  local servers = { server(), server(), server() }
  props.urls = { servers[1].url, servers[2].url, servers[3].url }
  props.idempotent = { "get_data" }
  props.timeout = 5
  local pool = springrun.pool(props)
  local done = false
  local st = callers(pool, 8, function() return done end)
  sleep(1)
  local victim = servers[2]
  local calls_before = st.calls
  uv.kill(victim.pid, "sigkill")
  run_until(function() return not victim.alive end, 10)
  sleep(1)
  local port = victim.port
  local restarted = server(port)
  servers[2] = restarted
  local t_ready = now()
  local served0 = member(pool, victim.url).served
  local rejoined
  run_until(function()
    local m = member(pool, victim.url)
    if m.served > served0 then rejoined = now() end
    return rejoined ~= nil
  end, 60)
  sleep(0.3)
  done = true
  run_until(function() return st.running == 0 end, 30)
  pool:close()
  for _, s in ipairs(servers) do stop(s) end
  if not rejoined then error("the restarted member got no call in 60 s") end
  return st, calls_before, rejoined - t_ready
end

-- KILL_REPS runs of kill_once; the figures: calls and calls lost summed,
-- the longest stall of all runs, the median (and longest) time to rejoin.
local function part_kill(label, props)
  local calls, lost, stall, rejoin, first_error = 0, 0, 0, {}, nil
  for _ = 1, KILL_REPS do
    local p = {}
    for k, v in pairs(props) do p[k] = v end
    local st, _, r = kill_once(p)
    calls, lost = calls + st.calls, lost + st.lost
    if st.stall > stall then stall = st.stall end
    rejoin[#rejoin + 1] = r * 1000
    first_error = first_error or st.errors[1]
  end
  emit { row = "kill", probe = label, callers = 8, runs = KILL_REPS, calls = calls, lost = lost,
    stall_ms = stall * 1000, rejoin_max_ms = math.max(table.unpack(rejoin)), rejoin_ms = median(rejoin),
    error = first_error }
end

-- ---- etcd: registration to first call, kill -9 to removal ------------------------

local function part_etcd()
  local f = io.open(ETCD)
  if not f then
    emit { row = "etcd", error = "no etcd at " .. ETCD .. " (Debian: etcd-server)" }
    return
  end
  f:close()
  local cport, pport = free_port(), free_port()
  local dir = os.tmpname()
  os.remove(dir)
  local curl, purl = "http://127.0.0.1:" .. cport, "http://127.0.0.1:" .. pport
  local etcd = spawn({ ETCD, "--name", "bench", "--data-dir", dir, "--listen-client-urls", curl,
    "--advertise-client-urls", curl, "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
    "--initial-cluster", "bench=" .. purl, "--log-level", "error" })
  local ok, err = pcall(function()
    local client = require("springrun.etcd").client(curl, { timeout = 2 })
    local up = run_until(function() return (pcall(client.get, client, "/x")) end, 30)
    if not up then error("etcd did not answer at " .. curl) end
    local reg = "etcd://127.0.0.1:" .. cport .. "/services"
    local ttl = 2
    local env = { SR_REGISTRY = reg, SR_REGISTRY_TTL = tostring(ttl) }
    local first = server(nil, env)
    local pool = springrun.pool { registry = reg, service_name = "bench", idempotent = { "get_data" },
      timeout = 5 }
    local done = false
    local st = callers(pool, 4, function() return done end)
    local reg_ms, rm_ms = {}, {}
    for _ = 1, ETCD_REPS do
      local s = server(nil, env)
      local t_first
      run_until(function()
        local m = member(pool, s.url)
        if m and m.served > 0 then t_first = wall() end
        return t_first ~= nil
      end, 20)
      if not t_first then error("a registered server got no call in 20 s") end
      reg_ms[#reg_ms + 1] = (t_first - s.registered) * 1000
      local t_kill = now()
      uv.kill(s.pid, "sigkill")
      local gone = run_until(function() return member(pool, s.url) == nil end, 30)
      if not gone then error("a killed server was not removed in 30 s") end
      rm_ms[#rm_ms + 1] = (now() - t_kill) * 1000
      stop(s)
    end
    done = true
    run_until(function() return st.running == 0 end, 30)
    pool:close()
    stop(first)
    emit { row = "etcd", ttl = ttl, runs = #reg_ms, lost = st.lost,
      reg_to_call_ms = median(reg_ms), reg_to_call_max_ms = math.max(table.unpack(reg_ms)),
      kill_to_removal_ms = median(rm_ms), kill_to_removal_max_ms = math.max(table.unpack(rm_ms)) }
  end)
  stop(etcd)
  os.execute("rm -rf '" .. dir:gsub("'", "") .. "'")
  if not ok then emit { row = "etcd", error = tostring(err) } end
end

local function guarded(row, fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then emit { row = row, error = tostring(err) } end
end

guarded("conc", part_conc)
guarded("kill", part_kill, "defaults (probe_interval 1 s, probe_max 30 s)", {})
guarded("kill", part_kill, "probe_interval 0.1 s, probe_max 0.5 s", { probe_interval = 0.1, probe_max = 0.5 })
guarded("etcd", part_etcd)
for _, p in ipairs(procs) do
  if p.alive then stop(p, "sigkill") end
end
