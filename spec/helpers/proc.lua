-- Spec helpers for real processes and TCP ports: start a process in the
-- background and know its pid and exit status, pick a free port, wait until a
-- port accepts connections (by polling connect attempts, never a fixed sleep
-- as synchronisation), and stop processes by pid.
--
--   local proc = require "helpers.proc"
--   local port = proc.free_port()
--   local p = proc.spawn({ proc.bin, "server.lua", tostring(port) }, { env = { X = "1" } })
--   finally(function() proc.stop(p) end)
--   -- busted runs only the LAST finally() of a test; for several cleanups:
--   local cleanup = proc.cleanups(finally)
--   cleanup(function() proc.stop(p) end); cleanup(function() os.remove(path) end)
--   assert(proc.wait_port("127.0.0.1", port, 10))
--   ... proc.kill(p, "sigterm"); local code = proc.wait_exit(p, 10)
--   p:stdout(), p:stderr()  -- what the process wrote so far
--
-- Uses luv only for short-lived sockets and sleeps; it runs luv's loop with
-- "nowait"/"once" while waiting, so callbacks of anything else registered on
-- the loop (an in-process daemon, for instance) keep being served.
local uv = require "luv"

local M = {}

M.root = assert(io.popen("pwd")):read("l")
-- SPRINGRUN_BIN: the CLI under test (make test SANITIZE=1 sets bin/springrun-san)
M.bin = os.getenv("SPRINGRUN_BIN") or (M.root .. "/bin/springrun")
M.python = "/usr/bin/python3"

