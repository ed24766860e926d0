-- springrun.session: what a proxy does on the wire, over either connection
-- kind (springrun.transport): connecting, the handshake and the metadata
-- it brings (remembered per service, so that a later connection sends its
-- first call with the CONNECT: pipelining), and the calls themselves: the
-- execution mode (task, pumped, blocking), sequence numbers, the reply's
-- meaning and the errors. The state it works on is a proxy's (st, see
-- springrun.proxy); the behaviour is described in proxy.lua's header.
local errors = require "springrun.errors"
local uri = require "springrun.uri"

local M = {}

local LOGGER_NAME = "springrun.remoting.pyro.PyroProxyFactory"
local transport = require "springrun.transport"

-- Pyro4 constants (shared spec pyro4-wire.md 1.2, 1.3)
local MSG_CONNECT, MSG_CONNECTOK, MSG_CONNECTFAIL, MSG_INVOKE, MSG_RESULT = 1, 2, 3, 4, 5
local FLAG_EXCEPTION, FLAG_ONEWAY, FLAG_META_ON_CONNECT, FLAG_ITEMSTREAMRESULT = 0x01, 0x04, 0x10, 0x20
local SERIALIZERS = { json = 2, serpent = 1 }
local DAEMON_OBJECT = "Pyro.Daemon"

-- Modules loaded on first use, so `require "springrun.proxy"` stays cheap and
-- a missing optional part (logging, runtime) degrades instead of failing.
local core, json, uv, runtime_mod, logger

local function get_core()
  core = core or require "springrun.core"
  return core
end

local function get_json()
  json = json or require "springrun.json"
  return json
end

local function get_uv()
  uv = uv or require "luv"
  return uv
end

local function runtime()
  if runtime_mod == nil then
    local ok, m = pcall(require, "springrun.runtime")
    runtime_mod = ok and m or false
  end
  return runtime_mod or nil
end

local function log()
  if logger == nil then
    local ok, m = pcall(require, "springrun.log")
    logger = ok and m.get and m.get(LOGGER_NAME) or false
  end
  return logger or nil
end

local function debug_log(fmt, ...)
  local l = log()
  if l and l:effective_level() <= 10 then l:debug(fmt, ...) end
end

-- True when debug lines of this logger are written (arguments that cost
-- something to build are built only then).
local function debug_on()
  local l = log()
  return l ~= nil and l:effective_level() <= 10
end

-- ---- error mapping -----------------------------------------------------------

