-- make soak: SOAK_MINUTES (default 2) of mixed load against one springrun
-- server process (spec/fixtures/fault_server.lua) with faults injected, then
-- a report: calls made, calls failed, and the server's RSS at start (after a
-- warm-up) and end. Run by the springrun CLI from the checkout:
--   SOAK_MINUTES=2 bin/springrun bench/soak.lua
-- Load (all on luv, raw Pyro4 JSON frames, every answer checked):
--   sequential  4 connections, one echo call at a time each
--   concurrent  bursts of 50 new connections making 10 calls each, then closing
--   oneway      note() calls (no reply), each batch followed by an echo
--   large       echo of 256 KiB and big(1 MiB) results
--   errors      fail() calls: an exception RESULT is the right answer
-- Faults: every 2 s a client process is killed mid-message (half_client.lua,
-- SIGKILL), and a connection sends garbage bytes and one sends a truncated
-- header then closes. Resource abuse, every 2 s too: a client asks for
-- three 4 MiB replies and resets after the first bytes (mid-reply), one
-- pipelines 50 expensive calls (spin 5 ms) and resets (its calls not yet
-- started are dropped), one connects and never sends a byte (closed by
-- handshake_timeout, 2 s here), and one sends a call then half-closes
-- (its reply must still come: counted as a call). A call counts as failed when its answer is wrong or
-- missing; only calls on connections hit by a fault may fail (there are none
-- by design: faults use their own connections), so "failed" must be 0.
-- Exit status 0 when nothing failed and the RSS stayed flat (end within
-- 10 MiB + 10 % of the start).
local uv = require "luv"
local core = require "springrun.core"
local json = require "springrun.json"

local MINUTES = tonumber(os.getenv("SOAK_MINUTES") or "2") or 2
local root = uv.cwd()
local bin = uv.exepath()
local FIX = root .. "/spec/fixtures"
local JSON = core.SER_JSON

local stats = { made = 0, failed = 0, errors_expected = 0, faults = 0, oneway = 0 }
local stopping = false

-- ---- the server ------------------------------------------------------------
local server_out = uv.new_pipe()
local server_err = uv.new_pipe()
local server, server_pid = uv.spawn(bin, {
  args = { FIX .. "/fault_server.lua", "0" },
  stdio = { nil, server_out, server_err },
  env = { "FAULT_LIMITS=max_queued_per_connection=64,handshake_timeout=2", "PATH=" .. (os.getenv("PATH") or "") },
}, function() end)
assert(server, "cannot start the server: " .. tostring(server_pid))
local port, errtext = nil, ""
server_out:read_start(function(_, data)
  if data then port = port or tonumber(data:match("PORT (%d+)")) end
end)
server_err:read_start(function(_, data) if data then errtext = errtext .. data end end)
local t = uv.new_timer()
t:start(20000, 0, function() end)
while not port and t:is_active() do uv.run("once") end
t:close()
assert(port, "the server did not start: " .. errtext)

local function rss_kb()
  local f = io.open("/proc/" .. server_pid .. "/status")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)")) or 0
end

-- ---- a raw client ------------------------------------------------------------
local Conn = {}
Conn.__index = Conn

-- Opens a connection; on_ready(conn) after CONNECTOK, on_dead(conn, why).
local function open(on_ready, on_dead)
  local self = setmetatable({ tcp = uv.new_tcp(), fr = core.framer(), seq = 0, waiting = {},
                              ready = false, dead = false }, Conn)
  self.on_dead = on_dead
  self.tcp:connect("127.0.0.1", port, function(err)
    if err then return self:die("connect: " .. err) end
    self.tcp:write(core.wire_encode(core.MSG_CONNECT, 0, 0, JSON, '{"handshake": "hello", "object": "Faults"}'))
    self.tcp:read_start(function(rerr, data)
      if rerr or not data then return self:die(rerr or "closed by the server") end
      self.fr:feed(data)
      while true do
        local m, ferr = self.fr:next()
        if not m then
          if ferr then return self:die(ferr) end
          break
        end
        if not self.ready then
          if m.type ~= core.MSG_CONNECTOK then return self:die("handshake refused") end
          self.ready = true
          on_ready(self)
        else
          local cb = self.waiting[m.seq]
          self.waiting[m.seq] = nil
          if cb then cb(m) end
        end
      end
    end)
  end)
  return self
end

