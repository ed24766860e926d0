-- Spec helpers shared by the TLS and handshake specs (tls_spec, auth_spec):
-- the springrun server process spec/fixtures/secure_server.lua, the Python
-- Pyro4 daemon spec/fixtures/secure_pyro.py, the Python client
-- spec/fixtures/secure_client.py, and springrun proxies to "secure.Echo".
--
--   local secure = require "helpers.secure"
--   local cleanup = proc.cleanups(finally)
--   local srv, port = secure.start_sr(cleanup, { SR_SECRET = "s" })
--   local r = secure.py_client(port, env, "json", "s")   -- its JSON report
--   local e = secure.call_error(secure.proxy(port, { handshake = "x" }), true)
local springrun = require "springrun"
local json = require "springrun.json"
local client = require "helpers.client"
local proc = require "helpers.proc"
local pyro4 = require "helpers.pyro4"

local M = {}

local fixtures = proc.root .. "/spec/fixtures"

-- The URL of the Echo object both servers export on 127.0.0.1:port.
function M.url(port) return string.format("PYRO:secure.Echo@127.0.0.1:%d", port) end

-- Copies the pairs of each table given (nil ones skipped) into a new table.
local function merged(...)
  local t = {}
  for i = 1, select("#", ...) do
    for k, v in pairs(select(i, ...) or {}) do t[k] = v end
  end
  return t
end
M.merged = merged

-- A springrun server process configured by env (SR_SSL_*, SR_SECRET, ...:
-- see secure_server.lua); stopped by cleanup. Returns it and its port.
function M.start_sr(cleanup, env)
  local p = proc.spawn({ proc.bin, fixtures .. "/secure_server.lua" }, { env = env })
  cleanup(function() proc.stop(p) end)
  local port = tonumber(pyro4.wait_output(p, "PORT (%d+)", 15, "secure_server.lua"))
  assert(proc.wait_port("127.0.0.1", port, 10, p))
  return p, port
end

-- A Python Pyro4 daemon (secure_pyro.py args...) accepting json and serpent,
-- with env's Pyro4 settings; stopped by cleanup. Returns it and its port.
function M.start_py(cleanup, env, args)
  pyro4.require_python()
  local p, port = client.start_python("secure_pyro.py", args, nil,
    merged({ PYRO_SERIALIZERS_ACCEPTED = "json,serpent" }, env))
  cleanup(function() proc.stop(p) end)
  return p, port
end

-- Runs the Python client against port with env's Pyro4 settings, the
-- serializer (default json) and a handshake (nil: none); returns its JSON
-- report.
function M.py_client(port, env, serializer, handshake)
  pyro4.require_python()
  local argv = { proc.python, fixtures .. "/secure_client.py", M.url(port) }
  if handshake then argv[#argv + 1] = handshake end
  local out = pyro4.run_python(argv, merged({ PYRO_SERIALIZER = serializer or "json" }, env), 60)
  return json.decode(out)
end

-- A springrun proxy to the Echo object on port (timeout 10 s unless props say).
function M.proxy(port, props)
  return springrun.proxy(M.url(port), merged({ timeout = 10 }, props))
end

-- The error of a call to p:echo("x"), blocking (task falsy) or in a task.
function M.call_error(p, task)
  if task then
    local ok, e = client.in_task(function() return p:echo("x") end)
    assert(not ok, "expected an error")
    return e
  end
  return client.error_of(p.echo, p, "x")
end

return M