-- low-level code ("ECONNREFUSED", "SR_ETIMEOUT", luv's "ECONNRESET: ...") ->
-- errors kind
local function kind_of(code, connecting)
  code = tostring(code or ""):match("^([%u%d_]+)") or ""
  if code == "ECONNREFUSED" then return "refused" end
  if code == "ETIMEDOUT" or code == "SR_ETIMEOUT" then return "timeout" end
  if code == "SR_ECLOSED" or code == "ECONNRESET" or code == "EPIPE" or code == "ECONNABORTED"
    or code == "EOF" then
    return connecting and "connect" or "closed"
  end
  if code == "SR_ETLS" then return connecting and "connect" or "closed" end
  if code:match("^SR_E") and code ~= "SR_EIO" then return "protocol" end
  return connecting and "connect" or "closed"
end

local function where(st)
  return st.uri and string.format("%s:%d", st.uri.host, st.uri.port) or "?"
end

local function comm_error(st, kind, what, detail, code, method)
  local msg
  if kind == "refused" then
    msg = string.format("cannot connect to %s: connection refused by %s", st.url, where(st))
  elseif kind == "timeout" then
    msg = string.format("%s %s timed out after %g s", what, st.url, st.timeout or 0)
  else
    msg = string.format("%s %s failed: %s", what, st.url, detail)
  end
  return errors.new(kind, msg, { url = st.url, code = code, method = method, detail = detail })
end

-- ---- protocol over either connection kind ----------------------------------------

-- Pyro4 sends CONNECTFAIL text with marshal (id 3) before it accepted the
-- serializer: a marshal str is type byte ('z'/'Z': 1-byte length; 'a'/'A'/
-- 'u'/'t': 4-byte little-endian length) then the text.
local function marshal_text(data)
  if type(data) ~= "string" or #data < 2 then return tostring(data) end
  local t = string.char(data:byte(1) & 0x7F)
  if t == "z" or t == "Z" then
    local n = data:byte(2)
    return data:sub(3, 2 + n)
  elseif t == "a" or t == "A" or t == "u" or t == "t" then
    if #data < 5 then return data end
    local n = string.unpack("<I4", data, 2)
    return data:sub(6, 5 + n)
  end
  return data
end

local function as_set(list)
  local s = {}
  if type(list) == "table" then
    for _, v in ipairs(list) do
      if type(v) == "string" then s[v] = true end
    end
  end
  return s
end

local function close_conn(st)
  local conn = st.conn
  st.conn = nil
  if conn then conn:close() end
end

local NO_KWARGS = {} -- shared by every INVOKE payload; never written
local json_array_mt
local function array_mt()
  json_array_mt = json_array_mt or get_core().json_array_mt
  return json_array_mt
end

-- The INVOKE payload: a map for JSON; for serpent the 4-tuple Pyro4 sends,
-- (object, method, (params...), {kwargs}). args: a table.pack'ed list.
-- The INVOKE payload of method(args) (args packed, .n set). A last argument
-- made with springrun.kwargs is sent as the keyword arguments (a plain map,
-- like Pyro4's **kwargs); args itself is left as it is (a retry encodes it
-- again).
local function invoke_payload(st, object, method, args)
  local kwargs
  local n = args.n or #args
  local last = args[n]
  if n > 0 and type(last) == "table" and getmetatable(last) == get_core().kwargs_mt then
    kwargs = {}
    for k, v in pairs(last) do kwargs[k] = v end
    args = table.move(args, 1, n - 1, 1, { n = n - 1 })
  end
  if st.ser == SERIALIZERS.serpent then
    local tuple = require("springrun.serpent").tuple
    return tuple({ object, method, tuple(args), kwargs or {} })
  end
  return { object = object, method = method, params = setmetatable(args, array_mt()),
    kwargs = kwargs or NO_KWARGS }
end

-- The client TLS context of st (made once from its ssl_* properties; a
-- missing or bad file raises a config error naming it), or nil without ssl.
local function tls_context(st)
  if not st.ssl then return nil end
  if st.tls_ctx then return st.tls_ctx end
  local ctx, err = get_core().tls_context({ server = false, cafile = st.ssl_cacerts,
    certfile = st.ssl_certfile, keyfile = st.ssl_keyfile, verify = st.ssl_verify ~= false })
  if not ctx then
    error(errors.new("config", "PyroProxyFactory.ssl: " .. tostring(err), { url = st.url }), 0)
  end
  st.tls_ctx = ctx
  return ctx
end

local function connect_transport(st, co)
  local host = st.uri.host
  return transport.connect(host, st.uri.port, st.timeout, co, tls_context(st), st.ssl_servername or host)
end

-- Sends one request on a fresh connection during the handshake phase, or
-- raises a typed error (and closes it).
local function handshake_request(st, conn, mtype, flags, seq, value)
  local msg, emsg, code = conn:request(mtype, flags, seq, st.ser, value, st.timeout)
  if not msg then
    conn:close()
    error(comm_error(st, kind_of(code), "handshake with", emsg, code), 0)
  end
  return msg
end

-- The metadata sets ({ methods =, oneway =, attrs = }) of the last handshake
-- with each service (host, port, object) in this process; only metadata a
-- CONNECTOK carried (META_ON_CONNECT) is kept. A new connection for a call
-- whose method is in here sends CONNECT and the INVOKE in one write
-- (pipelined: one round trip instead of two); otherwise it handshakes first.
-- The sets are shared by the proxies of a service and never modified.
local meta_cache, nmeta = {}, 0
local meta_keys = setmetatable({}, { __mode = "k" }) -- parsed uri -> cache key

-- Counters for tests and benchmarks: connections made, and how many of
-- them sent their first INVOKE along with the CONNECT (counted when sent).
local stats = { connections = 0, pipelined = 0, fast = 0 }

local function meta_key(u)
  local k = meta_keys[u]
  if k == nil then
    k = string.format("%s\0%d\0%s", u.host, u.port, u.object)
    meta_keys[u] = k
  end
  return k
end

local function remember_meta(u, m)
  local k = meta_key(u)
  if meta_cache[k] == nil then
    if nmeta >= 256 then meta_cache, nmeta = {}, 0 end
    nmeta = nmeta + 1
  end
  meta_cache[k] = m
end

local function forget_meta(u)
  local k = meta_key(u)
  if meta_cache[k] ~= nil then
    meta_cache[k] = nil
    nmeta = nmeta - 1
  end
end

-- The metadata map each cached set table was built from (to tell whether
-- a new handshake says the same), and the payload bytes of the CONNECTOK
-- that carried it (a CONNECTOK with the same bytes is not decoded).
local meta_source = setmetatable({}, { __mode = "k" })
local meta_raw = setmetatable({}, { __mode = "k" })

-- True when a and b are the same list (or the same non-list value).
local function same_list(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  local n = #a
  if #b ~= n then return false end
  for i = 1, n do
    if a[i] ~= b[i] then return false end
  end
  return true
end

-- The metadata sets for meta (the map a server sent), reusing `prev` (the
-- cached sets of the service) when the server sent the same lists as then;
-- raises when the object exposes nothing.
local function meta_sets(st, meta, prev)
  if type(meta) ~= "table" then
    error(errors.new("protocol", string.format("%s: invalid metadata in the handshake reply", st.url),
      { url = st.url }), 0)
  end
  local m
  local src = prev and meta_source[prev]
  if src and same_list(meta.methods, src.methods) and same_list(meta.oneway, src.oneway)
      and same_list(meta.attrs, src.attrs) then
    m = prev
  else
    m = { methods = as_set(meta.methods), oneway = as_set(meta.oneway), attrs = as_set(meta.attrs) }
    meta_source[m] = meta
  end
  if next(m.methods) == nil and next(m.attrs) == nil then
    error(errors.new("attribute", string.format(
      "remote object '%s' doesn't expose any methods or attributes", st.url), { url = st.url }), 0)
  end
  return m
end

-- Checks the reply to CONNECT (rejected, or not a CONNECTOK, raise) and
-- returns the metadata map it carries, or nil when it carries none.
local function connect_reply(st, msg)
  if msg.type == MSG_CONNECTFAIL then
    forget_meta(st.uri)
    local text = msg.data and marshal_text(msg.data) or tostring(msg.value)
    error(errors.new("rejected", string.format("connection to %s rejected: %s", st.url, text),
      { url = st.url, reason = text }), 0)
  elseif msg.type ~= MSG_CONNECTOK then
    error(errors.new("protocol", string.format("%s: invalid handshake reply (message type %d)",
      st.url, msg.type), { url = st.url }), 0)
  end
  if msg.flags & FLAG_META_ON_CONNECT ~= 0 then
    if msg.same then return nil, true end -- the payload of the cached metadata's handshake
    if type(msg.value) == "table" then return msg.value.meta, true end
  end
  return nil
end

-- CONNECT payloads with the default handshake, by parsed URL (shared,
-- never modified), and the same encoded, by parsed URL and serializer
local hello_payloads = setmetatable({}, { __mode = "k" })
local hello_bytes = setmetatable({}, { __mode = "k" })

local function connect_payload(st)
  local u = st.uri
  if st.handshake == nil then
    local p = hello_payloads[u]
    if p == nil then
      p = { handshake = "hello", object = u.object }
      hello_payloads[u] = p
    end
    return p
  end
  return { handshake = st.handshake, object = u.object }
end

-- The handshake of a new connection (two round trips: CONNECT, then the
-- metadata). Sets st.meta or raises.
local function handshake(st, c)
  -- CONNECT; the reply's payload bytes are kept with the metadata (see
  -- pipelined)
  local ok, emsg, code = c:push(MSG_CONNECT, FLAG_META_ON_CONNECT, st.seq, st.ser, connect_payload(st))
  local msg
  if ok then msg, emsg, code = c:receive(st.timeout, false, true) end
  if not msg then
    c:close()
    error(comm_error(st, kind_of(code), "handshake with", emsg, code), 0)
  end
  local meta, on_connect = connect_reply(st, msg)
  if not on_connect then
    -- no metadata in CONNECTOK: ask the daemon object, as Pyro4 does
    st.seq = (st.seq + 1) & 0xFFFF
    local r = handshake_request(st, c, MSG_INVOKE, 0, st.seq,
      invoke_payload(st, DAEMON_OBJECT, "get_metadata", { st.uri.object, n = 1 }))
    if r.type ~= MSG_RESULT or r.flags & FLAG_EXCEPTION ~= 0 then
      error(errors.new("protocol", string.format("%s: the server sent no metadata", st.url),
        { url = st.url }), 0)
    end
    meta = r.value
  end
  local m = meta_sets(st, meta, meta_cache[meta_key(st.uri)])
  if on_connect then
    remember_meta(st.uri, m)
    meta_raw[m] = msg.raw
  end
  st.meta = m
end

-- The rest of a pipelined handshake once the first answer (msg) is read:
-- the handshake's outcome, then (seq: the call was sent) the call's reply.
local function pipelined_rest(st, c, cached, msg, seq, oneway)
  local meta, on_connect = connect_reply(st, msg)
  local m = cached
  if on_connect and not msg.same then
    m = meta_sets(st, meta, cached)
    remember_meta(st.uri, m)
    meta_raw[m] = msg.raw
  end
  st.meta = m
  if not seq then return end
  st.seq = seq
  local reply, rmsg, rcode = c:receive(st.timeout, oneway)
  return reply, seq, oneway, rmsg, rcode
end

-- The pipelined handshake (see meta_cache): CONNECT and the INVOKE of
-- name(args) leave in one write; then CONNECTOK is read (a failed handshake
-- raises exactly as handshake() does; one without metadata leaves the
-- cached metadata in use) and then the RESULT. Returns the
-- reply (or true for a oneway call, or nil, msg, code when reading the
-- RESULT failed: the request was sent) and the call's seq and oneway flag;
-- or nothing when the arguments cannot be encoded (the handshake is then
-- finished the usual way and the caller sends the call itself, failing as
-- it would on any connection).
local function pipelined(st, c, cached, name, args)
  local oneway = cached.oneway[name] == true
  local seq = (st.seq + 1) & 0xFFFF
  local payload, raw = nil, false
  if st.handshake == nil then
    -- the default CONNECT of this URL, encoded once
    local by_ser = hello_bytes[st.uri]
    payload = by_ser and by_ser[st.ser]
    if payload == nil then
      payload = get_core().client_encode_payload(st.ser, connect_payload(st))
      if payload then
        by_ser = by_ser or {}
        by_ser[st.ser] = payload
        hello_bytes[st.uri] = by_ser
      end
    end
    raw = payload ~= nil
  end
  if not raw then payload = connect_payload(st) end
  local ok, emsg, code = c:push(MSG_CONNECT, FLAG_META_ON_CONNECT, st.seq, st.ser, payload, raw)
  if not ok then
    c:close()
    error(comm_error(st, kind_of(code), "handshake with", emsg, code), 0)
  end
  local queued = c:push(MSG_INVOKE, oneway and FLAG_ONEWAY or 0, seq, st.ser,
    invoke_payload(st, st.uri.object, name, args))
  if queued then stats.pipelined = stats.pipelined + 1 end
  -- CONNECTOK: when its payload is byte for byte the one the cached
  -- metadata came from, it is not even decoded
  local msg
  msg, emsg, code = c:receive(st.timeout, false, meta_raw[cached] or true)
  if not msg then
    c:close()
    error(comm_error(st, kind_of(code), "handshake with", emsg, code), 0)
  end
  return pipelined_rest(st, c, cached, msg, queued and seq, oneway)
end

-- Returns a connected, handshaken connection for st (reusing an idle one that
-- is still alive), or raises. With name (a call about to be made, args its
-- packed arguments) on a new connection whose service's metadata
-- is cached and has that method, the call is pipelined with the handshake
-- and its outcome returned too: conn, reply|nil, seq, oneway, msg, code
-- (see pipelined()).
local function connection(st, co, name, args)
  local conn = st.conn
  if conn and ((conn.async == true) ~= (co ~= nil) or not conn:alive()) then
    debug_log("dropping the idle connection to %s (%s)", st.url,
      conn:alive() and "switching between task and blocking mode" or "closed by the server")
    close_conn(st)
    conn = nil
  end
  if conn then return conn end

  if st.named then
    local resolved = require("springrun.naming").resolve(st.named, { timeout = st.timeout })
    local u = uri.parse(resolved)
    if not u then
      error(errors.new("protocol", string.format("%s resolved to an unusable URL '%s'", st.named, resolved),
        { url = st.named }), 0)
    end
    u.original = st.named
    st.uri = u
    debug_log("%s resolved to %s", st.named, u.url)
  end
  local debugging = debug_on()
  if debugging then debug_log("connecting to %s (%s)", st.url, where(st)) end
  local c, emsg, code = connect_transport(st, co)
  if not c then
    local kind = kind_of(code, true)
    error(comm_error(st, kind, "connecting to", emsg, code), 0)
  end
  stats.connections = stats.connections + 1
  local cached = name and c.push and meta_cache[meta_key(st.uri)]
  if cached and cached.methods[name] then
    local ok, reply, seq, oneway, rmsg, rcode = pcall(pipelined, st, c, cached, name, args)
    if not ok then
      c:close()
      error(reply, 0)
    end
    st.conn = c
    if debugging then debug_log("connected to %s (first call pipelined)", st.url) end
    if seq == nil then return c end
    return c, reply, seq, oneway, rmsg, rcode
  end
  local ok, e = pcall(handshake, st, c)
  if not ok then
    c:close()
    error(e, 0)
  end
  st.conn = c
  if debugging then debug_log("connected to %s", st.url) end
  return c
end

local function check_method(st, name)
  local m = st.meta
  if m.methods[name] then return end
  if m.attrs[name] then
    error(errors.new("attribute", string.format(
      "'%s' on remote object '%s' is an attribute, not a method (remote attributes are not supported)",
      name, st.url), { url = st.url, method = name }), 0)
  end
  error(errors.new("attribute", string.format(
    "remote object '%s' has no exposed attribute or method '%s'", st.url, name),
    { url = st.url, method = name }), 0)
end

-- The result of the reply msg to the INVOKE of name with sequence number
-- seq (not oneway): the value, or raises (a reply of another type, seq or
-- serializer is a protocol error and drops the connection; a remote
-- exception raises as kind "remote").
local function result_of(st, name, seq, msg)
  if msg.type ~= MSG_RESULT then
    close_conn(st)
    error(errors.new("protocol", string.format("%s: invalid reply to %s (message type %d)",
      st.url, name, msg.type), { url = st.url, method = name }), 0)
  end
  if msg.seq ~= seq then
    close_conn(st)
    error(errors.new("protocol", string.format(
      "%s: invoke: reply sequence out of sync (sent %d, got %d)", st.url, seq, msg.seq),
      { url = st.url, method = name }), 0)
  end
  if msg.serializer ~= st.ser then
    close_conn(st)
    error(errors.new("protocol", string.format("%s: reply used serializer %d, request used %d",
      st.url, msg.serializer, st.ser), { url = st.url, method = name }), 0)
  end
  if msg.flags & FLAG_ITEMSTREAMRESULT ~= 0 then
    error(errors.new("protocol", string.format(
      "%s: %s returned an iterator (item streams are not supported)", st.url, name),
      { url = st.url, method = name }), 0)
  end
  local v = msg.value
  if msg.flags & FLAG_EXCEPTION ~= 0 then
    local e = errors.from_remote(v, { url = st.url, method = name })
    if errors.CONNECTION_DROPPING[e.class] then close_conn(st) end
    error(e, 0)
  end
  if v == get_json().null then return nil end
  return v
end

-- A request that failed (msg: nil): raises when the arguments could not be
-- encoded, when some of it was sent or on the last attempt; otherwise (not
-- sent: the server went away meanwhile) drops the connection and returns,
-- and the caller tries again on a new one.
local function request_failed(st, name, attempt, emsg, code, sent)
  local kind = kind_of(code)
  if not sent and tostring(code):match("^SR_E") and kind == "protocol" then
    -- the arguments could not be encoded; nothing left, the connection is fine
    error(errors.new("serialize", string.format("cannot send the arguments of %s to %s: %s",
      name, st.url, emsg), { url = st.url, method = name, code = code }), 0)
  end
  close_conn(st)
  if sent or attempt == 2 then
    error(comm_error(st, kind, "call " .. name .. " on", emsg, code, name), 0)
  end
  debug_log("request %s to %s not sent (%s); reconnecting", name, st.url, tostring(emsg))
end

-- One remote call on st's connection (the caller holds st's lock). co: the
-- running task or nil (blocking mode); from: the first attempt (2 when a
-- first one already failed unsent). Returns the result or raises.
local function invoke(st, name, args, co, from)
  if st.uri == nil then
    error(errors.new("config", "PyroProxyFactory: service_url is not set (call to '" .. name .. "')"), 0)
  end
  for attempt = from or 1, 2 do
    local conn, msg, seq, oneway, emsg, code = connection(st, co, name, args)
    local sent = true
    if seq == nil then
      check_method(st, name)
      -- after connection(): a PYRONAME URL gets its object id there
      local payload = invoke_payload(st, st.uri.object, name, args)
      oneway = st.meta.oneway[name] == true
      st.seq = (st.seq + 1) & 0xFFFF
      seq = st.seq
      msg, emsg, code, sent = conn:request(MSG_INVOKE, oneway and FLAG_ONEWAY or 0, seq, st.ser,
        payload, st.timeout)
    end
    if not msg then
      request_failed(st, name, attempt, emsg, code, sent)
    else
      if oneway then return end
      return result_of(st, name, seq, msg)
    end
  end
