-- springrun.cmd.ns: `springrun ns [--host H] [--port P]` runs springrun's own
-- name server (springrun.nameserver, Pyro4's Pyro.NameServer API) until
-- SIGINT/SIGTERM, so Python's `python3 -m Pyro4.nsc -n H -p P list` and
-- PYRONAME: lookups (Python's or springrun's) work against it.
--
-- It exports the name server object as "Pyro.NameServer" with
-- springrun.PyroServiceExporter on H:P (default 127.0.0.1:9090; port 0 binds
-- a free port), registers it under its own name with the metadata
-- "class:Pyro4.naming.NameServer" (as Pyro4 does), prints, as
-- `python3 -m Pyro4.naming` does,
--   NS running on 127.0.0.1:9090 (127.0.0.1)
--   URI = PYRO:Pyro.NameServer@127.0.0.1:9090
-- and serves (springrun.runtime.serve_after_script: SIGINT/SIGTERM drain and
-- exit 0). No UDP broadcast responder is started (Pyro4 does not start one
-- for a loopback name server either). Registrations live in memory only.
local M = {}

M.USAGE = [[
usage: springrun ns [--host HOST] [--port PORT]

Runs a Pyro4-compatible name server (object Pyro.NameServer) on HOST:PORT
(default 127.0.0.1:9090; PORT 0 picks a free port) until SIGINT/SIGTERM.

options:
  -n, --host HOST   address to listen on (default 127.0.0.1)
  -p, --port PORT   port to listen on (default 9090)
  -h, --help        this text
]]

local function fail(fmt, ...)
  io.stderr:write("springrun ns: ", string.format(fmt, ...), "\n")
  return 2
end

-- Parses args; returns opts or nil, exit code.
local function parse(args)
  local opts = { host = "127.0.0.1", port = 9090 }
  local i = 1
  while i <= #args do
    local a = args[i]
    local key, val = a:match("^%-%-(%a+)=(.*)$")
    if key == nil then
      if a == "-n" or a == "--host" then key = "host"
      elseif a == "-p" or a == "--port" then key = "port"
      elseif a == "-h" or a == "--help" then
        io.write(M.USAGE)
        return nil, 0
      else
        return nil, fail("unknown argument '%s' (see springrun ns --help)", a)
      end
      i = i + 1
      val = args[i]
      if val == nil then return nil, fail("%s needs a value", a) end
    elseif key ~= "host" and key ~= "port" then
      return nil, fail("unknown option '--%s' (see springrun ns --help)", key)
    end
    if key == "host" then
      if val == "" then return nil, fail("--host needs a host name or address") end
      opts.host = val
    else
      local p = val:match("^%d+$") and math.tointeger(tonumber(val))
      if not p or p > 65535 then return nil, fail("--port must be an integer 0..65535, got '%s'", val) end
      opts.port = p
    end
    i = i + 1
  end
  return opts
end

-- Starts the name server on host:port; returns the exporter, the name server
-- object and its URI. Raises (naming host:port) when it cannot listen.
function M.start(host, port)
  local exporter = require "springrun.exporter"
  local nameserver = require "springrun.nameserver"
  local naming = require "springrun.naming"
  local log = require "springrun.log"
  local ns = nameserver.new({ logger = log.get("springrun.nameserver") })
  local ex = exporter.PyroServiceExporter {
    service_name = naming.NAMESERVER_NAME, service = ns,
    service_host = host, service_port = port,
  }
  ex:after_properties_set()
  local bound = ex:bound_port()
  local shown = host:find(":", 1, true) and ("[" .. host .. "]") or host
  local uri = string.format("PYRO:%s@%s:%d", naming.NAMESERVER_NAME, shown, bound)
  nameserver.set_own_uri(ns, uri)
  return ex, ns, uri, bound
end

-- args: the words after `springrun ns`. Returns the exit status.
function M.main(args)
  local opts, code = parse(args or {})
  if not opts then return code end
  local ok, ex, _, uri, bound = pcall(M.start, opts.host, opts.port)
  if not ok then
    io.stderr:write("springrun ns: cannot start the name server: ", tostring(ex), "\n")
    return 1
  end
  local location = uri:match("@(.*)$") or string.format("%s:%d", opts.host, bound)
  io.write(string.format("NS running on %s (%s)\n", location, opts.host))
  io.write("URI = ", uri, "\n")
  io.stdout:flush()
  return require("springrun.runtime").serve_after_script()
end

return M