function Conn:die(why)
  if self.dead then return end
  self.dead = true
  if not self.tcp:is_closing() then self.tcp:close() end
  for _, cb in pairs(self.waiting) do cb(nil, why) end
  self.waiting = {}
  if self.on_dead then self.on_dead(self, why) end
end

function Conn:close()
  self.dead = true
  if not self.tcp:is_closing() then self.tcp:close() end
end

-- Calls method with params (a JSON text); check(msg) -> true when right.
function Conn:call(method, params, check, flags, done)
  self.seq = (self.seq + 1) % 65536
  local seq = self.seq
  stats.made = stats.made + 1
  flags = flags or 0
  self.tcp:write(core.wire_encode(core.MSG_INVOKE, flags, seq, JSON,
    string.format('{"object": "Faults", "method": "%s", "params": [%s], "kwargs": {}}', method, params)))
  if flags & core.FLAG_ONEWAY ~= 0 then
    stats.oneway = stats.oneway + 1
    if done then done(true) end
    return
  end
  self.waiting[seq] = function(m, why)
    local ok = m ~= nil and check(m)
    if not ok then
      stats.failed = stats.failed + 1
      io.stderr:write(string.format("failed call %s: %s\n", method, why or (m and m.data:sub(1, 200)) or "?"))
    end
    if done then done(ok) end
  end
end

local function value(m)
  if m.flags & core.FLAG_EXCEPTION ~= 0 then return nil end
  return json.decode(m.data)
end

-- ---- load ----------------------------------------------------------------------
local function sequential(id)
  local n = 0
  local function step(c)
    if stopping then return c:close() end
    n = n + 1
    local v = id * 1000000 + n
    c:call("echo", tostring(v), function(m) return value(m) == v end, 0, function() step(c) end)
  end
  open(step, function(_, why)
    if not stopping then
      stats.failed = stats.failed + 1
      io.stderr:write("sequential client died: " .. tostring(why) .. "\n")
    end
  end)
end

local function burst()
  if stopping then return end
  local left = 50
  for i = 1, 50 do
    open(function(c)
      local pending = 10
      for k = 1, 10 do
        local v = i * 100 + k
        c:call("echo", tostring(v), function(m) return value(m) == v end, 0, function()
          pending = pending - 1
          if pending == 0 then
            c:close()
            left = left - 1
          end
        end)
      end
    end, function(_, why)
      stats.failed = stats.failed + 1
      io.stderr:write("burst client died: " .. tostring(why) .. "\n")
    end)
  end
end