end

-- ---- locking and the three execution modes ------------------------------------------

local function lock(st, co)
  while st.busy do
    local w = st.waiters
    if w == nil then
      w = {}
      st.waiters = w
    end
    w[#w + 1] = co
    coroutine.yield()
  end
  st.busy = true
end

local function unlock(st)
  st.busy = false
  local w = st.waiters
  local co = w and table.remove(w, 1)
  if co then runtime().resume(co) end
end

-- Runs fn(co) holding st's lock, in the mode the caller is in (see the
-- header): in a task; as a task with the loop turned (outside a task while
-- this process exports, or while another task holds the connection); or
-- blocking (co == nil). Returns fn's results or raises its error.
local function in_task(st, fn, co)
  lock(st, co)
  local res = table.pack(pcall(fn, co))
  unlock(st)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

local function pumped(st, fn, rt)
  local u = get_uv()
  local res
  rt.spawn(function()
    res = table.pack(pcall(in_task, st, fn, rt.current()))
  end)
  while res == nil do u.run("once") end
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

local function dispatch(st, fn)
  local rt = runtime()
  local co = rt and rt.current and rt.current() or nil
  if co then return in_task(st, fn, co) end
  if rt and rt.spawn and ((rt.has_exports and rt.has_exports()) or st.busy
      or (st.conn and st.conn.async)) then
    return pumped(st, fn, rt)
  end
  st.busy = true
  local res = table.pack(pcall(fn, nil))
  st.busy = false
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

