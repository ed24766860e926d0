-- springrun.exporter: PyroServiceExporter (Spring Python's name) and the
-- Lua half of the daemon: which listener (host:port, what Pyro4 calls a
-- daemon) serves which service names, and the dispatch of incoming calls.
--
--   local exporter = springrun.PyroServiceExporter{
--     service_name = "ServiceName", service = Service.new(),
--     service_host = "127.0.0.1", service_port = 7000,   -- defaults "localhost", 7766
--     oneway = { "log_event" },                         -- methods that get no reply
--   }
--   -- instance_mode = "session" | "percall" (default "single"), with
--   -- service_factory = function() ... end or service = springrun.ref of a
--   -- prototype-scoped definition: see "instance modes" below
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
-- see "item streams" below (limits max_streams_per_connection,
-- stream_lifetime, stream_linger).
--
-- Call statistics: every call is counted in its object's statistics by the
-- core's dispatch (src/lsr_serve.c, src/stats.h); exporter:stats() and
-- M.stats() (springrun.stats()) read them, Pyro.Daemon.get_stats(name)
-- serves them to clients that passed the daemon's checks (springrun inspect
-- --stats) unless the exporter sets remote_stats = false.
local core = require "springrun.core"
local runtime = require "springrun.runtime"
local json = require "springrun.json"
local errors = require "springrun.errors"
local refs = require "springrun.refs"

local M = {}

local luv_now = require("luv").now
local function uv_now_s() return luv_now() / 1000 end

local FLAG_EXCEPTION, FLAG_ONEWAY, FLAG_BATCH, FLAG_ITEMSTREAMRESULT = 0x01, 0x04, 0x08, 0x20
local NULL = json.null
local DAEMON_NAME = "Pyro.Daemon"

local log_mod = require "springrun.log"
local exporter_log = log_mod.get("springrun.remoting.pyro.PyroServiceExporter")
-- the loggers keep Spring Python's names (PyroDaemonHolder was its daemon)
local daemon_log = log_mod.get("springrun.remoting.pyro.PyroDaemonHolder")
local thread_log = log_mod.get("springrun.remoting.pyro.PyroDaemonHolder._PyroThread")
-- the calls and daemon lines of HTTP listeners (springrun.remoting.hessian),
-- told by serializer SR_DAEMON_SER_HESSIAN (daemon.h), log under the Hessian
-- exporter's name
local SER_HESSIAN = 100
local hessian_log = log_mod.get("springrun.remoting.hessian.HessianServiceExporter")
local function call_log(ser) return ser == SER_HESSIAN and hessian_log or exporter_log end
local function holder_log(ser) return ser == SER_HESSIAN and hessian_log or daemon_log end

local listeners_by_key = {} -- "127.0.0.1:7000" -> listener
local listeners_by_id = {}  -- listener id -> listener
-- listener = { id, key, host, port, where, objects = { name -> entry }, count }
-- entry  = { name, service, exporter, meta, oneway = { name -> true } }
-- (the exporter's bookkeeping; what the core calls is declared to it with
-- core.serve_register)

-- ---- errors raised by built-in objects --------------------------------------

local PyroExc = {} -- metatable of { class = "Pyro4.errors.X", message = "..." }

local function pyro_error(class, message)
  error(setmetatable({ class = class, message = message }, PyroExc), 0)
end

local function exception(class, message, tb_lines)
  local tb = tb_lines or { class .. ": " .. message .. "\n" }
  return {
    __class__ = class,
    __exception__ = true,
    args = json.array({ message }),
    attributes = { _pyroTraceback = json.array(tb) },
  }
end

local function err_text(e)
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if mt and mt.__tostring then
    local ok, s = pcall(tostring, e)
    if ok then return s end
  end
  if type(e) == "table" and type(e.message) == "string" then return e.message end
  return "(error object is a " .. type(e) .. " value)"
end