-- Quotes s for /bin/sh.
function M.shquote(s)
  s = tostring(s)
  if s:match("^[%w%._/:=,+%-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- The shell command of a plain lua5.4 that can load the core under test:
-- under make test SANITIZE=1 the core is built with ASan, which an
-- uninstrumented interpreter loads only with the ASan runtime preloaded
-- (spec/helpers/preload.lua keeps its path).
local asan = os.getenv("SPRINGRUN_ASAN_PRELOAD")
M.lua = (asan and asan ~= "")
    and ("env LD_PRELOAD=" .. M.shquote(asan) .. " ASAN_OPTIONS=detect_leaks=0 lua5.4")
    or "lua5.4"

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local Proc = {}
Proc.__index = Proc

function Proc:stdout() return read_all(self.dir .. "/stdout") or "" end
function Proc:stderr() return read_all(self.dir .. "/stderr") or "" end

-- Exit status when the process has ended (a number; 128+N for signal N), or nil.
function Proc:status()
  local s = read_all(self.dir .. "/rc")
  if s and s:match("%d") then return tonumber(s:match("%d+")) end
  return nil
end

-- Starts argv (a list of strings) in the background. opts.env: a table of
-- extra environment variables; opts.cwd: working directory; opts.stdin: a
-- string fed to its stdin (default: /dev/null). Returns a process object with
-- .pid (the program's own pid, not a shell's). Raises when it cannot start.
function M.spawn(argv, opts)
  opts = opts or {}
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. M.shquote(dir)))
  local words = {}
  for k, v in pairs(opts.env or {}) do words[#words + 1] = M.shquote(k .. "=" .. v) end
  local cmd = {}
  for _, a in ipairs(argv) do cmd[#cmd + 1] = M.shquote(a) end
  local stdin = "/dev/null"
  if opts.stdin then
    stdin = dir .. "/stdin"
    local f = assert(io.open(stdin, "wb"))
    f:write(opts.stdin)
    f:close()
  end
  local inner = string.format("%s%s %s <%s >%s 2>%s & echo $! >%s.tmp; mv %s.tmp %s; wait $!; echo $? >%s.tmp; mv %s.tmp %s",
    opts.cwd and ("cd " .. M.shquote(opts.cwd) .. " && ") or "",
    #words > 0 and ("env " .. table.concat(words, " ")) or "",
    table.concat(cmd, " "), M.shquote(stdin), M.shquote(dir .. "/stdout"),
    M.shquote(dir .. "/stderr"), M.shquote(dir .. "/pid"), M.shquote(dir .. "/pid"),
    M.shquote(dir .. "/pid"), M.shquote(dir .. "/rc"), M.shquote(dir .. "/rc"), M.shquote(dir .. "/rc"))
  assert(os.execute("sh -c " .. M.shquote(inner) .. " >/dev/null 2>&1 &"))
  local pid
  local deadline = uv.hrtime() + 10e9
  while not pid do
    local s = read_all(dir .. "/pid")
    if s and s:match("%d") then pid = tonumber(s:match("%d+")) end
    if not pid then
      if uv.hrtime() > deadline then error("spawn: no pid for " .. table.concat(argv, " ")) end
      uv.sleep(5)
    end
  end
  return setmetatable({ pid = pid, dir = dir, argv = argv }, Proc)
end

-- Sends a signal ("sigterm", "sigint", "sigkill" or a number) to p (a process
-- object or a pid). Returns true, or nil and the error when it is gone.
function M.kill(p, sig)
  local pid = type(p) == "table" and p.pid or p
  local ok, err = uv.kill(pid, sig or "sigterm")
  if ok == 0 or ok == true then return true end
  return nil, err
end

-- Turns luv's loop (without blocking when nothing is pending) and sleeps a
-- little: one polling step.
local function poll_step(ms)
  uv.run("nowait")
  uv.sleep(ms or 10)
end
M.poll_step = poll_step

-- Waits until p has exited; returns its status (see Proc:status), or nil and
-- "timeout" after `timeout` seconds (default 10).
function M.wait_exit(p, timeout)
  local deadline = uv.hrtime() + (timeout or 10) * 1e9
  while true do
    local st = p:status()
    if st then return st end
    if uv.hrtime() > deadline then return nil, "timeout" end
    poll_step(10)
  end
end

-- Stops p if it still runs: SIGTERM, then SIGKILL after `grace` seconds
-- (default 3). Safe to call twice; for finally().
function M.stop(p, grace)
  if p == nil or p:status() then return end
  M.kill(p, "sigterm")
  if not M.wait_exit(p, grace or 3) then
    M.kill(p, "sigkill")
    M.wait_exit(p, 5)
  end
end

-- One connect attempt; returns true when host:port accepted.
local function try_connect(host, port, timeout_ms)
  local tcp = uv.new_tcp()
  local done, ok = false, false
  local timer = uv.new_timer()
  timer:start(timeout_ms, 0, function() done = true end)
  local _, err = tcp:connect(host, port, function(e)
    ok = (e == nil)
    done = true
  end)
  if err then done = true end
  while not done do uv.run("once") end
  timer:stop()
  timer:close()
  tcp:close()
  uv.run("nowait")
  return ok
end

-- Polls connect attempts until host:port accepts; returns true, or nil and a
-- message after `timeout` seconds (default 10). opts.proc: fail early when
-- that process has exited (its stderr goes into the message).
function M.wait_port(host, port, timeout, proc)
  local deadline = uv.hrtime() + (timeout or 10) * 1e9
  while true do
    if try_connect(host, port, 500) then return true end
    if proc and proc:status() then
      return nil, string.format("process %d exited with %d before %s:%d accepted; stderr:\n%s",
        proc.pid, proc:status(), host, port, proc:stderr())
    end
    if uv.hrtime() > deadline then
      return nil, string.format("%s:%d did not accept connections within %gs", host, port, timeout or 10)
    end
    poll_step(20)
  end
end

-- True while host:port accepts connections (one attempt).
function M.port_open(host, port) return try_connect(host, port, 500) end

-- Waits until host:port refuses connections; true, or nil after timeout.
function M.wait_port_closed(host, port, timeout)
  local deadline = uv.hrtime() + (timeout or 10) * 1e9
  while try_connect(host, port, 500) do
    if uv.hrtime() > deadline then return nil, "still accepting" end
    poll_step(20)
  end
  return true
end

-- Ports free_port has handed out in this process: the kernel may give the
-- same ephemeral port again once it is closed, and two servers of one test
-- told the same "free" port collide (seen in CI: a pool of three members
-- with two on one port).
local given = {}

-- A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it
-- back, release it) and not handed out before in this process.
function M.free_port(host)
  local held, port = {}, nil
  repeat -- a port handed out before stays bound while the next is asked for
    local tcp = uv.new_tcp()
    assert(tcp:bind(host or "127.0.0.1", 0))
    port = tcp:getsockname().port
    held[#held + 1] = tcp
  until not given[port] or #held >= 64
  given[port] = true
  for _, tcp in ipairs(held) do tcp:close() end
  uv.run("nowait")
  return port
end

-- busted keeps only the last finally() registered by a test. Registers one
-- finally (finally_fn is busted's `finally`) and returns add(fn): every fn
-- added runs at the end of the test, last added first, errors ignored.
-- busted gives every test its own `finally`, so calling cleanups(finally)
-- again in the same test (from a spec's helper function, say) returns the
-- same add() instead of registering a second finally that would replace the
-- first. A test that uses cleanups must not call finally() itself.
local adders = setmetatable({}, { __mode = "k" })
function M.cleanups(finally_fn)
  local add = adders[finally_fn]
  if add then return add end
  local list = {}
  finally_fn(function()
    for i = #list, 1, -1 do pcall(list[i]) end
  end)
  add = function(fn) list[#list + 1] = fn end
  adders[finally_fn] = add
  return add
end

-- Registers proc.stop(p) with add (a proc.cleanups adder) and returns p
-- and the rest unchanged: local ns, port = proc.stop_at(cleanup, start_ns()).
function M.stop_at(add, p, ...)
  add(function() M.stop(p) end)
  return p, ...
end

-- A temporary path that does not exist yet (for a file the code under test
-- is to write), removed again by add (a proc.cleanups adder) when given.
function M.tmppath(add)
  local path = os.tmpname()
  os.remove(path)
  if add then add(function() os.remove(path) end) end
  return path
end

-- Runs a shell command; returns its stdout, ok, exit code.
function M.run(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok, code
end

-- Writes text to a new temporary file and returns its path.
function M.tmpfile(text, suffix)
  local path = os.tmpname() .. (suffix or ".lua")
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

return M
