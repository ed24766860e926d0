-- Spec helper: a raw Pyro4 wire client on luv that never blocks the Lua
-- thread (it turns luv's loop while waiting), so it can talk to a daemon
-- served by this same process as well as to another process.
--
--   local wc = require "helpers.wireclient"
--   local c = assert(wc.connect("127.0.0.1", port))
--   c:send(core.wire_encode(core.MSG_CONNECT, 0x10, 0, 2, '{"handshake": "hello", "object": "X"}'))
--   local msg = assert(c:recv())      -- decoded message table (core.framer)
--   c:wait_closed()                   -- true once the daemon closed it
--   c:close()
local uv = require "luv"
local core = require "springrun.core"

local M = {}

local Client = {}
Client.__index = Client

-- Turns the loop until pred() or timeout seconds; returns pred().
local function run_until(pred, timeout)
  if pred() then return true end
  local expired = false
  local timer = uv.new_timer()
  timer:start(math.floor((timeout or 5) * 1000), 0, function() expired = true end)
  while not pred() and not expired do uv.run("once") end
  timer:stop()
  timer:close()
  return pred()
end
M.run_until = run_until

function M.connect(host, port, timeout)
  local self = setmetatable({ inbox = {}, closed = false, framer = core.framer() }, Client)
  local tcp = uv.new_tcp()
  self.tcp = tcp
  local done, cerr = false, nil
  tcp:connect(host, port, function(err)
    cerr = err
    done = true
  end)
  if not run_until(function() return done end, timeout or 5) then
    tcp:close()
    return nil, "connect timeout"
  end
  if cerr then
    tcp:close()
    return nil, cerr
  end
  tcp:read_start(function(err, data)
    if err or data == nil then
      self.closed = true
      self.read_error = err
      return
    end
    self.framer:feed(data)
    while true do
      local msg, ferr = self.framer:next()
      if msg == nil then
        if ferr then
          self.frame_error = ferr
          self.closed = true
        end
        break
      end
      self.inbox[#self.inbox + 1] = msg
    end
  end)
  return self
end

function Client:send(bytes)
  self.tcp:write(bytes)
end

-- Next message, or nil and "closed" / "timeout".
function Client:recv(timeout)
  run_until(function() return #self.inbox > 0 or self.closed end, timeout or 5)
  if #self.inbox > 0 then return table.remove(self.inbox, 1) end
  if self.closed then return nil, "closed" end
  return nil, "timeout"
end

-- True when the peer closed the connection within timeout (default 5 s).
function Client:wait_closed(timeout)
  return run_until(function() return self.closed end, timeout or 5)
end

-- True when no message arrives within `seconds`.
function Client:quiet_for(seconds)
  return not run_until(function() return #self.inbox > 0 end, seconds)
end

function Client:close()
  if not self.tcp:is_closing() then self.tcp:close() end
  uv.run("nowait")
end

-- Waits (up to 5 s, turning the loop) until one of lines (a list of log
-- lines that fills as the loop runs) mentions every pattern given (plain
-- text); true or false.
function M.wait_line(lines, ...)
  local pats = { ... }
  return run_until(function()
    for _, l in ipairs(lines) do
      local all = true
      for _, p in ipairs(pats) do
        if not l:find(p, 1, true) then all = false break end
      end
      if all then return true end
    end
    return false
  end, 5)
end

-- A JSON INVOKE payload as Pyro4 writes it.
function M.invoke_json(object, method, params_json, kwargs_json)
  return string.format('{"object": "%s", "method": "%s", "params": %s, "kwargs": %s}',
    object, method, params_json or "[]", kwargs_json or "{}")
end

return M
