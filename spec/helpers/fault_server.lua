-- Spec helper: spec/fixtures/fault_server.lua as a server process of its own
-- (the "Faults" service), for specs that attack a server and then check
-- that it still serves everyone else.
--
--   local fs = require "helpers.fault_server"
--   local p, port = fs.start(cleanup, "max_connections=10", env, "-n 64")
--   local c = fs.connect_ok(port)   -- a wireclient past its handshake
--   fs.still_serves(port)           -- a fresh connection gets an answer
local core = require "springrun.core"
local json = require "springrun.json"
local uv = require "luv"
local wc = require "helpers.wireclient"
local proc = require "helpers.proc"
local luassert = require "luassert"

local M = {}

local JSON = core.SER_JSON
local enc = core.wire_encode
local FIXTURES = proc.root .. "/spec/fixtures"

-- Polls pred (files, process state: no loop events) until true or timeout s.
function M.poll_until(pred, timeout)
  local deadline = uv.hrtime() + timeout * 1e9
  while not pred() do
    if uv.hrtime() > deadline then return false end
    proc.poll_step(20)
  end
  return true
end

-- Starts the server (limits: its FAULT_LIMITS; env: more variables; ulimit:
-- the arguments of sh's ulimit, default "-n 4096"); stopped by cleanup.
-- Returns the process and its port.
function M.start(cleanup, limits, env, ulimit)
  local e = { FAULT_LIMITS = limits or "" }
  for k, v in pairs(env or {}) do e[k] = v end
  local p = proc.spawn({ "sh", "-c", "ulimit " .. (ulimit or "-n 4096") .. " && exec "
    .. proc.shquote(proc.bin) .. " " .. proc.shquote(FIXTURES .. "/fault_server.lua") .. " 0" }, { env = e })
  cleanup(function() proc.stop(p) end)
  local port
  luassert.is_true(M.poll_until(function()
    port = tonumber(p:stdout():match("PORT (%d+)"))
    return port ~= nil or p:status() ~= nil
  end, 20), "fault_server did not start: " .. p:stderr())
  assert(port, "fault_server exited: " .. p:stderr())
  assert(proc.wait_port("127.0.0.1", port, 10, p))
  return p, port
end

function M.connect_ok(port)
  local c = assert(wc.connect("127.0.0.1", port))
  c:send(enc(core.MSG_CONNECT, 0, 0, JSON, '{"handshake": "hello", "object": "Faults"}'))
  local m = assert(c:recv(10))
  luassert.are.equal(core.MSG_CONNECTOK, m.type)
  return c
end

-- Asserts that a new connection gets its call answered.
function M.still_serves(port)
  local c = M.connect_ok(port)
  c:send(enc(core.MSG_INVOKE, 0, 1, JSON, wc.invoke_json("Faults", "echo", '["alive"]')))
  local m = assert(c:recv(10))
  luassert.are.equal("alive", json.decode(m.data))
  c:close()
end

return M
