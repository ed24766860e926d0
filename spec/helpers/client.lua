-- Spec helpers for the proxy side: start the Python peers in spec/fixtures
-- (a real Pyro4 daemon, a silent TCP server, a hand-driven Pyro4 daemon) and
-- learn the port each one bound (they bind port 0 and print "PORT <n>").
--
--   local client = require "helpers.client"
--   local p, port = client.start_pyro()          -- Pyro4 daemon, JSON only
--   finally(function() proc.stop(p) end)
local proc = require "helpers.proc"
local uv = require "luv"

local M = {}

M.fixtures = proc.root .. "/spec/fixtures"

-- Starts `/usr/bin/python3 spec/fixtures/<script> args...`, waits (polling its
-- stdout) for "PORT <n>" and returns the process and the port. Raises with
-- the process's stderr when it exits or stays silent for `timeout` s.
-- env: extra environment (default PYRO_SERIALIZERS_ACCEPTED=json).
function M.start_python(script, args, timeout, env)
  local argv = { proc.python, M.fixtures .. "/" .. script }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = tostring(a) end
  local e = { PYRO_SERIALIZERS_ACCEPTED = "json", PYTHONUNBUFFERED = "1" }
  for k, v in pairs(env or {}) do e[k] = v end
  local p = proc.spawn(argv, { env = e })
  local deadline = uv.hrtime() + (timeout or 15) * 1e9
  while true do
    local port = p:stdout():match("PORT (%d+)")
    if port then return p, tonumber(port) end
    if p:status() then
      error(string.format("%s exited with %d before listening; stderr:\n%s", script, p:status(), p:stderr()))
    end
    if uv.hrtime() > deadline then
      proc.stop(p)
      error(script .. " did not report its port in time; stderr:\n" .. p:stderr())
    end
    proc.poll_step(10)
  end
end

-- A real Python Pyro4 daemon serving spec/fixtures/pyro_service.py's Service
-- as `name` (default "ServiceName") on 127.0.0.1:port (default: any).
-- env: extra Pyro4 settings, e.g. { PYRO_COMPRESSION = "true" }.
function M.start_pyro(port, name, env)
  return M.start_python("pyro_service.py", { port or 0, name or "ServiceName" }, nil, env)
end

-- Runs fn as a springrun task (springrun.runtime.spawn) and turns luv's loop
-- until it finishes; returns what pcall(fn) returns. Raises when the task is
-- not done after `timeout` seconds (default 30).
function M.in_task(fn, timeout)
  local runtime = require "springrun.runtime"
  local res
  local guard = uv.new_timer()
  local expired = false
  guard:start(math.floor((timeout or 30) * 1000), 0, function() expired = true end)
  runtime.spawn(function() res = table.pack(pcall(fn)) end)
  while res == nil and not expired do uv.run("once") end
  guard:stop()
  guard:close()
  uv.run("nowait")
  if res == nil then error("the task did not finish within " .. (timeout or 30) .. " s") end
  return table.unpack(res, 1, res.n)
end

-- Seconds since an arbitrary point (monotonic).
function M.now() return uv.hrtime() / 1e9 end

-- Calls f(...); returns the seconds it took, then what f returned.
function M.timed(f, ...)
  local t0 = M.now()
  local r = table.pack(f(...))
  return M.now() - t0, table.unpack(r, 1, r.n)
end

-- pcall(f, ...) that must fail; returns the error object.
function M.error_of(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error, got success")
  return e
end

return M