local function blocking_done(st, ok, ...)
  st.busy = false
  if not ok then error((...), 0) end
  return ...
end

-- dispatch(st, invoke) for one call; the blocking mode (the common one in a
-- plain script) without a closure or a packed result table.
local function call(st, name, args)
  local rt = runtime()
  if not (rt and rt.current and rt.current()) and not (rt and rt.spawn
      and ((rt.has_exports and rt.has_exports()) or st.busy or (st.conn and st.conn.async))) then
    st.busy = true
    return blocking_done(st, pcall(invoke, st, name, args, nil))
  end
  return dispatch(st, function(co) return invoke(st, name, args, co) end)
end

-- The general path of a call whose first attempt on the fast path failed
-- before anything was sent (see call_v): drops the connection and tries
-- once more on a new one, in blocking mode.
local function retry_blocking(st, name, args)
  st.busy = true
  return blocking_done(st, pcall(invoke, st, name, args, nil, 2))
end

local co_running = coroutine.running

-- The rest of a call whose conn:invoke (see call_v) did not return a plain
-- result: ok false (v: a reply to check), nil with a message (the request
-- failed), or nothing (nothing sent: the general path makes the call).
local function fast_failed(st, name, seq, ok, v, code, sent, ...)
  if ok == false then
    st.seq = seq
    stats.fast = stats.fast + 1
    return result_of(st, name, seq, v)
  elseif v ~= nil then
    st.seq = seq
    stats.fast = stats.fast + 1
    request_failed(st, name, 1, v, code, sent)
    return retry_blocking(st, name, table.pack(...))
  end
  return call(st, name, table.pack(...))
