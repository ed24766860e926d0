-- springrun.exporter: PyroServiceExporter (Spring Python's name), the class
-- that exports a service: its properties, their checks, export and destroy.
-- What serves the calls once exported is springrun.daemon (the Lua half of
-- the daemon: listeners, Pyro.Daemon, the dispatch policy), with
-- springrun.streams (item streams, instance modes) and springrun.exception
-- (the exception dicts); this header documents what all of them do for an
-- exported service.
--
--   local exporter = springrun.PyroServiceExporter{
--     service_name = "ServiceName", service = Service.new(),
--     service_host = "127.0.0.1", service_port = 7000,   -- defaults "localhost", 7766
--     oneway = { "log_event" },                         -- methods that get no reply
--   }
--   -- instance_mode = "session" | "percall" (default "single"), with
--   -- service_factory = function() ... end or service = springrun.ref of a
--   -- prototype-scoped definition: see "instance modes" in springrun.streams
--   exporter:after_properties_set()   -- starts exporting (the container calls it)
--   exporter:destroy()                -- stops (idempotent; the container calls it)
--
-- Properties are plain fields: set them in the constructor table, by
-- assignment (exporter.service_port = 7000), with setters
-- (exporter:set_service_port(7000)) or through a context's props. They are
-- checked by after_properties_set, which raises naming the property.
-- service_port 0 binds a free port; after after_properties_set,
-- exporter.service_port holds the port actually bound (also
-- exporter:bound_port(), nil while not exported).
--
-- service_port = {7001, 7002, 7003} exports the same service once per port
-- (copies for a pool, see springrun.pool); service_port then lists the bound
-- ports, exporter:bound_ports() too. register_with_nameserver registers each
-- copy as ns_name (default "<service_name>.{port}" for a port list, else
-- service_name; "{port}" is replaced by the bound port).
--
-- registry = "etcd://127.0.0.1:2379/services", registry_ttl = 10: the
-- service is also put in etcd (springrun.registry: key
-- "/services/<service_name>/<host>:<port>", value its PYRO: URL) under a
-- lease kept alive while exported and revoked by destroy().
--
-- Exporters on the same host:port share one listener; the first export on an
-- address starts listening (synchronously: "address in use" raises here), the
-- last destroy stops it. "localhost" means 127.0.0.1.
--
-- What a client can call: every function reachable on the service by normal
-- indexing (own fields, then the metatable's __index table chain), except
-- names starting with "_", the lifecycle methods after_properties_set and
-- destroy, and a constructor `new` found through the __index chain; or
-- exactly the `expose` list; minus the `hide` list. The metadata sent at connect time lists exactly
-- these (computed once, at export time), plus the exporter's oneway names;
-- a call to any other name (a "_" name, a metatable field such as __index or
-- __gc, a non-function field, a function added after export) is refused with
-- AttributeError. Nothing in a request is ever evaluated as code: payloads
-- are decoded as data (JSON or serpent literals only); other serializer ids
-- (pickle 4, marshal 3, dill 5, msgpack 6, cloudpickle 7 as Pyro4 numbers
-- them, unknown ids) get CONNECTFAIL naming the id at connect time, and the
-- connection is closed when a request uses one after the handshake.
--
-- Limits (per listener, i.e. per host:port; properties of the exporter):
--   max_message_size           bytes of one request (data + annotations),
--                              checked from the header before anything is
--                              allocated; default 64 MiB. Larger: the
--                              connection is closed (Pyro4 does the same).
--   max_connections            open connections; default 4096. Beyond it a
--                              client gets CONNECTFAIL "too many connections
--                              to host:port (max_connections N)".
--   send_deadline              seconds a client may take to finish a message
--                              it started (slow-loris); default 30, false: off.
--                              Past it the connection is closed.
--   handshake_timeout          seconds from accept within which a connection
--                              must complete its handshake; default 10,
--                              false: off. Past it the connection is closed.
--   idle_timeout               seconds of silence after which a connection
--                              that owes nothing is closed; default 0 (off).
--   max_queued_per_connection  replies a connection may owe before the daemon
--                              stops reading it (back-pressure, resumes at a
--                              quarter); default 1024.
--   max_queued                 requests of the listener queued for the Lua
--                              thread; past it no connection of the listener is
--                              read until half are dispatched; default 16384.
--   max_reply_bytes_per_connection  reply bytes a connection may have queued
--                              (not taken by its socket) before it is not
--                              read any more; default 8 MiB.
--   max_reply_bytes            reply bytes queued by all connections of the
--                              daemon; a reply that would pass it closes its
--                              connection; default 256 MiB.
--   max_queued_bytes           request bytes waiting for the Lua thread; as
--                              max_queued; default 64 MiB.
--   max_oneway                 oneway calls running at once (waiting for
--                              I/O); past it further ones are dropped,
--                              logged; default 8192.
--   call_timeout               seconds a call may take (a task waiting for
--                              something that never comes); past it the
--                              caller gets TimeoutError; default 0 (off).
--   max_depth, max_elements    nesting and total values of a decoded request;
--                              default 200 and 1,000,000. Beyond: the caller
--                              gets SerializeError, the connection stays.
-- Every refusal is logged (logger springrun.remoting.pyro.PyroDaemonHolder)
-- with the peer's address and the limit's name. Exporters on one host:port
-- share a listener: the first export of an address sets its limits; a later
-- exporter on it that sets a limit to another value raises (configuration
-- error naming the property and both values); one that leaves a limit unset
-- gets the listener's.
--
-- Security (see the README's "Security (TLS, handshake)"):
--   ssl                      true: every connection is TLS (OpenSSL, TLS 1.2+)
--   ssl_certfile, ssl_keyfile  the server certificate (chain) and its key,
--                            PEM (the key may be in the certificate file)
--   ssl_cacerts              CA file (or directory) that client certificates
--                            are verified against
--   ssl_require_client_cert  true: mutual TLS, a client without a certificate
--                            signed by ssl_cacerts fails the TLS handshake
--   handshake_secret         a string the client must send as its Pyro4
--                            handshake (Proxy._pyroHandshake; the proxy's
--                            handshake property); anything else gets
--                            CONNECTFAIL "authentication failed: wrong or
--                            missing handshake secret" and is closed.
--                            Checked in C on the daemon thread, in constant
--                            time.
-- Exporters sharing a host:port must agree on these. service_host defaults
-- to localhost; exporting on another address without ssl logs a warning.
--
-- Call mapping (Pyro4 INVOKE -> Lua):
--   service:method(p1, ..., pn [, kwargs])
--     params are passed positionally, null (Python None) becoming nil, with
--     holes kept (the count is the list's length, so f(1, nil, 3) sees
--     select('#', ...) == 3); a non-empty kwargs map is passed as ONE extra
--     trailing table argument (empty kwargs: nothing extra).
--   returns: no value or nil -> null; one value -> that value; several
--     values -> a JSON array of them (nil holes as null).
--   a Lua error -> exception RESULT of class builtins.RuntimeError, args
--     {message}, attributes._pyroTraceback = the Lua traceback as lines.
--     An error object {class=, message= [, args=]} whose class a Python
--     client can rebuild (builtins.X, Pyro4.errors.X) keeps its class and
--     args, unless it is a springrun.errors object of a kind other than
--     "remote" (a nested proxy call that failed locally: refused, timeout...):
--     those become RuntimeError "Pyro4.errors.TimeoutError: ..." so that the
--     caller does not take it for a failure of its own connection. The
--     connection stays usable.
--   Unknown object -> Pyro4.errors.DaemonError "unknown object"; unknown
--   method -> builtins.AttributeError "'<service_name>' object has no
--   attribute 'x'"; "_x" -> AttributeError "attempt to access private
--   attribute '_x'".
-- Each call runs in its own task coroutine (springrun.runtime), so a service
-- method may call remote services (even in this process) without blocking
-- other callers. Replies of one connection leave in request order. Calls
-- are served while luv's loop turns (the springrun CLI after the script,
-- springrun.run(), or any uv.run); the daemon thread answers connects and
-- pings even while it does not.
-- Every listener also serves Pyro.Daemon (ping, registered, info, get_metadata,
-- springrun's get_stats, get_next_stream_item, close_stream) and the "<batch>"
-- method of Pyro4 batch proxies. A method may return springrun.stream(iter):
-- see "item streams" in springrun.streams (limits max_streams_per_connection,
-- stream_lifetime, stream_linger).
--
-- Call statistics: every call is counted in its object's statistics by the
-- core's dispatch (src/lsr_serve.c, src/stats.h); exporter:stats() and
-- M.stats() (springrun.stats()) read them, Pyro.Daemon.get_stats(name)
-- serves them to clients that passed the daemon's checks (springrun inspect
-- --stats) unless the exporter sets remote_stats = false.
local core = require "springrun.core"
local runtime = require "springrun.runtime"
local errors = require "springrun.errors"
local refs = require "springrun.refs"
local daemon = require "springrun.daemon"
local streams = require "springrun.streams"

local M = {}

local err_text = require("springrun.exception").err_text
local is_private, metadata = daemon.is_private, daemon.metadata
local address, norm_host = daemon.address, daemon.norm_host
local acquire_listener, release_listener = daemon.acquire_listener, daemon.release_listener
local listeners_by_key, listeners_by_id = daemon.listeners_by_key, daemon.listeners_by_id
local ensure_handler = daemon.ensure_handler
local INSTANCE_MODES, stand_in = streams.INSTANCE_MODES, streams.stand_in
local STREAM_LIMITS, STREAM_LIMIT_NAMES = streams.LIMITS, streams.LIMIT_NAMES

local exporter_log = require("springrun.log").get("springrun.remoting.pyro.PyroServiceExporter")

-- ---- what a service exposes --------------------------------------------------------

-- Names of the functions reachable on obj (own fields, then the __index
-- table chain of metatables), minus "_" names, sorted; a map name -> the
-- function normal indexing finds under it now (the first one along the
-- chain); and the set of those found through the chain, not on obj itself.
local function exposed_methods(obj)
  local names, fns, seen, visited, inherited = {}, {}, {}, {}, {}
  local function scan(t, depth)
    if visited[t] then return end
    visited[t] = true
    if type(t) == "table" then
      for k, v in next, t do
        if type(k) == "string" and not seen[k] then
          seen[k] = true
          if type(v) == "function" and not is_private(k) then
            names[#names + 1] = k
            fns[k] = v
            if depth > 0 then inherited[k] = true end
          end
        end
      end
    end
    local mt = getmetatable(t)
    if type(mt) == "table" then
      local idx = rawget(mt, "__index")
      if type(idx) == "table" then scan(idx, depth + 1) end
    end
  end
  scan(obj, 0)
  table.sort(names)
  return names, fns, inherited
end

-- Not exposed unless listed in `expose`: the container's lifecycle methods
-- (a remote caller must not destroy the service) and a constructor `new`
-- found through the __index chain (the class's, not a method of the object).
local HIDDEN_BY_DEFAULT = { after_properties_set = true, destroy = true }

-- ---- PyroServiceExporter ---------------------------------------------------------

-- Limit properties (see "Limits" above).
local LIMIT_NAMES = { "max_message_size", "max_connections", "send_deadline", "idle_timeout",
                      "max_queued_per_connection", "max_queued", "max_depth", "max_elements",
                      "handshake_timeout", "max_reply_bytes_per_connection", "max_reply_bytes",
                      "max_queued_bytes", "max_oneway", "call_timeout" }

local PROPS = { "service_name", "service", "service_host", "service_port", "oneway",
                "register_with_nameserver", "ns_host", "ns_port", "ns_name", "expose", "hide" }
for _, n in ipairs(LIMIT_NAMES) do PROPS[#PROPS + 1] = n end
-- Security properties (see "Security" above).
local SECURITY_NAMES = { "ssl", "ssl_certfile", "ssl_keyfile", "ssl_cacerts",
                         "ssl_require_client_cert", "handshake_secret" }
for _, n in ipairs(SECURITY_NAMES) do PROPS[#PROPS + 1] = n end
-- etcd registration (springrun.registry): registry = "etcd://host:port/prefix"
PROPS[#PROPS + 1] = "registry"
PROPS[#PROPS + 1] = "registry_ttl"
-- false: Pyro.Daemon.get_stats refuses this object's statistics
PROPS[#PROPS + 1] = "remote_stats"
-- instance modes (see "instance modes" in springrun.streams)
PROPS[#PROPS + 1] = "instance_mode"
PROPS[#PROPS + 1] = "service_factory"
-- item stream limits (see "item streams" in springrun.streams)
for _, n in ipairs(STREAM_LIMIT_NAMES) do PROPS[#PROPS + 1] = n end

local Exporter = {}
local export_copies -- (below) service_port = {p1, p2, ...}
Exporter.__index = Exporter
local KNOWN_PROP = {}
for _, p in ipairs(PROPS) do KNOWN_PROP[p] = true end
-- A property that does not exist (a typo in props) raises at once, naming
-- the closest one; "_" fields are the exporter's own state.
function Exporter.__newindex(self, k, v)
  if not KNOWN_PROP[k] and not (type(k) == "string" and k:sub(1, 1) == "_") then
    error(errors.config_error(errors.unknown_property_message("PyroServiceExporter", k, PROPS)), 2)
  end
  rawset(self, k, v)
end
Exporter.__name = "springrun.PyroServiceExporter"
Exporter._disposable = true
Exporter.service_host = "localhost"
Exporter.service_port = 7766

local function who(self)
  local w = rawget(self, "_who") -- another exporter class (springrun.remoting.hessian)
  if w then return w end
  local n = rawget(self, "service_name")
  return type(n) == "string" and ("PyroServiceExporter '" .. n .. "'") or "PyroServiceExporter"
end

local function conf_error(self, fmt, ...)
  error(errors.config_error(who(self) .. ": " .. string.format(fmt, ...)), 3)
end

for _, p in ipairs(PROPS) do
  Exporter["set_" .. p] = function(self, v) self[p] = v end
end

-- The exported subset of (names, fns) by the exporter's expose / hide
-- properties and the defaults above; raises naming a bad entry.
local function select_exposed(self, names, fns, inherited)
  local function list_of(prop)
    local v = self[prop]
    if v == nil then return nil end
    if type(v) ~= "table" then conf_error(self, "%s must be a list of method names, got %s", prop, type(v)) end
    for _, m in ipairs(v) do
      if type(m) ~= "string" or not fns[m] then
        conf_error(self, "%s: '%s' is not a method of the service (names starting with '_' never are)",
          prop, tostring(m))
      end
    end
    return v
  end
  local expose, hide = list_of("expose"), list_of("hide")
  local keep = {}
  if expose then
    for _, m in ipairs(expose) do keep[m] = true end
  else
    for _, m in ipairs(names) do
      if not HIDDEN_BY_DEFAULT[m] and not (m == "new" and inherited[m]) then keep[m] = true end
    end
  end
  for _, m in ipairs(hide or {}) do keep[m] = nil end
  local out, map = {}, {}
  for _, m in ipairs(names) do
    if keep[m] then
      out[#out + 1] = m
      map[m] = fns[m]
    end
  end
  return out, map
end

local function check_port(self, v)
  local n = v
  if type(v) == "string" then n = tonumber(v) end
  if math.type(n) == "float" and n == math.floor(n) then n = math.tointeger(n) end
  if math.type(n) ~= "integer" or n < 0 or n > 65535 then
    conf_error(self, "service_port must be an integer 0..65535, got %s", tostring(v))
  end
  return n
end

-- The limit properties set on self (numbers given as strings, as a context
-- file may, converted): a table for core.daemon_listen, which checks them,
-- raising with the property's name and range (see acquire_listener's caller).
local function read_limits(self)
  local out = {}
  for _, k in ipairs(LIMIT_NAMES) do
    local v = self[k]
    if type(v) == "string" then v = tonumber(v) or v end
    out[k] = v
  end
  return out
end

-- The item stream limits of self (see springrun.streams), defaults filled
-- in, checked; and the set of those self sets.
local function read_stream_limits(self)
  local out, set = {}, {}
  for _, k in ipairs(STREAM_LIMIT_NAMES) do
    local v = self[k]
    if type(v) == "string" then v = tonumber(v) or v end
    if v == nil then
      v = STREAM_LIMITS[k]
    else
      set[k] = true
      if type(v) ~= "number" or v < 0 or v ~= v or v == math.huge
        or (k:match("^max_") and (v ~= math.floor(v) or v < 1)) then
        conf_error(self, "%s must be %s, got %s", k,
          k:match("^max_") and "an integer >= 1" or "a number of seconds >= 0", tostring(v))
      end
      if k:match("^max_") then v = math.tointeger(v) end
    end
    out[k] = v
  end
  return out, set
end

-- The security properties set on self, checked: { ssl =, key = (compares
-- the settings of exporters sharing a listener), listen = nil or the security
-- table for daemon_listen (a TLS server context made now: a missing or bad
-- file raises here, naming it) }.
local function read_security(self)
  local ssl = self.ssl
  if ssl ~= nil and type(ssl) ~= "boolean" then
    conf_error(self, "ssl must be true or false, got %s", tostring(ssl))
  end
  for _, k in ipairs({ "ssl_certfile", "ssl_keyfile", "ssl_cacerts" }) do
    local v = self[k]
    if v ~= nil then
      if type(v) ~= "string" or v == "" then conf_error(self, "%s must be a file name, got %s", k, tostring(v)) end
      if not ssl then conf_error(self, "%s is set but ssl is not true", k) end
    end
  end
  local req = self.ssl_require_client_cert
  if req ~= nil and type(req) ~= "boolean" then
    conf_error(self, "ssl_require_client_cert must be true or false, got %s", tostring(req))
  end
  if req and not ssl then conf_error(self, "ssl_require_client_cert is set but ssl is not true") end
  if ssl and not self.ssl_certfile then
    conf_error(self, "ssl = true needs ssl_certfile (the server certificate, PEM)")
  end
  if req and not self.ssl_cacerts then
    conf_error(self, "ssl_require_client_cert needs ssl_cacerts (the CA file that signed the client certificates)")
  end
  local secret = self.handshake_secret
  if secret ~= nil and (type(secret) ~= "string" or secret == "") then
    conf_error(self, "handshake_secret must be a non-empty string, got %s", type(secret))
  end
  local sec = { ssl = ssl == true,
    key = table.concat({ tostring(ssl == true), self.ssl_certfile or "", self.ssl_keyfile or "",
      self.ssl_cacerts or "", tostring(req == true), secret or "" }, "\0") }
  if ssl or secret then
    sec.listen = { handshake_secret = secret }
    if ssl then
      local ctx, cerr = core.tls_context({ server = true, certfile = self.ssl_certfile,
        keyfile = self.ssl_keyfile, cafile = self.ssl_cacerts, verify = req == true })
      if not ctx then conf_error(self, "ssl: %s", tostring(cerr)) end
      sec.listen.tls = ctx
    end
  end
  return sec
end

-- service_port = {p1, p2, ...}: the same service exported once per port
-- (one daemon each, copies of this exporter's properties); with
-- register_with_nameserver each copy registers as ns_name, default
-- "<service_name>.{port}" ({port}: the port bound). A copy that fails
-- unexports the ones started before it. service_port then lists the bound
-- ports.
export_copies = function(self)
  local ports = self.service_port
  if #ports == 0 then conf_error(self, "service_port is an empty list") end
  local copies = {}
  for i, port in ipairs(ports) do
    local c = setmetatable({}, Exporter)
    for _, k in ipairs(PROPS) do c[k] = rawget(self, k) end
    c.service_port = port
    if c.register_with_nameserver and c.ns_name == nil then c.ns_name = tostring(self.service_name) .. ".{port}" end
    local ok, e = pcall(c.after_properties_set, c)
    if not ok then
      for j = #copies, 1, -1 do copies[j]:destroy() end
      error(string.format("%s (service_port[%d] = %s)", tostring(e), i, tostring(port)), 2)
    end
    copies[i] = c
  end
  rawset(self, "_copies", copies)
  local bound = {}
  for i, c in ipairs(copies) do bound[i] = c.service_port end
  self.service_port = bound
end

-- Starts exporting; raises on a configuration problem or when the address
-- cannot be listened on (the message names host:port).
function Exporter:after_properties_set()
  if getmetatable(self) ~= Exporter then
    error("PyroServiceExporter: call after_properties_set with ':'", 2)
  end
  if rawget(self, "_export") or rawget(self, "_copies") then
    conf_error(self, "already exporting (call destroy() first)")
  end
  if type(self.service_port) == "table" then return export_copies(self) end
  local name, service = self.service_name, self.service
  if name == nil then conf_error(self, "property service_name is not set") end
  if type(name) ~= "string" or name == "" then
    conf_error(self, "service_name must be a non-empty string, got %s", tostring(name))
  end
  local mode = self.instance_mode
  if mode == nil then mode = "single" end
  if not INSTANCE_MODES[mode] then
    conf_error(self, "instance_mode must be \"single\", \"session\" or \"percall\", got %s", tostring(mode))
  end
  local factory = self.service_factory
  if factory ~= nil and type(factory) ~= "function" then
    conf_error(self, "service_factory must be a function returning the service object, got %s", type(factory))
  end
  if factory ~= nil and service ~= nil then
    conf_error(self, "set service or service_factory, not both")
  end
  if mode ~= "single" and factory == nil then
    factory = service ~= nil and require("springrun.context").factory_of(service) or nil
    if factory == nil then
      conf_error(self, "instance_mode \"%s\" needs service_factory (a function) or service = springrun.ref of a prototype-scoped definition (scope = \"prototype\")", mode)
    end
  end
  if factory ~= nil and service == nil then
    local ok, made = pcall(factory)
    if not ok then conf_error(self, "service_factory failed: %s", err_text(made)) end
    service = made
    if service == nil then conf_error(self, "service_factory returned nil") end
  end
  if service == nil then conf_error(self, "property service is not set") end
  local st = type(service)
  if st ~= "table" and st ~= "userdata" then
    conf_error(self, "service must be a table or userdata object, got %s", st)
  end
  local host = self.service_host
  if type(host) ~= "string" or host == "" then
    conf_error(self, "service_host must be a host name or address, got %s", tostring(host))
  end
  local port = check_port(self, self.service_port)
  if self.registry_ttl ~= nil and self.registry == nil then
    conf_error(self, "registry_ttl is set but registry is not")
  end
  if self.remote_stats ~= nil and type(self.remote_stats) ~= "boolean" then
    conf_error(self, "remote_stats must be true or false, got %s", tostring(self.remote_stats))
  end
  local methods, is_method = select_exposed(self, exposed_methods(service)) -- is_method: name -> function
  local oneway, oneway_set = {}, {}
  local ow = self.oneway
  if ow ~= nil then
    if type(ow) ~= "table" then conf_error(self, "oneway must be a list of method names, got %s", type(ow)) end
    for _, m in ipairs(ow) do
      if type(m) ~= "string" or not is_method[m] then
        conf_error(self, "oneway method '%s' is not a method of the service", tostring(m))
      end
      if not oneway_set[m] then
        oneway_set[m] = true
        oneway[#oneway + 1] = m
      end
    end
  end
  if #methods == 0 then
    conf_error(self, "the service exposes no methods (functions whose names do not start with '_')")
  end
  exporter_log:debug("Exporting %s as a Pyro service at %s", name, address(host, port))
  local limits = read_limits(self)
  local security = read_security(self)
  local stream_limits, stream_set = read_stream_limits(self)
  local entry = { name = name, service = service, exporter = self, meta = metadata(methods, oneway),
                  oneway = oneway_set, exposed = is_method, mode = mode, factory = factory,
                  spare = mode ~= "single" and service or nil }
  local served = mode == "single" and service or stand_in(entry)
  local connectok = { handshake = "hello", meta = entry.meta }
  local okl, d, fresh = pcall(acquire_listener, name, host, port, connectok, limits, security,
    stream_limits)
  if not okl then error(who(self) .. ": " .. tostring(d), 2) end
  if not d then
    if tostring(fresh):find("EADDRINUSE", 1, true) then
      error(errors.config_error(string.format("cannot export %s: %s is already in use", name,
        address(norm_host(host), port))), 2)
    end
    error(errors.config_error(string.format("cannot export %s: %s", name, tostring(fresh))), 2)
  end
  if not fresh then
    -- the first exporter of an address set its limits; a conflicting one is a mistake
    local set_streams = {}
    for _, k in ipairs(STREAM_LIMIT_NAMES) do
      if stream_set[k] then set_streams[#set_streams + 1] = k end
    end
    local why = daemon.shared_conflict(d,
      { { LIMIT_NAMES, limits, d.limits }, { set_streams, stream_limits, d.stream_limits } }, security,
      "ssl, ssl_certfile, ssl_keyfile, ssl_cacerts, ssl_require_client_cert, handshake_secret")
    if why then conf_error(self, "%s", why) end
    if d.objects[name] then
      conf_error(self, "service name '%s' is already exported at %s", name, d.where)
    end
    local ok, rerr = core.daemon_register(d.id, name, connectok)
    if not ok then error(who(self) .. ": cannot register: " .. tostring(rerr), 2) end
  end
  d.objects[name] = entry
  d.count = d.count + 1
  entry.stats = core.serve_register(d.id, name, served, is_method)
  entry.listener = d
  if mode == "single" then -- the object travels by reference (springrun.refs)
    local shown = d.host:find(":", 1, true) and ("[" .. d.host .. "]") or d.host
    entry.url = string.format("PYRO:%s@%s:%d", name, shown, d.port)
    refs.set(service, entry.url, entry.meta)
  end
  rawset(self, "_export", entry)
  self.service_port = d.port
  runtime._exported(1)
  if self.register_with_nameserver then
    -- register_with_nameserver (ns_host, ns_port: default localhost:9090, see
    -- springrun.naming): name -> PYRO:name@host:port; removed by destroy()
    local naming = require "springrun.naming"
    local shown = host:find(":", 1, true) and ("[" .. host .. "]") or host
    local url = string.format("PYRO:%s@%s:%d", name, shown, d.port)
    local ns = { ns_host = self.ns_host, ns_port = self.ns_port }
    entry.ns_name = tostring(self.ns_name or name):gsub("{port}", tostring(d.port))
    local nok, nerr = pcall(naming.register, entry.ns_name, url, ns)
    if not nok then
      self:destroy()
      error(who(self) .. ": cannot register with the name server: " .. tostring(nerr), 2)
    end
    entry.ns = ns
    exporter_log:debug("Registered %s as %s with the name server", entry.ns_name, url)
  end
  if self.registry ~= nil then
    local shown = host:find(":", 1, true) and ("[" .. host .. "]") or host
    local url = string.format("PYRO:%s@%s:%d", name, shown, d.port)
    local rok, reg = pcall(require("springrun.registry").register, self.registry, name, url, self.registry_ttl)
    if not rok then
      self:destroy()
      error(who(self) .. ": cannot register in " .. tostring(self.registry) .. ": " .. tostring(reg), 2)
    end
    entry.registry = reg
  end
  exporter_log:info("exporting %s at PYRO:%s@%s (methods: %s%s)", name, name, d.where,
    table.concat(methods, ", "), #oneway > 0 and ("; oneway: " .. table.concat(oneway, ", ")) or "")
end

-- Stops exporting this service (the listener closes when it was the last one
-- on its address). Idempotent.
function Exporter:destroy()
  local copies = rawget(self, "_copies")
  if copies then
    rawset(self, "_copies", nil)
    for i = #copies, 1, -1 do copies[i]:destroy() end
    return
  end
  local entry = rawget(self, "_export")
  if not entry then return end
  rawset(self, "_export", nil)
  if entry.registry then entry.registry:revoke() end
  if entry.ns then
    local nok, nerr = pcall(require("springrun.naming").remove, entry.ns_name, entry.ns)
    if not nok then
      exporter_log:warning("cannot remove %s from the name server: %s", entry.name, tostring(nerr))
    end
  end
  if entry.url then refs.clear(entry.service, entry.url) end
  if entry.sessions then streams.drop_sessions(entry) end
  local d = entry.listener
  exporter_log:debug("Unexporting %s at %s", entry.name, d.where)
  exporter_log:info("stopped exporting %s at PYRO:%s@%s", entry.name, entry.name, d.where)
  if d.objects[entry.name] == entry then
    d.objects[entry.name] = nil
    d.count = d.count - 1
    if listeners_by_id[d.id] then
      core.daemon_unregister(d.id, entry.name)
      core.serve_unregister(d.id, entry.name)
    end
  end
  runtime._exported(-1)
  release_listener(d)
end

-- The port actually listened on (a port list: the first), or nil while not exported.
function Exporter:bound_port()
  local copies = rawget(self, "_copies")
  if copies then return copies[1]:bound_port() end
  local entry = rawget(self, "_export")
  return entry and entry.listener.port or nil
end

-- The ports listened on, as a list, or nil while not exported.
function Exporter:bound_ports()
  local copies = rawget(self, "_copies")
  if not copies then return self:is_exported() and { self:bound_port() } or nil end
  local out = {}
  for i, c in ipairs(copies) do out[i] = c:bound_port() end
  return out
end

-- The number of session instances alive (instance_mode "session"; 0 for
-- the other modes): one per connection that has called, until the sweep
-- after its close.
function Exporter:session_count()
  local entry = rawget(self, "_export")
  return entry and entry.nsessions or 0
end

-- The number of item streams open on this export's listener (its
-- host:port), including those lingering after their connection closed.
function Exporter:stream_count()
  local entry = rawget(self, "_export")
  if not entry then return 0 end
  return streams.count(entry.listener)
end

-- True while exported.
function Exporter:is_exported() return rawget(self, "_export") ~= nil or rawget(self, "_copies") ~= nil end

-- The metadata sent to clients ({methods, oneway, attrs}), nil while not exported.
function Exporter:metadata()
  local entry = rawget(self, "_export")
  return entry and entry.meta or nil
end

-- The call statistics of this export (a port list: its copies as one), nil
-- while not exported: { calls, errors, in_flight, latency = { p50, p90,
-- p99, p999, max, mean } }. calls counts the calls finished (returned,
-- raised, or refused: a name not exposed, bad arguments), errors those
-- answered with an exception, in_flight those started and not finished;
-- latency in seconds, from the call's start on the Lua thread to the
-- method's return (waits inside it included), percentiles from a histogram
-- of fixed size (src/stats.h: never below the true value, at most 12.5 %
-- above it). Counted from the export on.
function Exporter:stats()
  local copies = rawget(self, "_copies")
  if copies then
    local list = {}
    for i, c in ipairs(copies) do list[i] = rawget(c, "_export").stats end
    return core.serve_stats(table.unpack(list))
  end
  local entry = rawget(self, "_export")
  return entry and core.serve_stats(entry.stats) or nil
end

-- PyroServiceExporter{...} / PyroServiceExporter.new{...} / PyroServiceExporter()
function Exporter.new(opts)
  local self = setmetatable({}, Exporter)
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("PyroServiceExporter: expected a table of properties, got " .. type(opts), 2)
    end
    for k, v in pairs(opts) do self[k] = v end
  end
  return self
end

setmetatable(Exporter, { __call = function(_, opts) return Exporter.new(opts) end })

M.PyroServiceExporter = Exporter

-- springrun.stream(...) and its test (springrun.streams)
M.stream, M.is_stream = streams.stream, streams.is_stream

-- For springrun.remoting.hessian's exporter, which serves through the same
-- dispatch (core.serve_*, the handler set here): the handler, and what a
-- service exposes by the rules above (self's expose / hide; self._who names
-- it in errors) -> names, name -> function.
M._ensure_handler = function() ensure_handler() end
M._select_exposed = function(self, service) return select_exposed(self, exposed_methods(service)) end
M._LIMIT_NAMES = LIMIT_NAMES
M._read_security = function(self) return read_security(self) end

-- Where springrun.register exports: host, port and the listener's limits of
-- the listener the running task's call came on (when it has no TLS or
-- handshake secret), else of the listener on 127.0.0.1:own_port, else nil
-- (register then opens one).
function M._registration_listener(own_port)
  local d = daemon.current_listener()
  if d and (d.security.ssl or d.security.listen) then d = nil end
  if d == nil and own_port then d = listeners_by_key["127.0.0.1:" .. own_port] end
  if d == nil then return nil end
  return d.host, d.port, d.stream_limits
end

-- Stops every export of this process (runtime shutdown).
function M.unexport_all()
  local list = {}
  for _, d in pairs(listeners_by_id) do
    for _, e in pairs(d.objects) do list[#list + 1] = e.exporter end
  end
  for _, ex in ipairs(list) do ex:destroy() end
end

-- The statistics of every object this process exports (Exporter:stats()),
-- by URL: { ["PYRO:ServiceName@127.0.0.1:7000"] = {...}, ... }.
function M.stats()
  local out = {}
  for _, d in pairs(listeners_by_id) do
    for name, e in pairs(d.objects) do out["PYRO:" .. name .. "@" .. d.where] = core.serve_stats(e.stats) end
  end
  return out
end

-- Addresses being served: list of "host:port".
function M.addresses()
  local out = {}
  for _, d in pairs(listeners_by_id) do out[#out + 1] = d.where end
  table.sort(out)
  return out
end

return M