-- Turns an error caught in a service call into an exception dict.
local function to_exception(e, tb)
  local class, message, args = "builtins.RuntimeError", nil, nil
  if getmetatable(e) == PyroExc then
    class, message = e.class, e.message
  elseif type(e) == "table" and type(e.class) == "string" and type(e.message) == "string" then
    -- a Python class the client can rebuild travels as is, except a local
    -- failure of a nested proxy call (kind refused/timeout/closed...): a
    -- CommunicationError would make a Python client drop its own connection
    local rebuildable = e.class:match("^builtins%.[%a_][%w_]*$")
      or e.class:match("^Pyro4%.errors%.[%a_][%w_]*$")
    local kind = rawget(e, "kind")
    if rebuildable and (kind == nil or kind == "remote") then
      class, message = e.class, e.message
      if type(e.args) == "table" and #e.args > 0 then args = e.args end
    else
      message = e.class .. ": " .. e.message
    end
  else
    message = err_text(e)
  end
  local lines = { "Traceback (Lua, most recent call first):\n" }
  if tb then
    local first = true
    for line in tb:gmatch("[^\n]+") do
      if line:find("in function 'xpcall'", 1, true) then break end -- springrun's own frames follow
      if first then
        first = false -- the message itself: it closes the traceback below
      elseif line ~= "stack traceback:" then
        lines[#lines + 1] = "  " .. line:gsub("^\t", "") .. "\n"
      end
    end
  end
  lines[#lines + 1] = class:gsub("^builtins%.", "") .. ": " .. message .. "\n"
  local x = exception(class, message, lines)
  if args then x.args = json.array(args) end
  return x
end

-- ---- metadata ------------------------------------------------------------------

local function is_private(name) return name:sub(1, 1) == "_" end

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


local function metadata(methods, oneway)
  return { methods = json.array(methods), oneway = json.array(oneway), attrs = json.array({}) }
end

-- item streams (see "item streams" below): id -> { next, closing, d,
-- conn (nil: lingering), last, since }
local streams = {}
local close_stream, next_stream_item -- (below)

-- ---- the built-in Pyro.Daemon object ---------------------------------------------

local function daemon_object(d)
  local obj = {}
  function obj.ping() return nil end
  function obj.registered()
    local names = { DAEMON_NAME }
    for name in pairs(d.objects) do names[#names + 1] = name end
    table.sort(names)
    return json.array(names)
  end
  function obj.info()
    return string.format("springrun %s daemon bound on %s, %d objects registered",
      core.version, d.where, d.count + 1)
  end
  function obj.get_next_stream_item(_, id) return next_stream_item(d, id) end
  function obj.close_stream(_, id)
    local st = type(id) == "string" and streams[id]
    if st and st.d == d then close_stream(id, "close_stream") end
    return nil
  end
  function obj.get_metadata(_, object_id)
    if object_id == DAEMON_NAME then return d.daemon_meta end
    local e = d.objects[object_id]
    if e == nil then pyro_error("Pyro4.errors.DaemonError", "unknown object") end
    return e.meta
  end
  -- springrun's own: the call statistics of an object of this daemon (what
  -- Exporter:stats() returns), for `springrun inspect --stats`. A client
  -- reaches it only through the daemon's handshake and TLS checks, as any
  -- call; an exporter with remote_stats = false refuses it.
  function obj.get_stats(_, object_id)
    if object_id == DAEMON_NAME then return core.serve_stats(d.daemon_stats) end
    local e = d.objects[object_id]
    if e == nil then pyro_error("Pyro4.errors.DaemonError", "unknown object") end
    if e.exporter.remote_stats == false then
      pyro_error("Pyro4.errors.SecurityError",
        string.format("the statistics of '%s' are not exposed (remote_stats = false)", object_id))
    end
    return core.serve_stats(e.stats)
  end
  return obj
end

local DAEMON_METHODS = { "close_stream", "get_metadata", "get_next_stream_item", "get_stats", "info",
                         "ping", "registered" }

-- ---- instance modes ----------------------------------------------------------------
--
-- instance_mode = "single" (default: one service object for every call),
-- "session" (one per client connection, made at its first call, dropped
-- after the connection closed) or "percall" (a new one for each call), as
-- Pyro4's @behavior(instance_mode=...). session and percall make instances
-- with service_factory (a function returning the object), or, when service
-- comes from a context's prototype-scoped definition (service =
-- springrun.ref "id"), with that definition. The metadata is taken from one
-- instance made at export time, which then serves as the first instance.
--
-- The core serves such an export through a stand-in object whose __index
-- is a function, so its plain case never applies and every call goes
-- through prepare, which asks instance_of[stand-in] for the call's object.

local INSTANCE_MODES = { single = true, session = true, percall = true }
local instance_of = setmetatable({}, { __mode = "k" }) -- stand-in -> function() -> object

-- Session instances of connections that have closed are dropped by a sweep
-- every SWEEP_INTERVAL ms while any are held (the daemon reports no closes
-- to Lua; core.daemon_peer(conn) is nil once a connection is gone); the
-- same sweep ends item streams (below).
local SWEEP_INTERVAL = 200
local held = {}   -- entry -> true while it holds session instances
local sweep_timer
local sweep_streams -- (below)
local nstreams = 0  -- item streams open (below)

local function sweep()
  for e in pairs(held) do
    for conn in pairs(e.sessions) do
      if core.daemon_peer(conn) == nil then
        e.sessions[conn] = nil
        e.nsessions = e.nsessions - 1
        exporter_log:debug("dropped the %s instance of a closed connection", e.name)
      end
    end
    if e.nsessions == 0 then held[e] = nil end
  end
  if nstreams > 0 then sweep_streams() end
  if next(held) == nil and nstreams == 0 and sweep_timer then sweep_timer:stop() end
end

local function arm_sweep()
  if not sweep_timer then
    sweep_timer = require("luv").new_timer()
    sweep_timer:unref() -- the sweep alone does not keep the loop running
  end
  if not sweep_timer:is_active() then sweep_timer:start(SWEEP_INTERVAL, SWEEP_INTERVAL, sweep) end
end

local function hold(e)
  held[e] = true
  arm_sweep()
end

-- A new object from factory, checked.
local function new_instance(e)
  local obj = e.spare
  if obj ~= nil then -- the one made at export for the metadata: still unused
    e.spare = nil
    return obj
  end
  obj = e.factory()
  local t = type(obj)
  if t ~= "table" and t ~= "userdata" then
    error(string.format("the instance factory of %s returned a %s value, not an object", e.name, t), 0)
  end
  return obj
end

-- The stand-in the core serves for entry e (mode session or percall).
local function stand_in(e)
  local obj = setmetatable({}, { __index = function() return nil end })
  if e.mode == "percall" then
    instance_of[obj] = function() return new_instance(e) end
  else
    e.sessions, e.nsessions = {}, 0
    instance_of[obj] = function()
      local conn = runtime._serving_conn()
      if conn == nil then return new_instance(e) end
      local inst = e.sessions[conn]
      if inst == nil then
        inst = new_instance(e)
        e.sessions[conn] = inst
        e.nsessions = e.nsessions + 1
        hold(e)
      end
      return inst
    end
  end
  return obj
end

-- ---- item streams ------------------------------------------------------------------
--
-- A method that returns springrun.stream(iter) answers with Pyro4's item
-- stream: a RESULT flagged EXCEPTION|ITEMSTREAMRESULT carrying the stream id
-- (annotation STRM) and ProtocolError "result of call is an iterator"; the
-- caller then asks Pyro.Daemon's get_next_stream_item(id) for each item
-- until a StopIteration exception, or close_stream(id) when it gives up.
-- Limits (exporter properties, per listener; Pyro4's defaults):
--   max_streams_per_connection  streams one connection may hold open;
--                               default 64; past it the call answers
--                               PyroError naming the limit
--   stream_lifetime             seconds a stream may stay unasked before it
--                               is closed; default 0 (off, as Pyro4's
--                               ITER_STREAM_LIFETIME)
--   stream_linger               seconds a stream outlives its connection (a
--                               client reconnecting may go on with it);
--                               default 30 (Pyro4's ITER_STREAM_LINGER), 0:
--                               closed with the connection
-- The sweep above enforces lifetime and linger (within SWEEP_INTERVAL).

local STREAM_LIMITS = { max_streams_per_connection = 64, stream_lifetime = 0, stream_linger = 30,
                        max_registrations_per_connection = 64 }
-- (max_registrations_per_connection: springrun.register's bound, see springrun.refs)
local STREAM_LIMIT_NAMES = { "max_streams_per_connection", "stream_lifetime", "stream_linger",
                             "max_registrations_per_connection" }

local StreamMT = { __name = "springrun.stream" }

-- springrun.stream(f [, s [, c [, closing]]]) or springrun.stream(obj): what
-- a service method returns to stream its result item by item (see above).
-- f: an iterator function, called as a generic for calls it (f(s, c), the
-- first result the item and the next control value; nil ends the stream);
-- obj: a table or userdata with __call (obj() gives the next item) or
-- __pairs (its values are the items). closing (a value with __close) is
-- closed when the stream ends, however it ends.
function M.stream(f, state, control, closing)
  local t = type(f)
  local next_item
  if t == "function" then
    local ctl = control
    next_item = function()
      local v = f(state, ctl)
      ctl = v
      return v
    end
  elseif t == "table" or t == "userdata" then
    local mt = getmetatable(f)
    if type(mt) == "table" and mt.__pairs then
      local pf, ps, pc = mt.__pairs(f)
      next_item = function()
        local k, v = pf(ps, pc)
        pc = k
        if k == nil then return nil end
        return v
      end
    elseif type(mt) == "table" and mt.__call then
      next_item = function() return f() end
    end
  end
  if not next_item then
    error("springrun.stream: expected an iterator function or a table with __call or __pairs, got " .. t, 2)
  end
  return setmetatable({ next = next_item, closing = closing }, StreamMT)
end

function M.is_stream(v) return getmetatable(v) == StreamMT end

local conn_streams = {} -- conn -> number of its streams
local listener_of = setmetatable({}, { __mode = "k" }) -- co -> listener id (serve's policy.listeners)
local new_uuid -- (springrun.callctx, loaded with the first stream)

local function count_conn(conn, delta)
  if conn == nil then return end
  local n = (conn_streams[conn] or 0) + delta
  conn_streams[conn] = n > 0 and n or nil
end

close_stream = function(id, why)
  local s = streams[id]
  if not s then return end
  streams[id] = nil
  nstreams = nstreams - 1
  count_conn(s.conn, -1)
  exporter_log:debug("item stream %s closed (%s)", id, why)
  local c = s.closing
  if c ~= nil then
    local mt = getmetatable(c)
    if mt and mt.__close then
      local ok, err = pcall(mt.__close, c, nil)
      if not ok then exporter_log:warning("closing item stream %s failed: %s", id, err_text(err)) end
    end
  end
end

sweep_streams = function()
  local now = uv_now_s()
  for id, s in pairs(streams) do
    local lim = s.d.stream_limits
    if s.conn ~= nil and core.daemon_peer(s.conn) == nil then
      count_conn(s.conn, -1)
      s.conn, s.since = nil, now
      if lim.stream_linger <= 0 then close_stream(id, "its connection closed") end
    end
    if streams[id] then
      if s.conn == nil and now - s.since >= lim.stream_linger then
        close_stream(id, "stream_linger " .. lim.stream_linger .. " s after its connection closed")
      elseif lim.stream_lifetime > 0 and now - s.last >= lim.stream_lifetime then
        close_stream(id, "unused for stream_lifetime " .. lim.stream_lifetime .. " s")
      end
    end
  end
end

-- Opens a stream of value for a call on conn: its id, or nil and the error.
local function open_stream(conn, value)
  local d = listeners_by_id[listener_of[coroutine.running()]]
  if d == nil then return nil, "item streams are only served to remote calls" end
  local lim = d.stream_limits
  if (conn_streams[conn] or 0) >= lim.max_streams_per_connection then
    -- the stream is refused: its closing value is closed now
    local c = value.closing
    if c ~= nil and getmetatable(c) and getmetatable(c).__close then pcall(getmetatable(c).__close, c, nil) end
    return nil, string.format("too many open item streams on this connection (max_streams_per_connection %d)",
      lim.max_streams_per_connection)
  end
  if new_uuid == nil then
    local callctx = require "springrun.callctx"
    new_uuid = function() return callctx.uuid_text(callctx._uuid4()) end
  end
  local id = new_uuid()
  local now = uv_now_s()
  streams[id] = { next = value.next, closing = value.closing, d = d, conn = conn, last = now, since = now }
  nstreams = nstreams + 1
  count_conn(conn, 1)
  arm_sweep()
  return id
end

-- Pyro.Daemon's get_next_stream_item(id) of listener d.
next_stream_item = function(d, id)
  local s = type(id) == "string" and streams[id]
  if not s or s.d ~= d then pyro_error("Pyro4.errors.PyroError", "item stream terminated") end
  if s.conn == nil then -- lingering: the asking connection takes it over
    local conn = runtime._serving_conn()
    if conn then
      s.conn = conn
      count_conn(conn, 1)
    end
  end
  s.last = uv_now_s()
  local ok, v = pcall(s.next)
  if not ok then
    close_stream(id, "its iterator failed")
    error(v, 0)
  end
  if v == nil then
    close_stream(id, "exhausted")
    pyro_error("builtins.StopIteration", "")
  end
  s.last = uv_now_s()
  return v
end

-- ---- dispatch: the policy of the core's one dispatch path ------------------------
--
-- core.serve_new (src/lsr_serve.c) finds the object registered with
-- core.serve_register, calls the method and answers; these functions are
-- what it asks Lua for: the lookup and arguments of any call its plain case
-- does not cover (prepare), "<batch>" (batch), and the building of every
-- answer that is not a plain encodable result (finish, answer, unknown,
-- refuse), with the one exception builder above.

local unpack, select = table.unpack, select

-- The exception for a call of `method` that entry does not expose, or
-- whose value on the service is no longer a function.
local function lookup_error(entry, method)
  if entry.exposed[method] then
    -- listed, but no longer a function (or indexing raised): as unknown
  elseif type(method) ~= "string" then
    return exception("builtins.TypeError", "method name must be a string")
  elseif is_private(method) then
    return exception("builtins.AttributeError",
      "attempt to access private attribute '" .. method .. "'")
  end
  return exception("builtins.AttributeError",
    string.format("'%s' object has no attribute '%s'", entry.name, method))
end

local function traceback_handler(e)
  return { e = e, tb = debug.traceback(err_text(e), 2) }
end

local is_list = core.json_is_array -- true for decoded lists and tuples too

-- How many positional arguments a request's params carry: its length when it
-- is a list (nulls are values, so # is exact); an empty map counts as no
-- arguments (Pyro4 accepts "params": {}). A count is never read from the
-- request itself (a params map {"n": 1e15} must not drive a loop).
-- Returns n, or nil and a TypeError exception.
local function param_count(params)
  if type(params) == "table" then
    if is_list(params) then return #params end
    if next(params) == nil then return 0 end
  elseif params == nil or params == NULL then
    return 0
  end
  return nil, exception("builtins.TypeError", "params must be a list, got "
    .. (type(params) == "table" and "a map" or type(params)))
end

-- Arguments for service:fn(...): returns args table and count.
local function build_args(service, params, kwargs)
  local args = { service }
  local n, exc = param_count(params)
  if not n then return nil, exc end
  if type(kwargs) == "table" and is_list(kwargs) and next(kwargs) ~= nil then
    return nil, exception("builtins.TypeError", "kwargs must be a map, got a list")
  end
  for i = 1, n do
    local v = params[i]
    if v == NULL then v = nil end
    args[i + 1] = v
  end
  n = n + 1
  if type(kwargs) == "table" and next(kwargs) ~= nil then
    n = n + 1
    args[n] = kwargs
  end
  return args, n
end

local function index(t, k) return t[k] end

-- The function a call of `method` runs and its arguments (the service
-- first), or nil and the exception of a lookup or argument error. Only what
-- the metadata lists (computed at export) is reachable: entry.exposed maps
-- each listed name to the function it named then, and the service is
-- indexed again (normal indexing: __index functions run here) so that a
-- method replaced since is called as it is now; an indexing that raises is
-- answered as a missing method.
local function prepare(entry, method, params, kwargs)
  local service = entry.service
  local make = instance_of[service]
  if make then -- instance_mode session or percall: the instance this call runs on
    local ok, inst = pcall(make)
    if not ok then return nil, to_exception(inst) end
    service = inst
  end
  local fn = entry.exposed[method]
  if fn then
    local cached = fn
    local ok
    ok, fn = pcall(index, service, method)
    if not ok or (fn ~= cached and type(fn) ~= "function") then fn = nil end
  end
  if not fn then return nil, lookup_error(entry, method) end
  local args, n = build_args(service, params, kwargs)
  if not args then return nil, n end
  return fn, unpack(args, 1, n)
end

local function multi_result(...)
  local n = select("#", ...)
  local out = { n = n }
  for i = 1, n do
    local v = select(i, ...)
    if v == nil then v = NULL end
    out[i] = v
  end
  return json.array(out)
end

-- xpcall's results -> true, value or false, exception dict (a single
-- result travels as is, none or nil as null, several as a list).
local function call_done(ok, ...)
  if ok then
    if select("#", ...) <= 1 then
      local v = ...
      if v == nil then return true, NULL end
      return true, v
    end
    return true, multi_result(...)
  end
  local r = ...
  if type(r) == "table" and r.tb then return false, to_exception(r.e, r.tb) end
  return false, to_exception(r)
end

local serve_call -- core's call step (set below, from core.serve_new)

-- serve_call's outcome as call_done's, plus true when the lookup failed.
local function batch_item(ok, ...)
  if ok == nil then return false, (...), true end
  return call_done(ok, ...)
end

local function call_batch(entry, calls)
  if type(calls) ~= "table" then
    return false, exception("builtins.TypeError", "batch params must be a list")
  end
  local results = {}
  for i = 1, #calls do
    local c = calls[i]
    if type(c) ~= "table" then
      return false, exception("builtins.TypeError", "batch item must be a list")
    end
    local ok, v, lookup_failed = batch_item(serve_call(entry, c[1], c[2], c[3]))
    if not ok then
      if lookup_failed then return false, v end
      results[#results + 1] = { __class__ = "Pyro4.futures._ExceptionWrapper", exception = v }
      break
    end
    results[#results + 1] = v
  end
  return true, json.array(results)
end

-- The result could not be serialized: the client gets a SerializeError.
local function send_failed(conn, tag, ser, flags, object, method, err)
  local what = tostring(object) .. "." .. tostring(method)
  holder_log(ser):warning("cannot serialize the result of %s: %s", what, tostring(err))
  core.daemon_reply(conn, tag, ser, FLAG_EXCEPTION | (flags & FLAG_BATCH),
    exception("Pyro4.errors.SerializeError", "cannot serialize the result of " .. what .. ": " .. tostring(err)))
end

-- Failed calls are logged at WARNING (the traceback at DEBUG), at most
-- FAILED_LOG_BURST lines per second: a flood of failing calls cannot fill a
-- disk; the lines left out are counted in the next one written.
local FAILED_LOG_BURST = 10
local failed_window, failed_in_window, failed_dropped = -1, 0, 0
local uv_now = require("luv").now

local function log_failed_call(conn, ser, object, method, value)
  local logger = call_log(ser)
  if not logger:is_enabled_for("WARNING") then return end
  local sec = uv_now() // 1000
  if sec ~= failed_window then failed_window, failed_in_window = sec, 0 end
  failed_in_window = failed_in_window + 1
  if failed_in_window > FAILED_LOG_BURST then
    failed_dropped = failed_dropped + 1
    return
  end
  local class = tostring(type(value) == "table" and value.__class__ or "?"):gsub("^builtins%.", "")
  local msg = type(value) == "table" and type(value.args) == "table" and value.args[1]
  msg = tostring(msg or ""):match("^[^\n]*")
  local dropped = ""
  if failed_dropped > 0 then
    dropped = string.format(" (%d more failed calls not logged)", failed_dropped)
    failed_dropped = 0
  end
  logger:warning("call %s.%s from %s failed: %s: %s%s", tostring(object), tostring(method),
    core.daemon_peer(conn) or "a closed connection", class, msg, dropped)
  if logger:is_enabled_for("DEBUG") then
    local tb = type(value) == "table" and type(value.attributes) == "table"
      and value.attributes._pyroTraceback
    if type(tb) == "table" then logger:debug("%s", table.concat(tb)) end
  end
end

-- Sends a call's outcome (ok, value), or logs it for a oneway call.
local function answer(conn, tag, ser, flags, object, method, ok, value)
  if ok and getmetatable(value) == StreamMT then
    local id, why
    if flags & (FLAG_ONEWAY | FLAG_BATCH) == 0 then id, why = open_stream(conn, value) end
    if id then
      core.daemon_reply(conn, tag, ser, FLAG_EXCEPTION | FLAG_ITEMSTREAMRESULT, {
        __class__ = "Pyro4.errors.ProtocolError", __exception__ = true,
        args = json.array({ "result of call is an iterator" }),
        attributes = { _pyroTraceback = NULL } }, "STRM", id)
      return
    end
    ok, value = false, exception("Pyro4.errors.PyroError",
      why or "an item stream cannot be the result of a oneway or batched call")
  end
  if not ok and flags & FLAG_ONEWAY == 0 and value.__class__ ~= "builtins.StopIteration" then
    log_failed_call(conn, ser, object, method, value) -- (the end of an item stream is no failure)
  end
  if flags & FLAG_ONEWAY ~= 0 then
    if not ok then
      holder_log(ser):warning("oneway call %s.%s failed: %s", tostring(object), tostring(method),
        tostring(value.args and value.args[1]))
    end
    return
  end
  local rflags = flags & FLAG_BATCH
  if not ok then rflags = rflags | FLAG_EXCEPTION end
  local sent, err = core.daemon_reply(conn, tag, ser, rflags, value)
  if not sent then send_failed(conn, tag, ser, rflags, object, method, err) end
end

-- The last resort when answering failed (a bug here, a memory error): log
-- it, and answer with a RuntimeError unless the call was oneway, so the
-- replies owed after it on the same connection are not held back forever.
local function dispatch_failed(conn, tag, ser, flags, object, method, err)
  holder_log(ser):error("dispatching %s.%s failed: %s", tostring(object), tostring(method), tostring(err))
  if flags & FLAG_ONEWAY ~= 0 then return end
  pcall(core.daemon_reply, conn, tag, ser, FLAG_EXCEPTION | (flags & FLAG_BATCH),
    exception("builtins.RuntimeError", "internal error while dispatching the call: " .. tostring(err)))
end

-- f(conn, tag, ser, flags, object, method, ...) under that guard.
local function guarded(f)
  return function(conn, tag, ser, flags, object, method, ...)
    local ok, err = pcall(f, conn, tag, ser, flags, object, method, ...)
    if not ok then dispatch_failed(conn, tag, ser, flags, object, method, err) end
  end
end

local serve
serve, serve_call = core.serve_new({
  tasks = runtime._tasks,
  corrs = require("springrun.callctx")._corrs,
  listeners = listener_of,
  msgh = traceback_handler,
  prepare = prepare,
  finish = guarded(function(conn, tag, ser, flags, object, method, ...)
    return answer(conn, tag, ser, flags, object, method, call_done(...))
  end),
  answer = guarded(answer),
  unknown = guarded(function(conn, tag, ser, flags, object, method)
    return answer(conn, tag, ser, flags, object, method, false,
      exception("Pyro4.errors.DaemonError", "unknown object"))
  end),
  batch = function(entry, conn, tag, ser, flags, object, method, params)
    local ok, err = pcall(function()
      return answer(conn, tag, ser, flags, object, method, call_batch(entry, params))
    end)
    if not ok then dispatch_failed(conn, tag, ser, flags, object, method, err) end
  end,
})

-- A request refused by the binding before dispatch (undecodable, fields
-- missing): answered with the exception class: message.
local function refuse(conn, tag, ser, flags, class, message)
  return answer(conn, tag, ser, flags, nil, nil, false, exception(class, message))
end

local LEVELS = { [10] = "debug", [20] = "info", [30] = "warning", [40] = "error" }
local function on_log(level, text, ser)
  local f = LEVELS[level] or "warning"
  local logger = holder_log(ser)
  logger[f](logger, "%s", text)
end

-- Each incoming call: runtime._spawn_function(serve, listener_id, conn, ...)
-- (the task pool's spawn), called by the daemon binding directly.
local handler_set = false
local function ensure_handler()
  if not handler_set then
    core.daemon_set_handler(runtime._spawn_function, on_log, serve, refuse)
    core.daemon_set_class_hook(refs.rebuild_request)
    handler_set = true
  end
end

-- ---- listeners -------------------------------------------------------------------

-- "host:port", with an IPv6 address in brackets.
local function address(host, port)
  if host:find(":", 1, true) then return "[" .. host .. "]:" .. port end
  return host .. ":" .. port
end

local function norm_host(host)
  if host == "localhost" then return "127.0.0.1" end
  return host
end

local function is_loopback(host)
  host = host:lower()
  return host == "localhost" or host:match("^127%.%d+%.%d+%.%d+$") ~= nil or host == "::1"
    or host == "0:0:0:0:0:0:0:1"
end

-- The listener serving host:port, opened when there is none: returns d and
-- true when it was opened (then `name` with CONNECTOK value `connectok` is
-- already registered: a new listener registers its first objects before it
-- accepts anyone), or nil and the error.
local function acquire_listener(name, host, port, connectok, limits, security, stream_limits)
  local key = norm_host(host) .. ":" .. port
  local d = port ~= 0 and listeners_by_key[key] or nil
  daemon_log:debug("Registering %s at %s with the Pyro server", name, address(host, port))
  if d then return d, false end
  daemon_log:debug("Pyro thread needs to be started at %s", address(host, port))
  ensure_handler()
  thread_log:debug("Starting up Pyro server thread for %s", address(host, port))
  d = { host = host, objects = {}, count = 0, daemon_meta = metadata(DAEMON_METHODS, {}) }
  d.limits = limits
  d.stream_limits = stream_limits
  d.security = security
  local id, bound = core.daemon_listen(host, port, {
    { DAEMON_NAME, { handshake = "hello", meta = d.daemon_meta } },
    { name, connectok },
  }, limits, security.listen)
  if not id then return nil, bound end
  if not security.ssl and not is_loopback(host) then
    exporter_log:warning("%s is exported on %s without TLS: anyone who can reach that address can call it (set ssl = true with ssl_certfile and ssl_keyfile, or bind localhost)",
      name, address(host, bound))
  end
  d.id, d.port = id, bound
  d.key, d.where = norm_host(host) .. ":" .. bound, address(host, bound)
  listeners_by_key[d.key] = d
  listeners_by_id[id] = d
  local dobj = daemon_object(d)
  local dexposed = {}
  for _, m in ipairs(DAEMON_METHODS) do dexposed[m] = dobj[m] end
  -- served from the same Lua turn as the listen: no request is dispatched
  -- before (events are handled when the loop runs)
  d.daemon_stats = core.serve_register(id, DAEMON_NAME, dobj, dexposed)
  return d, true
end

local function release_listener(d)
  if d.count > 0 then return end
  listeners_by_key[d.key] = nil
  listeners_by_id[d.id] = nil
  daemon_log:debug("Stopping the Pyro server at %s", d.where)
  core.daemon_unlisten(d.id)
  core.serve_unregister(d.id)
end

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
-- instance modes (see "instance modes" above)
PROPS[#PROPS + 1] = "instance_mode"
PROPS[#PROPS + 1] = "service_factory"
-- item stream limits (see "item streams" above)
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

-- The item stream limits of self (see "item streams"), defaults filled
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
    for _, k in ipairs(LIMIT_NAMES) do
      local v = limits[k]
      if v ~= nil and d.limits[k] ~= v then
        conf_error(self, "%s = %s conflicts with %s already set for the listener at %s by the first exporter there (exporters on one address share its limits)",
          k, tostring(v), d.limits[k] == nil and "the default" or tostring(d.limits[k]), d.where)
      end
    end
    for k in pairs(stream_set) do
      if d.stream_limits[k] ~= stream_limits[k] then
        conf_error(self, "%s = %s conflicts with %s already set for the listener at %s by the first exporter there (exporters on one address share its limits)",
          k, tostring(stream_limits[k]), tostring(d.stream_limits[k]), d.where)
      end
    end
    if d.security.key ~= security.key then
      conf_error(self, "its security settings (ssl, ssl_certfile, ssl_keyfile, ssl_cacerts, ssl_require_client_cert, handshake_secret) differ from those the first exporter at %s set (exporters on one address share a listener)",
        d.where)
    end
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
  if entry.sessions then
    held[entry] = nil
    entry.sessions, entry.nsessions = {}, 0
  end
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
  local n = 0
  for _, st in pairs(streams) do
    if st.d == entry.listener then n = n + 1 end
  end
  return n
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
  local d = listeners_by_id[listener_of[coroutine.running()]]
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
