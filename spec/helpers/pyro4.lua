-- Spec helpers for the name server and Python Pyro4 interop specs: start the
-- real peers (a Pyro4 name server, a Pyro4 daemon, springrun servers,
-- `springrun ns`) on free ports, run the Python client fixture and
-- Pyro4.nsc, and fail loudly when Python or Pyro4 is missing.
--
--   local pyro4 = require "helpers.pyro4"
--   pyro4.require_python()                 -- raises naming what to install
--   local ns, nsport = pyro4.start_pyro_ns()
--   finally(function() proc.stop(ns) end)
local proc = require "helpers.proc"
local json = require "springrun.json"
local uv = require "luv"

local M = {}

M.fixtures = proc.root .. "/spec/fixtures"

local checked
-- Raises unless /usr/bin/python3 can import Pyro4 (4.x) and serpent.
function M.require_python()
  if checked == nil then
    local p = io.popen(proc.python .. " -c 'import Pyro4, serpent; print(Pyro4.__version__)' 2>&1")
    local out = p and p:read("a") or ""
    local ok = p and p:close()
    checked = (ok and out:match("^4%.")) and true or out
  end
  if checked ~= true then
    error("these specs need a real Python Pyro4 peer: /usr/bin/python3 with python3-pyro4 and "
      .. "python3-serpent (apt-get install python3 python3-pyro4 python3-serpent); got: "
      .. tostring(checked), 2)
  end
end

-- Polls p's stdout until pattern matches; returns the captures. Raises with
-- p's stderr when p exits first or after `timeout` seconds.
function M.wait_output(p, pattern, timeout, what)
  local deadline = uv.hrtime() + (timeout or 15) * 1e9
  while true do
    local caps = table.pack(p:stdout():match(pattern))
    if caps[1] ~= nil then return table.unpack(caps, 1, caps.n) end
    if p:status() then
      error(string.format("%s exited with %d before printing %q; stdout:\n%s\nstderr:\n%s",
        what or table.concat(p.argv, " "), p:status(), pattern, p:stdout(), p:stderr()), 2)
    end
    if uv.hrtime() > deadline then
      error(string.format("%s did not print %q in time; stderr:\n%s", what or p.argv[1], pattern,
        p:stderr()), 2)
    end
    proc.poll_step(10)
  end
end

local function started(p, port, what)
  local ok, err = proc.wait_port("127.0.0.1", port, 15, p)
  if not ok then
    proc.stop(p)
    error(what .. ": " .. err, 3)
  end
  return p, port
end

-- A real Pyro4 name server (python3 -m Pyro4.naming) on 127.0.0.1:<free
-- port>; env: extra environment. Returns the process and its port.
function M.start_pyro_ns(env)
  M.require_python()
  local port = proc.free_port()
  local p = proc.spawn({ proc.python, "-m", "Pyro4.naming", "-n", "127.0.0.1", "-p", tostring(port) },
    { env = env })
  return started(p, port, "python3 -m Pyro4.naming")
end

-- `springrun ns --host 127.0.0.1 --port <free port>`; returns the process,
-- its port and the URI line it printed.
function M.start_springrun_ns(extra)
  local port = proc.free_port()
  local argv = { proc.bin, "ns", "--host", "127.0.0.1", "--port", tostring(port) }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local p = proc.spawn(argv)
  local uri = M.wait_output(p, "URI = (%S+)\n", 15, "springrun ns")
  return p, port, uri
end

-- A UDP port on 127.0.0.1 that was free a moment ago (for broadcast responders).
function M.free_udp_port()
  local u = uv.new_udp()
  assert(u:bind("127.0.0.1", 0))
  local port = u:getsockname().port
  u:close()
  uv.run("nowait")
  return port
end

-- spec/fixtures/interop_server.lua in a springrun process on a free port
-- (args after the port: NS_HOST NS_PORT NAME to register with a name server).
function M.start_lua_server(...)
  local port = proc.free_port()
  local argv = { proc.bin, M.fixtures .. "/interop_server.lua", tostring(port) }
  for _, a in ipairs({ ... }) do argv[#argv + 1] = tostring(a) end
  local p = proc.spawn(argv)
  M.wait_output(p, "SERVING", 15, "interop_server.lua")
  return started(p, port, "interop_server.lua")
end

-- spec/fixtures/interop_service.py (a Pyro4 daemon) serving NAME ("-": an
-- id Pyro4 picks) on a free port, optionally registered in a name server
-- (ns_host, ns_port, ns_name). Returns the process, port and the URI Pyro4
-- printed.
function M.start_py_service(name, ns_host, ns_port, ns_name, env)
  M.require_python()
  local argv = { proc.python, M.fixtures .. "/interop_service.py", "0", name or "-" }
  if ns_host then
    argv[#argv + 1] = ns_host
    argv[#argv + 1] = tostring(ns_port)
    argv[#argv + 1] = ns_name
  end
  local e = { PYTHONUNBUFFERED = "1" }
  for k, v in pairs(env or {}) do e[k] = v end
  local p = proc.spawn(argv, { env = e })
  local port = M.wait_output(p, "PORT (%d+)", 15, "interop_service.py")
  local uri = p:stdout():match("URI (%S+)")
  return p, tonumber(port), uri
end

-- Runs argv (a Python command) to completion; returns stdout, or raises
-- with its stderr when it does not exit 0 within `timeout` s. stdin: a
-- string fed to its standard input (default: none).
function M.run_python(argv, env, timeout, stdin)
  M.require_python()
  local p = proc.spawn(argv, { env = env, stdin = stdin })
  local code = proc.wait_exit(p, timeout or 60)
  if code == nil then proc.stop(p) end
  if code ~= 0 then
    error(string.format("%s exited with %s; stdout:\n%s\nstderr:\n%s", table.concat(argv, " "),
      tostring(code), p:stdout(), p:stderr()), 2)
  end
  return p:stdout(), p:stderr()
end

-- Runs the Pyro4 oracle (spec/fixtures/ns_oracle.py) on input (JSON on its
-- stdin); returns its decoded JSON output.
function M.ns_oracle(input)
  return json.decode(M.run_python({ proc.python, M.fixtures .. "/ns_oracle.py" }, nil, nil,
    json.encode(input)))
end

-- Runs spec/fixtures/interop_client.py against url with PYRO_SERIALIZER =
-- serializer and the given scenarios; returns its decoded JSON report.
function M.run_client(url, serializer, ...)
  local argv = { proc.python, M.fixtures .. "/interop_client.py", url, ... }
  local out = M.run_python(argv, { PYRO_SERIALIZER = serializer })
  return json.decode(out)
end

-- python3 -m Pyro4.nsc -n 127.0.0.1 -p PORT args... ; returns stdout.
-- serializer: PYRO_SERIALIZER for nsc (nil: Pyro4's default, serpent).
function M.nsc(port, serializer, ...)
  local argv = { proc.python, "-m", "Pyro4.nsc", "-n", "127.0.0.1", "-p", tostring(port), ... }
  return M.run_python(argv, serializer and { PYRO_SERIALIZER = serializer } or nil)
end

return M