local function mixed()
  local round = 0
  local function step(c)
    if stopping then return c:close() end
    round = round + 1
    local kind = round % 4
    local next_step = function() step(c) end
    if kind == 0 then
      for k = 1, 20 do c:call("note", tostring(k), nil, core.FLAG_ONEWAY) end
      c:call("echo", '"sync"', function(m) return value(m) == "sync" end, 0, next_step)
    elseif kind == 1 then
      local s = string.rep("L", 256 * 1024)
      c:call("echo", '"' .. s .. '"', function(m) return value(m) == s end, 0, next_step)
    elseif kind == 2 then
      c:call("big", "1048576", function(m) local v = value(m) return v and #v == 1048576 end, 0, next_step)
    else
      c:call("fail", '"expected"', function(m)
        local ok = m.flags & core.FLAG_EXCEPTION ~= 0 and json.decode(m.data).__class__ == "builtins.ValueError"
        if ok then stats.errors_expected = stats.errors_expected + 1 end
        return ok
      end, 0, next_step)
    end
  end
  open(step, function(_, why)
    if not stopping then
      stats.failed = stats.failed + 1
      io.stderr:write("mixed client died: " .. tostring(why) .. "\n")
    end
  end)
end

-- ---- faults ----------------------------------------------------------------------
local victims = {}
local function fault()
  if stopping then return end
  stats.faults = stats.faults + 1
  -- a client process killed mid-message
  local out = uv.new_pipe()
  local h, pid
  h, pid = uv.spawn(bin, { args = { FIX .. "/half_client.lua", tostring(port) }, stdio = { nil, out, nil } },
    function() if h and not h:is_closing() then h:close() end end)
  if h then
    out:read_start(function(_, data)
      if data and data:find("SENT") then
        uv.kill(pid, "sigkill")
        out:close()
      elseif not data then
        out:close()
      end
    end)
    victims[#victims + 1] = pid
  end
  -- garbage bytes, and a truncated header then close
  for _, junk in ipairs({ string.rep("\255\0garbage", 50),
                          core.wire_encode(core.MSG_INVOKE, 0, 1, JSON, '{"x": 1}'):sub(1, 12) }) do
    local tcp = uv.new_tcp()
    tcp:connect("127.0.0.1", port, function(err)
      if err then return tcp:close() end
      tcp:write(junk, function() tcp:close() end)
    end)
  end
  -- resource abuse: a reset mid-reply, a reset with calls queued, a
  -- connection that never sends a byte (left to handshake_timeout)
  local connect = core.wire_encode(core.MSG_CONNECT, 0, 0, JSON, '{"handshake": "hello", "object": "Faults"}')
  local function invoke(seq, method, params)
    return core.wire_encode(core.MSG_INVOKE, 0, seq, JSON,
      string.format('{"object": "Faults", "method": "%s", "params": %s, "kwargs": {}}', method, params))
  end
  local big, spin = { connect }, { connect }
  for seq = 1, 3 do big[#big + 1] = invoke(seq, "big", "[4194304]") end
  for seq = 1, 50 do spin[#spin + 1] = invoke(seq, "spin", "[5]") end
  for _, bytes in ipairs({ table.concat(big), table.concat(spin), false }) do
    local tcp = uv.new_tcp()
    tcp:connect("127.0.0.1", port, function(err)
      if err then return tcp:close() end
      if not bytes then -- silent: the server closes it
        return tcp:read_start(function(_, data) if not data then tcp:close() end end)
      end
      tcp:write(bytes)
      tcp:read_start(function(_, data)
        if not data then return tcp:close() end
        if not tcp:is_closing() then tcp:close() end -- unread bytes left: a reset
      end)
    end)
  end
  -- a half-close: the reply to what was sent before it still comes
  local half = uv.new_tcp()
  local fr, answered = core.framer(), false
  stats.made = stats.made + 1
  half:connect("127.0.0.1", port, function(err)
    if err then stats.failed = stats.failed + 1 return half:close() end
    half:write(connect .. invoke(1, "echo", '["half"]'))
    half:shutdown()
    half:read_start(function(_, data)
      if data then
        fr:feed(data)
        while true do
          local m = fr:next()
          if not m then break end
          if m.type == core.MSG_RESULT then answered = json.decode(m.data) == "half" end
        end
        return
      end
      if not answered then stats.failed = stats.failed + 1 end
      half:close()
    end)
  end)
end

-- ---- run -----------------------------------------------------------------------------
for id = 1, 4 do sequential(id) end
for _ = 1, 2 do mixed() end
local burst_timer = uv.new_timer()
burst_timer:start(500, 1000, burst)
local fault_timer = uv.new_timer()
fault_timer:start(1000, 2000, fault)

local warmup_s = math.min(15, MINUTES * 60 / 4)
local rss_start, samples = nil, {}
local t0 = uv.now()
local sampler = uv.new_timer()
sampler:start(1000, 1000, function()
  local el = (uv.now() - t0) / 1000
  if not rss_start and el >= warmup_s then rss_start = rss_kb() end
  if math.floor(el) % 15 == 0 then samples[#samples + 1] = string.format("%ds:%dKiB", math.floor(el), rss_kb()) end
  if el >= MINUTES * 60 then
    stopping = true
    sampler:stop()
    burst_timer:stop()
    fault_timer:stop()
    uv.stop()
  end
end)
uv.run()
-- let the last calls finish
local drain = uv.new_timer()
drain:start(2000, 0, function() uv.stop() end)
uv.run()
local rss_end = rss_kb()
uv.kill(server_pid, "sigterm")

print(string.format("soak: %g minutes, calls made %d (of which oneway %d, expected exceptions %d), calls failed %d, faults injected %d (%d client processes killed mid-message, %d garbage and %d truncated connections)",
  MINUTES, stats.made, stats.oneway, stats.errors_expected, stats.failed, stats.faults, stats.faults, stats.faults, stats.faults))
print(string.format("soak: server RSS at start (after %gs warm-up) %d KiB, at end %d KiB", warmup_s, rss_start or 0, rss_end))
print("soak: RSS samples " .. table.concat(samples, " "))
local flat = rss_start and rss_end <= rss_start * 1.1 + 10240
print(flat and "soak: memory flat" or "soak: MEMORY GREW")
uv.walk(function(h) if not h:is_closing() then h:close() end end)
uv.run()
os.exit((stats.failed == 0 and flat) and 0 or 1)
