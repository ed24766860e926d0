-- springrun.daemon: the Lua half of the daemon -- which listener (host:port,
-- what Pyro4 calls a daemon) serves which service names, the built-in
-- Pyro.Daemon object every listener serves, and the policy of the core's
-- one dispatch path (src/lsr_serve.c): the lookup and arguments of a call,
-- "<batch>", and every answer that is not a plain result.
--
-- Apart from springrun.exporter, which is the PyroServiceExporter class
-- (properties, their checks, export and destroy), because this is what runs
-- for every call and every listener whoever exported it: the Hessian
-- exporter (springrun.remoting.hessian) serves through the same handler.
-- What a client sees of it is documented in springrun.exporter ("Call
-- mapping", "What a client can call", limits); item streams and instance
-- modes are springrun.streams, the exception dicts springrun.exception.
-- Internal: used by springrun.exporter (and, through it,
-- springrun.remoting.hessian), not an API.
local core = require "springrun.core"
local runtime = require "springrun.runtime"
local json = require "springrun.json"
local refs = require "springrun.refs"
local exc = require "springrun.exception"
local streams = require "springrun.streams"

local M = {}

local exception, to_exception = exc.exception, exc.to_exception
local pyro_error, err_text = exc.pyro_error, exc.err_text
local instance_of, is_stream, open_stream = streams.instance_of, streams.is_stream, streams.open

local FLAG_EXCEPTION, FLAG_ONEWAY, FLAG_BATCH, FLAG_ITEMSTREAMRESULT = 0x01, 0x04, 0x08, 0x20
local NULL = json.null
local DAEMON_NAME = "Pyro.Daemon"

local log_mod = require "springrun.log"
local exporter_log = log_mod.get("springrun.remoting.pyro.PyroServiceExporter")
-- the loggers keep Spring Python's names (PyroDaemonHolder was its daemon)
local daemon_log = log_mod.get("springrun.remoting.pyro.PyroDaemonHolder")
local thread_log = log_mod.get("springrun.remoting.pyro.PyroDaemonHolder._PyroThread")
-- the calls and daemon lines of HTTP listeners (springrun.remoting.hessian),
-- told by serializer core.SER_HESSIAN, log under the Hessian exporter's name
local SER_HESSIAN = core.SER_HESSIAN
local hessian_log = log_mod.get("springrun.remoting.hessian.HessianServiceExporter")
local function call_log(ser) return ser == SER_HESSIAN and hessian_log or exporter_log end
local function holder_log(ser) return ser == SER_HESSIAN and hessian_log or daemon_log end

local listeners_by_key = {} -- "127.0.0.1:7000" -> listener
local listeners_by_id = {}  -- listener id -> listener
-- listener = { id, key, host, port, where, objects = { name -> entry }, count }
-- entry  = { name, service, exporter, meta, oneway = { name -> true } }
-- (the exporter's bookkeeping; what the core calls is declared to it with
-- core.serve_register)
local listener_of = setmetatable({}, { __mode = "k" }) -- co -> listener id (serve's policy.listeners)

-- The listener the running task's call came on, or nil.
local function current_listener() return listeners_by_id[listener_of[coroutine.running()]] end

-- A name a client may never call ("_" names, metatable fields).
local function is_private(name) return name:sub(1, 1) == "_" end

-- The metadata of an object as Pyro4's get_metadata gives it.
local function metadata(methods, oneway)
  return { methods = json.array(methods), oneway = json.array(oneway), attrs = json.array({}) }
end

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
  function obj.get_next_stream_item(_, id) return streams.next_item(d, id) end
  function obj.close_stream(_, id)
    streams.close(d, id)
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

-- ---- dispatch: the policy of the core's one dispatch path ------------------------
--
-- core.serve_new (src/lsr_serve.c) finds the object registered with
-- core.serve_register, calls the method and answers; these functions are
-- what it asks Lua for: the lookup and arguments of any call its plain case
-- does not cover (prepare), "<batch>" (batch), and the building of every
-- answer that is not a plain encodable result (finish, answer, unknown,
-- refuse), with the one exception builder (springrun.exception).

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
  if ok and is_stream(value) then
    local id, why
    if flags & (FLAG_ONEWAY | FLAG_BATCH) == 0 then id, why = open_stream(current_listener(), conn, value) end
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
  -- (the end of an item stream is no failure; a refusal, object nil, was
  -- logged by the binding as "request from ... refused")
  if not ok and object ~= nil and flags & FLAG_ONEWAY == 0 and value.__class__ ~= "builtins.StopIteration" then
    log_failed_call(conn, ser, object, method, value)
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

-- Why a later exporter cannot share the listener d that the first exporter
-- at its address opened, or nil: the first one sets the limits and the
-- security of everyone there (Pyro and Hessian exporters alike). sets: a
-- list of {names, the exporter's values}, each name compared with d's
-- limits or stream_limits (a name the exporter leaves unset is no
-- conflict); what: the properties that make up security.key.
local function shared_conflict(d, sets, security, what)
  for _, set in ipairs(sets) do
    local names, want, have = set[1], set[2], set[3]
    for _, k in ipairs(names) do
      local v = want[k]
      if v ~= nil and have[k] ~= v then
        return string.format("%s = %s conflicts with %s already set for the listener at %s by the first exporter there (exporters on one address share its limits)",
          k, tostring(v), have[k] == nil and "the default" or tostring(have[k]), d.where)
      end
    end
  end
  if d.security.key ~= security.key then
    return string.format("its security settings (%s) differ from those the first exporter at %s set (exporters on one address share a listener)",
      what, d.where)
  end
end

-- A listener without TLS on an address others can reach serves anyone who
-- can reach it: said once, when it opens (Pyro and Hessian exporters alike).
local function warn_if_open(logger, name, host, port, security)
  if security.ssl or is_loopback(host) then return end
  logger:warning("%s is exported on %s without TLS: anyone who can reach that address can call it (set ssl = true with ssl_certfile and ssl_keyfile, or bind localhost)",
    name, address(host, port))
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
  warn_if_open(exporter_log, name, host, bound, security)
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

M.is_private, M.metadata = is_private, metadata
M.address, M.norm_host = address, norm_host
M.acquire_listener, M.release_listener = acquire_listener, release_listener
M.listeners_by_key, M.listeners_by_id = listeners_by_key, listeners_by_id
M.current_listener = current_listener
M.ensure_handler = ensure_handler
M.warn_if_open = warn_if_open
M.shared_conflict = shared_conflict

return M
