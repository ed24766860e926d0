-- springrun.cmd.ns: `springrun ns [--host H] [--port P]` runs springrun's own
-- name server (springrun.nameserver, Pyro4's Pyro.NameServer API) until
-- SIGINT/SIGTERM, so Python's `python3 -m Pyro4.nsc -n H -p P list` and
-- PYRONAME: lookups (Python's or springrun's) work against it.
--
-- It exports the name server object as "Pyro.NameServer" with
-- springrun.PyroServiceExporter on H:P (default 127.0.0.1:9090; port 0 binds
-- a free port), registers it under its own name with the metadata
-- "class:Pyro4.naming.NameServer" (as Pyro4 does), prints what
-- `python3 -m Pyro4.naming` prints,
--   Not starting broadcast server for localhost.
--   NS running on 127.0.0.1:9090 (127.0.0.1)
--   URI = PYRO:Pyro.NameServer@127.0.0.1:9090
-- and serves (springrun.runtime.serve_after_script: SIGINT/SIGTERM drain and
-- exit 0). Registrations live in memory only.
--
-- Broadcast discovery, as Pyro4's name server: unless the name server is on
-- a loopback or IPv6 address (or -x/--nobc is given), a UDP responder on
-- BCHOST:BCPORT (default 0.0.0.0 and PYRO_NS_BCPORT or 9091) answers the
-- datagram "GET_NSURI" with the name server's URI (for a name server on
-- 0.0.0.0, with the address of the interface facing the asker), which is how
-- Pyro4.locateNS() and springrun.naming find a name server without a host.
-- --broadcast starts it for a loopback name server too (bound to that
-- address: Pyro4 clients also send to 0.0.0.0, which reaches it).
local M = {}

M.USAGE = [[
usage: springrun ns [--host HOST] [--port PORT] [--bchost H] [--bcport P] [-x | --broadcast]

Runs a Pyro4-compatible name server (object Pyro.NameServer) on HOST:PORT
(default 127.0.0.1:9090; PORT 0 picks a free port) until SIGINT/SIGTERM.

options:
  -n, --host HOST   address to listen on (default 127.0.0.1)
  -p, --port PORT   port to listen on (default 9090)
  --bchost HOST     address of the broadcast responder (default 0.0.0.0)
  --bcport PORT     port of the broadcast responder (default PYRO_NS_BCPORT or 9091)
  -x, --nobc        no broadcast responder
  --broadcast       a broadcast responder even for a loopback name server
  -h, --help        this text
]]

local function fail(fmt, ...)
  io.stderr:write("springrun ns: ", string.format(fmt, ...), "\n")
  return 2
end

local function port_of(val)
  local p = type(val) == "string" and val:match("^%d+$") and math.tointeger(tonumber(val))
  if not p or p > 65535 then return nil end
  return p
end

local VALUED = { ["-n"] = "host", ["--host"] = "host", ["-p"] = "port", ["--port"] = "port",
  ["--bchost"] = "bchost", ["--bcport"] = "bcport" }
local FLAGS = { ["-x"] = "nobc", ["--nobc"] = "nobc", ["--broadcast"] = "broadcast" }

-- Parses args; returns opts or nil, exit code.
local function parse(args)
  local opts = { host = "127.0.0.1", port = 9090 }
  local i = 1
  while i <= #args do
    local a = args[i]
    local key, val = a:match("^(%-%-%a+)=(.*)$")
    if key then
      if not VALUED[key] then return nil, fail("unknown option '%s' (see springrun ns --help)", key) end
      key = VALUED[key]
    elseif a == "-h" or a == "--help" then
      io.write(M.USAGE)
      return nil, 0
    elseif FLAGS[a] then
      opts[FLAGS[a]] = true
    elseif VALUED[a] then
      key = VALUED[a]
      i = i + 1
      val = args[i]
      if val == nil then return nil, fail("%s needs a value", a) end
    else
      return nil, fail("unknown argument '%s' (see springrun ns --help)", a)
    end
    if key == "host" or key == "bchost" then
      if val == "" then return nil, fail("--%s needs a host name or address", key) end
      opts[key] = val
    elseif key == "port" or key == "bcport" then
      local p = port_of(val)
      if not p then return nil, fail("--%s must be an integer 0..65535, got '%s'", key, val) end
      opts[key] = p
    end
    i = i + 1
  end
  if opts.nobc and opts.broadcast then return nil, fail("-x/--nobc and --broadcast exclude each other") end
  return opts
end

-- Starts the name server on host:port; returns the exporter, the name server
-- object, its URI and the bound port. Raises (naming host:port) when it
-- cannot listen.
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

local function is_loopback(host)
  return host == "localhost" or host:match("^127%.") ~= nil or host == "::1"
end

-- The address of this machine's interface that datagrams to ip leave from.
local function interface_ip(ip)
  local uv = require "luv"
  local u = uv.new_udp()
  local addr
  if u:connect(ip, 9) then
    local name = u:getsockname()
    addr = name and name.ip
  end
  u:close()
  return addr
end

-- Starts the UDP responder answering "GET_NSURI" with uri (host 0.0.0.0
-- replaced by the interface facing the asker). Returns the udp handle and
-- the "host:port" it is bound to, or nil and an error message.
function M.start_broadcast(uri, bchost, bcport)
  local uv = require "luv"
  local udp = uv.new_udp()
  local ok, err = udp:bind(bchost, bcport, { reuseaddr = true })
  if not ok then
    udp:close()
    return nil, string.format("cannot bind the broadcast responder to %s:%d: %s", bchost, bcport, tostring(err))
  end
  udp:set_broadcast(true)
  local any_host = uri:match("@0%.0%.0%.0:(%d+)$")
  udp:recv_start(function(rerr, data, addr)
    if rerr or data ~= "GET_NSURI" or not addr then return end
    local reply = uri
    if any_host then
      local ip = interface_ip(addr.ip)
      if ip then reply = uri:gsub("@0%.0%.0%.0:", "@" .. ip .. ":") end
    end
    udp:send(reply, addr.ip, addr.port, function() end)
  end)
  local name = udp:getsockname()
  return udp, string.format("%s:%d", name.ip, name.port)
end

local function env_bcport()
  local p = os.getenv("PYRO_NS_BCPORT")
  return p and port_of(p) or 9091
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
  local udp
  if not opts.nobc then
    local ipv6 = opts.host:find(":", 1, true) ~= nil
    if ipv6 and not opts.broadcast then
      io.write("Not starting broadcast server for IPv6.\n")
    elseif is_loopback(opts.host) and not opts.broadcast then
      io.write("Not starting broadcast server for localhost.\n")
    else
      local bchost = opts.bchost or ((is_loopback(opts.host) or ipv6) and opts.host or "0.0.0.0")
      if bchost == "localhost" then bchost = "127.0.0.1" end
      local where
      udp, where = M.start_broadcast(uri, bchost, opts.bcport or env_bcport())
      if not udp then
        ex:destroy()
        io.stderr:write("springrun ns: ", where, "\n")
        return 1
      end
      io.write("Broadcast server running on ", where, "\n")
    end
  end
  local location = uri:match("@(.*)$") or string.format("%s:%d", opts.host, bound)
  io.write(string.format("NS running on %s (%s)\n", location, opts.host))
  io.write("URI = ", uri, "\n")
  io.stdout:flush()
  local sok, rc = pcall(require("springrun.runtime").serve_after_script)
  if udp then
    udp:recv_stop()
    udp:close()
    require("luv").run("nowait")
  end
  if not sok then error(rc, 0) end
  return rc
end

return M