end

-- The first call of a new connection in one step (see call_v), when the
-- service's metadata and the encoded CONNECT are known from an earlier
-- connection: connect, then conn:connect_invoke (CONNECT and the call in one
-- write; the CONNECTOK checked against the cached one and a plain RESULT
-- decoded in C). Whatever it cannot finish goes on where the general path
-- (connection, pipelined, invoke) would, with the same results and errors.
local connect_one_step = true -- for the specs: M._connect_one_step

local function connect_v(st, name, cached, ...)
  local known = meta_raw[cached]
  local hello = hello_bytes[st.uri]
  hello = hello and hello[st.ser]
  if type(known) ~= "string" or hello == nil then return call(st, name, table.pack(...)) end
  local c, emsg, code = connect_transport(st, nil)
  if not c then error(comm_error(st, kind_of(code, true), "connecting to", emsg, code), 0) end
  stats.connections = stats.connections + 1
  local seq = (st.seq + 1) & 0xFFFF
  local ok, v, m, sent, stage = c:connect_invoke(st.seq, hello, known, seq, st.uri.object, name,
    st.timeout, ...)
  if ok == nil and v == nil then -- nothing sent: the general path, on a new connection
    c:close()
    return call(st, name, table.pack(...))
  end
  stats.pipelined = stats.pipelined + 1
  if ok == nil and stage == "connect" then
    c:close()
    error(comm_error(st, kind_of(m), "handshake with", v, m), 0)
  end
  st.conn = c
  if ok == false and v == "connect" then -- not the cached CONNECTOK: as pipelined goes on
    local fine, reply, rseq, _, rmsg, rcode = pcall(pipelined_rest, st, c, cached, m, seq, false)
    if not fine then
      st.conn = nil
      c:close()
      error(reply, 0)
    end
    if not reply then request_failed(st, name, 1, rmsg, rcode, true) end
    return result_of(st, name, rseq, reply)
  end
  st.meta, st.seq = cached, seq
  if ok then
    stats.fast = stats.fast + 1
    if v == get_core().null then return nil end
    return v
  end
  if ok == nil then request_failed(st, name, 1, v, m, sent) end -- raises: the call was sent
  return result_of(st, name, seq, m)
