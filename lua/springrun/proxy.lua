-- springrun.proxy: PyroProxyFactory, the client side of Pyro remoting, under
-- Spring Python's name (springpython.remoting.pyro.PyroProxyFactory).
--
--   local svc = springrun.PyroProxyFactory { service_url = "PYRO:ServiceName@127.0.0.1:7000" }
--   svc:get_data("Hello")                                 --> "You got remote data => Hello"
--   local svc = springrun.proxy("PYROLOC://127.0.0.1:7000/ServiceName", { timeout = 5 })
--
-- The factory IS the proxy: any name that is not one of its own (below) is a
-- remote method, called with ':' (svc:name(args...)).
--
-- Properties (constructor table, field assignment, set_<name>(v), or a
-- context's props):
--   service_url  PYRO:name@host:port or PYROLOC://host:port/name (see
--                springrun.uri); checked when set, a bad URL raises naming it.
--                PYRONAME:name[@nshost[:nsport]] and PYROMETA:m1,m2[@...] are
--                resolved through a name server (springrun.naming.resolve)
--                each time a new connection is made
--   timeout      seconds (number > 0) bounding the connect + handshake and each
--                call; nil/false/0 = no limit (the default, as in Pyro4)
--   serializer   "json" (default) or "serpent"
--   handshake    the value sent in the CONNECT handshake (Pyro4's
--                _pyroHandshake; default "hello"): the shared secret of an
--                exporter with handshake_secret, or whatever a Python
--                daemon's validateHandshake expects (any serializable value)
--   max_connections  how many connections the proxy keeps at most (an
--                integer, default 16): tasks sharing the proxy each take one
--                of their own (a connection carries one request at a time,
--                and a Python Pyro4 daemon serves one connection's requests
--                one after the other), made when needed and kept; past the
--                bound a task waits for one to be free. A blocking call uses
--                the first
--   ssl          true: TLS (OpenSSL, 1.2+), as Pyro4's SSL=True
--   ssl_cacerts  CA file (or directory) the server certificate must chain to
--                (default: the system's CA store)
--   ssl_certfile, ssl_keyfile  a client certificate and key (PEM) for
--                mutual TLS (Pyro4's SSL_CLIENTCERT / SSL_CLIENTKEY)
--   ssl_servername  the name or IP address the server certificate must
--                carry (default: the URL's host); checked unless
--                ssl_verify = false (tests only: no verification at all)
-- Local names (never sent): the properties, async (a remote method of that
-- name: _pyro_call("async", ...)), set_service_url, set_timeout,
-- set_serializer, after_properties_set (checks the URL; the connection is
-- made lazily at the first call), destroy (closes the connection; a later
-- call reconnects), _disposable (true: contexts call destroy on close), and
-- helpers that start with '_': _pyro_call(name, ...) calls a remote method
-- whose name is taken by a local one, _pyro_bind() connects now,
-- _pyro_release() closes the connection, _pyro_ping() sends Pyro's wire
-- PING (true when the daemon answers), _pyro_metadata() -> { methods =,
-- oneway =, attrs = } (sets), and the field _pyro_seq (Pyro4's _pyroSeq:
-- the last sequence number used, 0..65535, settable), _pyro_batch() (a
-- batch: calls recorded, then sent as one request) and _pyro_async([on])
-- (remote calls return futures), both under Pyro4's names too (below,
-- "Pyro4's asynchronous proxies and batches"). Other names starting with
-- '_' are nil: Pyro never exposes them.
--
-- Calls
--   * Connect lazily at the first call: CONNECT with META_ON_CONNECT and
--     handshake "hello"; the metadata tells which names exist and which are
--     oneway. An unknown name fails locally (errors kind "attribute":
--     "remote object 'PYRO:x@h:p' has no exposed attribute or method 'y'");
--     a oneway method is sent with FLAGS_ONEWAY and returns nothing at once.
--   * Pipelining: the metadata of each service (host, port, object) is
--     remembered by the process. A later new connection whose first call
--     is to a method in it sends the CONNECT and that INVOKE in one write
--     and reads CONNECTOK then the RESULT (one round trip instead of two);
--     a rejected handshake raises as it would otherwise (the call is not
--     reported), and the new metadata replaces the remembered one. TLS and
--     PYRONAME connections too; the first connection to a service, and a
--     method not in the remembered metadata, handshake first.
--     springrun.proxy.stats() -> { connections =, pipelined =, fast = }
--     counts them (fast: calls sent in one C step, see below).
--   * The connection is kept. Before each request an idle connection is
--     checked; when the server went away (restart) a new one is made, since
--     the request was not sent yet. A connection that breaks once a request
--     is out raises (kind "closed") and is discarded; the next call
--     reconnects. Sequence numbers as Pyro4: the first INVOKE is 1, wrapping
--     at 65536; a reply with another number is a protocol error.
--   * Outside a springrun task (plain script, REPL) a call blocks on its
--     socket in C. Inside a task (springrun.runtime.current() ~= nil: a
--     service method, a spawned task) it uses luv and yields to the loop.
--     Outside a task while this process exports services, the call runs as a
--     task and the loop is turned until it completes, so calling a service
--     exported by the same process cannot deadlock. On the blocking
--     connection a JSON call that expects a reply is one step in C
--     (conn:invoke: encode, send, receive, and decode a plain result), and
--     so is such a call as the first of a new connection to a service whose
--     metadata is remembered (conn:connect_invoke: CONNECT and the call in
--     one write); every other reply is judged in Lua, so results and errors
--     are the same however a call travels. Calls from several tasks on one
--     proxy run side by side, each on a connection of its own (up to
--     max_connections; one request at a time per connection).
--   * proxy:async("m", ...) starts the call and returns a future
--     (springrun.future; springrun.async(proxy, { timeout = s }):m(...) with
--     a deadline of its own); after proxy:_pyroAsync() every remote call
--     does.
--   * A batch (proxy:_pyroBatch()) is one request through the same
--     pipeline (sequence number, reply checks, retry when not sent, errors):
--     the INVOKE of "<batch>" with FLAGS_BATCH, on a handshaken connection
--     (never pipelined with the CONNECT).
--   * Errors are always springrun.errors objects (nil is a legal result):
--     kind "remote" for an exception raised by the service (class, message,
--     args, remote_traceback), "refused"/"connect"/"rejected"/"timeout"/
--     "closed"/"protocol" for communication, "serialize" for an argument that
--     cannot be sent, "attribute" and "config" for local misuse. A timeout
--     discards the connection.
--
-- Values (Lua <-> Pyro4 JSON, see springrun.json for the details)
--   arguments    svc:m(a, b, c) sends params [a, b, c]: positional, in order,
--                with nil holes kept as null (json.array(table.pack(...))), so
--                svc:m(nil, 2, nil) sends [null, 2, null]; kwargs is always {}.
--                Tables with 1..n keys go as lists, string-keyed tables as maps;
--                an empty table is {} (use springrun.json.array{} for []).
--   result       the decoded return value. A top-level null (Python None) is
--                nil; nulls nested in lists/maps are springrun.null, so holes
--                survive. Lists come back as Lua sequences (1-based), maps as
--                tables, integers as integers, floats as floats. One value:
--                what the server sends for several Lua results (a list) is
--                returned as that one list.
local errors = require "springrun.errors"
local uri = require "springrun.uri"
local session = require "springrun.session"

local M = {}

local SERIALIZERS = session.SERIALIZERS
local close_conn, tls_context, call = session.close, session.tls_context, session.call

local get_core = require("springrun.lazy").loader "springrun.core"

-- ---- the PyroProxyFactory class --------------------------------------------------------

local STATE = setmetatable({}, { __mode = "k" }) -- proxy -> state

local PROPS = { service_url = true, timeout = true, serializer = true, handshake = true,
  max_connections = true, ssl = true, ssl_cacerts = true, ssl_certfile = true, ssl_keyfile = true, ssl_servername = true,
  ssl_verify = true }
local PROP_NAMES = { "service_url", "timeout", "serializer", "handshake", "ssl", "ssl_cacerts",
  "ssl_certfile", "ssl_keyfile", "ssl_servername", "ssl_verify", "max_connections" }

local function check_state(self, what)
  local st = STATE[self]
  if st == nil then
    error(string.format("PyroProxyFactory: %s needs a proxy object (call it with ':')", what), 3)
  end
  return st
end

local setters = {}

-- PYRO:/PYROLOC: URLs parsed before (a proxy per connection parses the same
-- URL over and over); the parsed tables are shared and never modified.
local parsed_urls, nparsed = {}, 0

function setters.service_url(st, v)
  st.named = nil
  local known = parsed_urls[v]
  if known then
    st.service_url, st.url, st.uri = v, known.original, known
  elseif v == nil then
    st.service_url, st.url, st.uri = nil, nil, nil
  elseif type(v) == "string" and (v:match("^[Pp][Yy][Rr][Oo][Nn][Aa][Mm][Ee]:")
      or v:match("^[Pp][Yy][Rr][Oo][Mm][Ee][Tt][Aa]:")) then
    -- PYRONAME:/PYROMETA: (springrun.naming): checked now, resolved through
    -- the name server each time a new connection is made (as Pyro4 does)
    local nu, nwhy = require("springrun.naming").parse_uri(v)
    if not nu then
      error(errors.new("config", string.format("PyroProxyFactory.service_url: invalid Pyro URL '%s': %s",
        v, nwhy), { url = v }), 3)
    end
    st.service_url, st.url, st.named = v, v, v
    st.uri = { protocol = nu.protocol, object = tostring(nu.object), host = nu.host or "localhost",
      port = nu.port or 9090, url = v, original = v }
  else
    local u, why = parsed_urls[v], nil
    if u == nil then
      u, why = uri.parse(v)
      if not u then error(errors.new("config", "PyroProxyFactory.service_url: " .. why, { url = v }), 3) end
      if nparsed >= 64 then parsed_urls, nparsed = {}, 0 end
      parsed_urls[v], nparsed = u, nparsed + 1
    end
    st.service_url, st.url, st.uri = v, u.original, u
  end
  close_conn(st)
  st.meta = nil
end

function setters.timeout(st, v)
  if v == nil or v == false or v == 0 then
    st.timeout = nil
  elseif type(v) == "number" and v > 0 and v == v and v ~= math.huge then
    st.timeout = v
  else
    error(errors.new("config", string.format(
      "PyroProxyFactory.timeout: expected seconds (a positive number) or nil, got %s", tostring(v))), 3)
  end
end

function setters.serializer(st, v)
  local id = SERIALIZERS[v]
  if not id then
    error(errors.new("config", string.format(
      "PyroProxyFactory.serializer: expected \"json\" or \"serpent\", got %s", tostring(v))), 3)
  end
  if id ~= st.ser then close_conn(st) end
  st.serializer, st.ser = v, id
end

function setters.max_connections(st, v)
  if v == nil then
    st.max_connections = nil
  elseif math.type(v) == "integer" and v >= 1 and v <= 1024 then
    st.max_connections = v
  else
    error(errors.new("config", string.format(
      "PyroProxyFactory.max_connections: expected an integer from 1 to 1024, got %s", tostring(v))), 3)
  end
end

function setters.handshake(st, v)
  if type(v) == "function" or type(v) == "thread" or type(v) == "userdata" then
    error(errors.new("config", string.format(
      "PyroProxyFactory.handshake: expected a value that can be serialized, got %s", type(v))), 3)
  end
  st.handshake = v
  close_conn(st)
end

-- A setter for a TLS property: checks the value, drops the TLS context and
-- the connection so the next call uses the new setting.
local function tls_setter(name, valid, expected)
  return function(st, v)
    if v ~= nil and not valid(v) then
      error(errors.new("config", string.format("PyroProxyFactory.%s: expected %s, got %s",
        name, expected, tostring(v))), 3)
    end
    st[name] = v
    st.tls_ctx = nil
    close_conn(st)
  end
end

local function is_bool(v) return type(v) == "boolean" end
local function is_file(v) return type(v) == "string" and v ~= "" end
local function bool_setter(name) return tls_setter(name, is_bool, "true or false") end
local function file_setter(name) return tls_setter(name, is_file, "a file name") end

setters.ssl = bool_setter("ssl")
setters.ssl_verify = bool_setter("ssl_verify")
setters.ssl_cacerts = file_setter("ssl_cacerts")
setters.ssl_certfile = file_setter("ssl_certfile")
setters.ssl_keyfile = file_setter("ssl_keyfile")
setters.ssl_servername = file_setter("ssl_servername")

local methods = {}

local SSL_FILES = { "ssl_cacerts", "ssl_certfile", "ssl_keyfile", "ssl_servername" }

local function check_properties(st)
  if st.uri == nil then
    error(errors.new("config", "PyroProxyFactory: service_url is not set"), 3)
  end
  if st.ssl then
    local ok, e = pcall(tls_context, st)
    if not ok then error(e, 3) end
  elseif st.ssl_cacerts ~= nil or st.ssl_certfile ~= nil or st.ssl_keyfile ~= nil
      or st.ssl_servername ~= nil then
    for i = 1, #SSL_FILES do
      local k = SSL_FILES[i]
      if st[k] ~= nil then
        error(errors.new("config", string.format("PyroProxyFactory.%s is set but ssl is not true", k)), 3)
      end
    end
  end
end

function methods.after_properties_set(self)
  check_properties(check_state(self, "after_properties_set"))
end

function methods.destroy(self)
  local st = check_state(self, "destroy")
  close_conn(st)
  st.meta = nil
end

function methods.set_service_url(self, v) setters.service_url(check_state(self, "set_service_url"), v) end
function methods.set_timeout(self, v) setters.timeout(check_state(self, "set_timeout"), v) end
function methods.set_serializer(self, v) setters.serializer(check_state(self, "set_serializer"), v) end
for _, k in ipairs({ "handshake", "max_connections", "ssl", "ssl_verify", "ssl_cacerts", "ssl_certfile", "ssl_keyfile",
    "ssl_servername" }) do
  methods["set_" .. k] = function(self, v) setters[k](check_state(self, "set_" .. k), v) end
end

local get_future = require("springrun.lazy").loader "springrun.future"

function methods._pyro_call(self, name, ...)
  local st = check_state(self, "_pyro_call")
  if type(name) ~= "string" then
    error(errors.new("config", "PyroProxyFactory:_pyro_call: the method name must be a string"), 2)
  end
  if st.async then return get_future()._call(self, nil, name, ...) end
  return call(st, name, ...)
end

-- proxy:async("m", ...) -> a future of the call m(...) (springrun.future)
function methods.async(self, name, ...)
  check_state(self, "async")
  if type(name) ~= "string" then
    error(errors.new("config", "PyroProxyFactory:async: the method name must be a string"), 2)
  end
  return get_future()._call(self, nil, name, ...)
end

function methods._pyro_bind(self)
  local st = check_state(self, "_pyro_bind")
  if st.uri == nil then error(errors.new("config", "PyroProxyFactory: service_url is not set"), 2) end
  session.bind(st)
  return true
end

-- Pyro's wire PING (type 6, serializer 42, "ping") on the proxy's
-- connection (made first when there is none), answered by the daemon
-- without running any service code: true, or raises as a call would.
function methods._pyro_ping(self)
  local st = check_state(self, "_pyro_ping")
  if st.uri == nil then error(errors.new("config", "PyroProxyFactory: service_url is not set"), 2) end
  return session.ping(st)
end

function methods._pyro_release(self)
  close_conn(check_state(self, "_pyro_release"))
end

function methods._pyro_metadata(self)
  local st = check_state(self, "_pyro_metadata")
  if st.meta == nil then methods._pyro_bind(self) end
  return st.meta
end

-- Pyro4's spellings next to the Lua ones (Pyro4.core.Proxy): the methods
-- _pyroBind, _pyroRelease, _pyroReconnect, _pyroGetMetadata, _pyroAsync,
-- _pyroBatch (below), and the fields
-- _pyroTimeout, _pyroHandshake, _pyroSerializer (the properties timeout,
-- handshake, serializer), _pyroSeq, _pyroUri (the URL, read only) and
-- _pyroMethods, _pyroOneway, _pyroAttrs (sets from the metadata, empty until
-- the proxy has connected), read only.
methods._pyroBind = methods._pyro_bind
methods._pyroRelease = methods._pyro_release
methods._pyroGetMetadata = methods._pyro_metadata
function methods._pyroReconnect(self)
  methods._pyro_release(self)
  return methods._pyro_bind(self)
end

-- ---- Pyro4's asynchronous proxies and batches ------------------------------------------
--
-- proxy:_pyroAsync([on]) (Pyro4's _pyroAsync(asynchronous=True)): on (the
-- default) makes every remote method call of this proxy (proxy:m(...),
-- _pyro_call) return a springrun.future of it instead of its result;
-- false switches back. The proxy itself changes, as in Pyro4: every user
-- of it (a context hands out one proxy per definition) gets futures.
-- proxy:async("m", ...) and springrun.async(proxy) give futures whatever
-- the mode; a batch is sent as the batch says (not by the mode).
function methods._pyroAsync(self, on)
  local st = check_state(self, "_pyroAsync")
  if on ~= nil and type(on) ~= "boolean" then
    error(errors.new("config", "PyroProxyFactory:_pyroAsync: expected true, false or nothing, got "
      .. type(on)), 2)
  end
  st.async = on ~= false
end
methods._pyro_async = methods._pyroAsync

-- proxy:_pyroBatch() (Pyro4's _pyroBatch(), Pyro4.batch(proxy)): a batch
-- of calls on this proxy. b:m(...) records the call m(...) (any name not
-- starting with '_'; nothing is sent, nothing returned; #b counts them),
-- b([opts]) sends the recorded calls as ONE request (the Pyro4 batch
-- message: INVOKE of "<batch>" with FLAGS_BATCH) through the proxy's call
-- pipeline, and the batch is empty again:
--   b()                 -> an iterator of the results in order (see
--                          springrun.session's BatchResults): for r in b() do
--   b{ oneway = true }  -> nothing: sent with FLAGS_ONEWAY too, no reply
--   b{ async = true }   -> a springrun.future whose result is that iterator
--                          (asynchronous = true, Pyro4's keyword, too)
local Batch = { __name = "springrun.BatchProxy" } -- [1] the proxy, [2] the recorded calls
local BATCH_OPTIONS = { "oneway", "async", "asynchronous" }

function methods._pyroBatch(self)
  check_state(self, "_pyroBatch")
  return setmetatable({ self, {} }, Batch)
end
methods._pyro_batch = methods._pyroBatch

-- The recorder of b:name(...), one per name, shared by all batches.
local recorders, nrecorders = {}, 0

local function recorder(name)
  local f = recorders[name]
  if f then return f end
  f = function(b, ...)
    if getmetatable(b) ~= Batch then
      error(errors.new("config", string.format("batch: record calls with ':' (batch:%s(...))", name)), 2)
    end
    local calls = rawget(b, 2)
    calls[#calls + 1] = session.batch_entry(name, ...)
  end
  if nrecorders >= 1024 then recorders, nrecorders = {}, 0 end
  recorders[name], nrecorders = f, nrecorders + 1
  return f
end

function Batch.__index(_, name)
  if type(name) ~= "string" or name:sub(1, 1) == "_" then return nil end
  return recorder(name)
end

function Batch.__newindex(_, name)
  error(errors.new("config", string.format("batch: cannot set '%s' (record calls with batch:%s(...))",
    tostring(name), tostring(name))), 2)
end

function Batch.__len(b) return #rawget(b, 2) end

function Batch.__tostring(b)
  return string.format("springrun.BatchProxy(%d calls to %s)", #rawget(b, 2), STATE[rawget(b, 1)].url)
end

function Batch.__call(b, opts)
  local oneway, async = false, false
  if opts ~= nil then
    if type(opts) ~= "table" then
      error(errors.new("config", "batch: expected a table of options (oneway, async), got " .. type(opts)), 2)
    end
    for k, v in pairs(opts) do
      if k ~= "oneway" and k ~= "async" and k ~= "asynchronous" then
        local near = errors.closest(tostring(k), BATCH_OPTIONS)
        error(errors.new("config", string.format("batch: unknown option '%s' (%s)", tostring(k),
          near and ("did you mean '" .. near .. "'?") or "options: oneway, async, asynchronous")), 2)
      end
      if type(v) ~= "boolean" then
        error(errors.new("config", string.format("batch: option %s must be true or false, got %s", k, type(v))), 2)
      end
    end
    oneway, async = opts.oneway == true, opts.async == true or opts.asynchronous == true
    if oneway and async then
      -- Pyro4: "async oneway calls make no sense"
      error(errors.new("config", "batch: oneway and async together make no sense (a oneway batch has no result)"), 2)
    end
  end
  local p = rawget(b, 1)
  local calls = rawget(b, 2)
  calls.n = #calls
  -- the recorded calls go out once (as Pyro4 clears them): b can record anew
  rawset(b, 2, {})
  if async then
    return get_future()._start(string.format("batch of %d calls to %s", calls.n, STATE[p].url),
      function(co) return session.task_batch(STATE[p], co, nil, calls, false) end)
  end
  return session.batch(STATE[p], calls, oneway)
end

local PYRO4_PROPS = { _pyroTimeout = "timeout", _pyroHandshake = "handshake", _pyroSerializer = "serializer" }
local PYRO4_META = { _pyroMethods = "methods", _pyroOneway = "oneway", _pyroAttrs = "attrs" }

local Proxy = { __name = "springrun.PyroProxyFactory" }

-- The function a proxy returns for a remote method name, one per name and
-- shared by all proxies (only names that are no property or method are
-- here): it finds the proxy's state from its first argument, so a call
-- without ':' is refused.
local callers, ncallers = {}, 0

local function caller(name)
  local f = function(me, ...)
    local st = STATE[me]
    if st == nil then
      error(errors.new("config", string.format(
        "PyroProxyFactory: call remote methods with ':' (proxy:%s(...))", name)), 2)
    end
    if st.async then return get_future()._call(me, nil, name, ...) end
    return call(st, name, ...)
  end
  if ncallers >= 1024 then callers, ncallers = {}, 0 end
  callers[name], ncallers = f, ncallers + 1
  return f
end

function Proxy.__index(self, name)
  local f = callers[name]
  if f then return f end
  if PROPS[name] then return STATE[self][name] end
  local m = methods[name]
  if m then return m end
  if name == "_disposable" then return true end
  if name == "_pyro_seq" or name == "_pyroSeq" then return STATE[self].seq end
  if PYRO4_PROPS[name] then return STATE[self][PYRO4_PROPS[name]] end
  if PYRO4_META[name] then
    local meta = STATE[self].meta
    return meta and meta[PYRO4_META[name]] or {}
  end
  if name == "_pyroUri" then return STATE[self].url end
  if type(name) ~= "string" or name:sub(1, 1) == "_" then return nil end
  return caller(name)
end

function Proxy.__newindex(self, name, v)
  local st = STATE[self]
  if PROPS[name] then
    setters[name](st, v)
    return
  end
  if (name == "_pyro_seq" or name == "_pyroSeq") and math.type(v) == "integer" and v >= 0 and v <= 0xFFFF then
    st.seq = v
    return
  end
  if PYRO4_PROPS[name] then
    setters[PYRO4_PROPS[name]](st, v)
    return
  end
  error(errors.new("config", errors.unknown_property_message("PyroProxyFactory", name, PROP_NAMES)), 2)
end

function Proxy.__tostring(self)
  local st = STATE[self]
  return string.format("PyroProxyFactory(%s)", st and st.url or "no service_url")
end

function Proxy.__close(self)
  local st = STATE[self]
  if st then close_conn(st) end
end

Proxy.__gc = Proxy.__close

local PyroProxyFactory = { __name = "springrun.PyroProxyFactory (class)" }

-- The order properties given to new() are applied in (service_url last).
local PROP_ORDER = { "serializer", "timeout", "handshake", "max_connections", "ssl", "ssl_verify", "ssl_cacerts",
  "ssl_certfile", "ssl_keyfile", "ssl_servername", "service_url" }

local function new_proxy()
  -- every field a proxy's state gets, so the table is sized once (nil
  -- fields size the constructor too) instead of growing three times
  local st = { seq = 0, ser = SERIALIZERS.json, serializer = "json", service_url = nil, url = nil,
    uri = nil, named = nil, meta = nil, conn = nil, busy = false, timeout = nil,
    max_connections = nil, lanes = nil, waiters = nil, async = false }
  local self = setmetatable({}, Proxy)
  STATE[self] = st
  return self, st
end

-- Applies the properties table props to a new proxy's state, in PROP_ORDER
-- (an unknown key raises first); the service_url in props is skipped when
-- skip_url is set (springrun.proxy's own argument wins).
local function apply(st, props, skip_url)
  local n, one = 0, nil
  for k in pairs(props) do
    if not PROPS[k] then
      error(errors.new("config", errors.unknown_property_message("PyroProxyFactory", k, PROP_NAMES)), 3)
    end
    n, one = n + 1, k
  end
  if n == 1 then
    -- the common case (one option): no walk over every property
    if not (skip_url and one == "service_url") then setters[one](st, props[one]) end
  elseif n > 1 then
    for i = 1, #PROP_ORDER do
      local k = PROP_ORDER[i]
      if props[k] ~= nil and not (skip_url and k == "service_url") then setters[k](st, props[k]) end
    end
  end
end

-- PyroProxyFactory([props]) / PyroProxyFactory.new([props]) -> proxy.
-- props: service_url, timeout, serializer; other keys raise.
function PyroProxyFactory.new(props)
  local self, st = new_proxy()
  if props ~= nil then
    if type(props) ~= "table" then
      error(errors.new("config", "PyroProxyFactory: expected a table of properties, got " .. type(props)), 2)
    end
    apply(st, props, false)
  end
  return self
end

setmetatable(PyroProxyFactory, {
  __call = function(_, props) return PyroProxyFactory.new(props) end,
})

M.PyroProxyFactory = PyroProxyFactory

-- springrun.proxy(url [, opts]) -> a ready proxy (opts: timeout, serializer).
function M.proxy(url, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(errors.new("config", "springrun.proxy: opts must be a table, got " .. type(opts)), 2)
  end
  if url == nil then error(errors.new("config", "springrun.proxy: a URL is needed"), 2) end
  local p, st = new_proxy()
  if opts ~= nil then apply(st, opts, true) end
  setters.service_url(st, url)
  check_properties(st)
  return p
end

-- Counters of this process's proxy connections (tests, benchmarks):
-- { connections = made, pipelined = those whose first call went out with
-- the CONNECT (whether the handshake then succeeded or not) }.
-- springrun.kwargs(t): t's fields, as a new table, to pass as the last
-- argument of a proxy call: they are sent as the call's keyword arguments
-- (Pyro4's **kwargs; a springrun service gets them as one trailing table).
-- Names must be strings.
function M.kwargs(t)
  if type(t) ~= "table" then
    error("springrun.kwargs: expected a table of keyword arguments, got " .. type(t), 2)
  end
  local kw = {}
  for k, v in pairs(t) do
    if type(k) ~= "string" then
      error(string.format("springrun.kwargs: keyword names must be strings, got %s %s", type(k),
        tostring(k)), 2)
    end
    kw[k] = v
  end
  return setmetatable(kw, get_core().kwargs_mt)
end

M.stats = session.stats

-- The call name(...) on proxy p from the task co with the deadline timeout
-- (nil: the proxy's): springrun.future's calls.
function M._task_call(p, co, timeout, name, ...)
  return session.task_call(STATE[p], co, timeout, name, ...)
end

-- True when v is a proxy made here.
function M.is_proxy(v) return STATE[v] ~= nil end

return M