end

-- call(st, name, table.pack(...)), the common case first: in a plain script
-- (not in a coroutine, no service exported by this process) on an idle C
-- connection with JSON, to a known method that is not oneway, the whole
-- call is one conn:invoke (encode, send, receive, decode in C: no packed
-- argument table, no request or reply tables). Every other case, and
-- whatever the fast path cannot finish itself (a reply that is not a plain
-- result, a failure), ends as the general path does.
local function call_v(st, name, ...)
  local conn, meta = st.conn, st.meta
  if conn ~= nil and meta ~= nil and st.ser == 2 and not st.busy and meta.methods[name]
      and not meta.oneway[name] then
    local cinvoke = conn.invoke -- nil for a luv connection
    local rt = runtime_mod
    local _, main = co_running()
    if cinvoke and main and (rt == false or (rt ~= nil and not rt.has_exports())) then
      local seq = (st.seq + 1) & 0xFFFF
      local ok, v, code, sent = cinvoke(conn, seq, st.uri.object, name, st.timeout, ...)
      if ok then
        st.seq = seq
        stats.fast = stats.fast + 1
        if v == get_core().null then return nil end
        return v
      end
      return fast_failed(st, name, seq, ok, v, code, sent, ...)
    end
  elseif conn == nil and connect_one_step and st.ser == 2 and not st.busy and st.handshake == nil
      and st.named == nil and st.uri ~= nil then
    -- a new connection: the first call goes with the handshake (connect_v)
    local rt = runtime_mod
    local _, main = co_running()
    if main and (rt == false or (rt ~= nil and not rt.has_exports())) and not debug_on() then
      local cached = meta_cache[meta_key(st.uri)]
      if cached and cached.methods[name] and not cached.oneway[name] then
        return connect_v(st, name, cached, ...)
      end
    end
  end
  return call(st, name, table.pack(...))
end

M.SERIALIZERS = SERIALIZERS
M.tls_context = tls_context
M.close = close_conn

-- st's proxy call name(...): the result, or raises.
M.call = call_v

-- Connects st now (with the handshake) unless it has an idle connection.
function M.bind(st)
  dispatch(st, function(co) connection(st, co) end)
end

-- For the specs: the first call of a new connection in one step (connect_v,
-- true: the default) or always the general way (false), so both can be
-- checked to end alike.
function M._connect_one_step(on) connect_one_step = on and true or false end

function M.stats()
  return { connections = stats.connections, pipelined = stats.pipelined, fast = stats.fast }
end

return M
