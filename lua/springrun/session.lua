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
local MSG_PING = 6
local FLAG_EXCEPTION, FLAG_ONEWAY, FLAG_BATCH, FLAG_META_ON_CONNECT, FLAG_ITEMSTREAMRESULT = 0x01, 0x04, 0x08, 0x10, 0x20
local SERIALIZERS = { json = 2, serpent = 1 }
local DAEMON_OBJECT = "Pyro.Daemon"
local results = require "springrun.results"

-- Modules loaded on first use, so `require "springrun.proxy"` stays cheap and
-- a missing optional part (logging, runtime) degrades instead of failing.
local lazy = require "springrun.lazy"
local runtime_mod, logger
local get_core = lazy.loader "springrun.core"
local get_json = lazy.loader "springrun.json"
local get_uv = lazy.loader "luv"

-- springrun.callctx.outgoing, loaded by the first call
local function callctx_outgoing()
  local f = require("springrun.callctx").outgoing
  callctx_outgoing = f
  return f()
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

-- sent: false when the request certainly did not reach the server (e.sent;
-- a pool retries such calls on another member), true when it may have run
local function comm_error(st, kind, what, detail, code, method, sent)
  local msg
  if kind == "refused" then
    msg = string.format("cannot connect to %s: connection refused by %s", st.url, where(st))
  elseif kind == "timeout" then
    msg = string.format("%s %s timed out after %g s", what, st.url, st.timeout or 0)
  else
    msg = string.format("%s %s failed: %s", what, st.url, detail)
  end
  return errors.new(kind, msg, { url = st.url, code = code, method = method, detail = detail,
    sent = sent == true })
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

-- Closes every connection of the proxy st: its own and its lanes' (see
-- "lanes" below); a task waiting on one of them fails with kind "closed".
local function close_all(st)
  close_conn(st)
  local lanes = st.lanes
  if lanes then
    for i = 1, #lanes do close_conn(lanes[i]) end
  end
end

local NO_KWARGS = {} -- shared by every INVOKE payload; never written
local json_array_mt
local function array_mt()
  json_array_mt = json_array_mt or get_core().json_array_mt
  return json_array_mt
end

-- A call's arguments (packed, .n set) split into the positional ones and
-- the keyword arguments: a last argument made with springrun.kwargs is sent
-- as the latter (a plain map, like Pyro4's **kwargs; nil when there is
-- none). args itself is left as it is (a retry encodes it again).
local function split_kwargs(args)
  local n = args.n or #args
  local last = args[n]
  if n > 0 and type(last) == "table" and getmetatable(last) == get_core().kwargs_mt then
    local kwargs = {}
    for k, v in pairs(last) do kwargs[k] = v end
    return table.move(args, 1, n - 1, 1, { n = n - 1 }), kwargs
  end
  return args, nil
end

-- The INVOKE payload of method(args) (args packed, .n set): a map for JSON;
-- for serpent the 4-tuple Pyro4 sends, (object, method, (params...),
-- {kwargs}).
local function invoke_payload(st, object, method, args)
  local kwargs
  args, kwargs = split_kwargs(args)
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

-- The next sequence number of st (Pyro4's: 1 for the first INVOKE,
-- wrapping at 65536), taken by the request about to be sent.
local function next_seq(st)
  local seq = (st.seq + 1) & 0xFFFF
  st.seq = seq
  return seq
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
      { url = st.url, reason = text, sent = false }), 0)
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
    local r = handshake_request(st, c, MSG_INVOKE, 0, next_seq(st),
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

-- Accepts the first answer of a pipelined handshake (msg, cached: the
-- metadata the call was sent on): raises as handshake() would for a
-- rejection or another reply; otherwise st.meta is the metadata in force
-- (a CONNECTOK that brings new metadata replaces the cached one).
local function accept_pipelined(st, msg, cached)
  local meta, on_connect = connect_reply(st, msg)
  local m = cached
  if on_connect and not msg.same then
    m = meta_sets(st, meta, cached)
    remember_meta(st.uri, m)
    meta_raw[m] = msg.raw
  end
  st.meta = m
end

-- The default CONNECT payload of st's URL encoded with its serializer
-- (encoded once per URL), or nil when st has a handshake value of its own.
local function hello_payload(st)
  if st.handshake ~= nil then return nil end
  local by_ser = hello_bytes[st.uri]
  local payload = by_ser and by_ser[st.ser]
  if payload == nil then
    payload = get_core().client_encode_payload(st.ser, connect_payload(st))
    if payload then
      by_ser = by_ser or {}
      by_ser[st.ser] = payload
      hello_bytes[st.uri] = by_ser
    end
  end
  return payload
end

local function is_encode_failure(code, sent)
  return not sent and kind_of(code) == "protocol" and tostring(code):match("^SR_E") ~= nil
end

-- ---- the call pipeline -----------------------------------------------------------------
--
-- A call is attempt() then finish(). attempt() sends it and returns
--   seq, oneway, fast, outcome...
-- seq: the call's sequence number; fast: a one-step C call
-- (conn:invoke, conn:invoke_oneway, conn:connect_invoke) carried it; the outcome is one of
--   true, value       the plain result, decoded by the C connection
--   true              a oneway call, sent
--   msg               the reply, to be judged (result_of)
--   nil, msg, code, sent   the request failed (request_failed)
--   false, err        no request could go out: connecting, the handshake
--                     or the method's name failed (err: an errors object)
-- finish() turns every outcome into the call's result or error, in one
-- place for every transport and mode.

local NEXT = {}   -- finish(): try once more on a new connection
local ONEWAY = {} -- finish(): a oneway call went out; nothing to return

-- Opens a transport connection for st in co's kind (resolving a PYRONAME
-- URL first) or raises.
local function open(st, co)
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
  if debug_on() then debug_log("connecting to %s (%s)", st.url, where(st)) end
  local c, emsg, code = connect_transport(st, co)
  if not c then error(comm_error(st, kind_of(code, true), "connecting to", emsg, code), 0) end
  stats.connections = stats.connections + 1
  return c
end

-- err, marked as not sent when it is a communication error: connecting or
-- the handshake failed before the call itself went out.
local function unsent(err)
  if errors.is(err, "communication") then err.sent = false end
  return err
end

-- st's connection for a call of name (nil: none) in co's kind (co: the
-- running task or nil). Returns the idle connection when it can carry a
-- request; or a new one: handshaken, or, when the service's remembered
-- metadata has name, c and that metadata (the call goes with the CONNECT:
-- pipelined); or nil, nil, err when none could be made.
local function connection(st, co, name)
  local conn = st.conn
  if conn ~= nil then
    -- a connection the server closed meanwhile fails the request unsent
    -- (the transport checks), and the call is tried again on a new one
    if (conn.async == true) == (co ~= nil) then return conn end
    debug_log("dropping the idle connection to %s (switching between task and blocking mode)", st.url)
    close_conn(st)
  end
  if st.uri == nil then
    return nil, nil, errors.new("config",
      "PyroProxyFactory: service_url is not set (call to '" .. tostring(name) .. "')")
  end
  local ok, c = pcall(open, st, co)
  if not ok then return nil, nil, unsent(c) end
  local cached = name and meta_cache[meta_key(st.uri)]
  if cached and cached.methods[name] then return c, cached end
  local hok, err = pcall(handshake, st, c)
  if not hok then
    c:close()
    return nil, nil, unsent(err)
  end
  st.conn = c
  debug_log("connected to %s", st.url)
  return c
end

-- The call name(...) sent with the CONNECT of the new connection c (one
-- write; see meta_cache): in one step (conn:connect_invoke) on a blocking
-- connection for a JSON call with a reply and the default handshake whose
-- CONNECTOK is remembered byte for byte; otherwise queued (conn:push) and
-- read (conn:receive). Returns what attempt() returns.
local function pipelined(st, c, cached, name, ...)
  local oneway = cached.oneway[name] == true
  local cseq, seq = st.seq, next_seq(st)
  local hello, known = hello_payload(st), meta_raw[cached]
  local fast = c.connect_invoke ~= nil and st.ser == SERIALIZERS.json and not oneway and hello ~= nil
    and type(known) == "string"
  local h, r, code, sent, stage
  if fast then
    h, r, code, sent, stage = c:connect_invoke(cseq, hello, known, seq, st.uri.object, name, st.timeout, ...)
    if h == true then -- the remembered CONNECTOK and a plain result
      stats.pipelined = stats.pipelined + 1
      st.conn, st.meta = c, cached
      return seq, oneway, true, true, r
    end
  else
    local ok, emsg, ecode = c:push(MSG_CONNECT, FLAG_META_ON_CONNECT, cseq, st.ser, hello or connect_payload(st),
      hello ~= nil)
    if not ok then
      c:close()
      return seq, oneway, false, false, comm_error(st, kind_of(ecode), "handshake with", emsg, ecode)
    end
    ok, emsg, ecode = c:push(MSG_INVOKE, oneway and FLAG_ONEWAY or 0, seq, st.ser,
      invoke_payload(st, st.uri.object, name, table.pack(...)))
    if ok then
      h, r, code, sent = c:receive(st.timeout, false, known or true)
    else
      h, r, code, sent = nil, emsg, ecode, false
    end
    stage = "connect"
  end
  if h == nil then
    if stage == "result" then -- the handshake went through; the reply did not come
      stats.pipelined = stats.pipelined + 1
      st.conn, st.meta = c, cached
      return seq, oneway, fast, nil, r, code, sent
    end
    c:close()
    if is_encode_failure(code, sent) then return seq, oneway, false, nil, r, code, false end
    stats.pipelined = stats.pipelined + 1
    local kind = kind_of(code)
    if kind == "timeout" and sent then
      -- the CONNECT and the call left together and nothing came back: the
      -- caller waited for its call (a slow method, a server that answers
      -- the handshake only with the call's reply), not for a handshake
      return seq, oneway, fast, false, comm_error(st, kind, "call " .. name .. " to", r, code, name, true)
    end
    return seq, oneway, fast, false, comm_error(st, kind, "handshake with", r, code, nil, sent)
  end
  stats.pipelined = stats.pipelined + 1
  local ok, err = pcall(accept_pipelined, st, h, cached)
  if not ok then
    c:close()
    return seq, oneway, fast, false, err
  end
  st.conn = c
  debug_log("connected to %s (first call pipelined)", st.url)
  if r ~= nil then return seq, oneway, fast, r end
  return seq, oneway, fast, c:receive(st.timeout, oneway)
end

-- The error for a call of name that st's metadata does not offer.
local function method_error(st, name)
  if st.meta.attrs[name] then
    return errors.new("attribute", string.format(
      "'%s' on remote object '%s' is an attribute, not a method (remote attributes are not supported)",
      name, st.url), { url = st.url, method = name })
  end
  return errors.new("attribute", string.format(
    "remote object '%s' has no exposed attribute or method '%s'", st.url, name),
    { url = st.url, method = name })
end

-- Sends the call name(...) on st's connection in co's kind (making one,
-- with the handshake, when there is no idle one); see the pipeline above.
-- A call that carries a correlation id (springrun.callctx: made while
-- serving a call, or set_correlation_id) takes the general path: the
-- handshake first, then the request with its CORR annotation. batch: nil
-- for a call; for a batch (Pyro4's "<batch>", see M.batch) its flags, and
-- ... is the list of its calls, sent as the params after a handshake (the
-- daemon checks the methods' names, as Pyro4's does).
local function attempt(st, co, batch, name, ...)
  local corr = callctx_outgoing()
  local conn, cached, err = connection(st, co, corr == nil and batch == nil and name or nil)
  if cached then return pipelined(st, conn, cached, name, ...) end
  if conn == nil then return 0, false, false, false, err end
  if batch then
    local seq = next_seq(st)
    return seq, batch & FLAG_ONEWAY ~= 0, false, conn:request(MSG_INVOKE, batch, seq, st.ser,
      invoke_payload(st, st.uri.object, name, ...), st.timeout, corr)
  end
  local m = st.meta
  if not m.methods[name] then return 0, false, false, false, method_error(st, name) end
  local oneway = m.oneway[name] == true
  local seq = next_seq(st)
  if corr == nil and st.ser == SERIALIZERS.json and conn.invoke ~= nil then
    if oneway then return seq, true, true, conn:invoke_oneway(seq, st.uri.object, name, st.timeout, ...) end
    return seq, false, true, conn:invoke(seq, st.uri.object, name, st.timeout, ...)
  end
  return seq, oneway, false, conn:request(MSG_INVOKE, oneway and FLAG_ONEWAY or 0, seq, st.ser,
    invoke_payload(st, st.uri.object, name, table.pack(...)), st.timeout, corr)
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
    local id = msg.ann and msg.ann.STRM
    if type(id) ~= "string" or id == "" then
      error(errors.new("protocol", string.format(
        "%s: %s returned an item stream without a stream id (STRM)", st.url, name),
        { url = st.url, method = name }), 0)
    end
    return results.stream_iterator(st, name, id)
  end
  local v = msg.value
  if msg.classes and type(v) == "table" then -- Pyro4 Proxy class dicts become proxies
    v = require("springrun.refs").rebuild_result(v)
  end
  if msg.flags & FLAG_EXCEPTION ~= 0 then
    local e = errors.from_remote(v, { url = st.url, method = name })
    if errors.CONNECTION_DROPPING[e.class] then close_conn(st) end
    error(e, 0)
  end
  if v == get_json().null then return nil end
  return v
end

-- A request that failed: raises when the arguments could not be encoded
-- (the connection is kept), when some of it was sent or on the second
-- attempt; otherwise (not sent: the server went away meanwhile) drops the
-- connection and returns, and the caller tries again on a new one.
local function request_failed(st, name, attempt_no, emsg, code, sent)
  if is_encode_failure(code, sent) then
    error(errors.new("serialize", string.format("cannot send the arguments of %s to %s: %s",
      name, st.url, emsg), { url = st.url, method = name, code = code }), 0)
  end
  close_conn(st)
  if sent or attempt_no == 2 then
    error(comm_error(st, kind_of(code), "call " .. name .. " to", emsg, code, name, sent), 0)
  end
  debug_log("request %s to %s not sent (%s); reconnecting", name, st.url, tostring(emsg))
end

local NULL

-- The end of every attempt (see the pipeline above): the call's result,
-- ONEWAY, NEXT (attempt again), or raises.
local function finish(st, name, attempt_no, seq, oneway, fast, ok, v, code, sent)
  if fast and (ok or sent) then stats.fast = stats.fast + 1 end
  if ok == true then
    if oneway then return ONEWAY end
    NULL = NULL or get_core().null
    if v == NULL then return nil end
    return v
  elseif ok then
    return result_of(st, name, seq, ok)
  elseif ok == false then
    error(v, 0)
  end
  request_failed(st, name, attempt_no, v, code, sent)
  return NEXT
end

-- A batch's reply: the results of its calls, in order (springrun.results),
-- or raises when it is not a list (a protocol error: the connection goes).
local function batch_results(st, list, calls)
  if type(list) ~= "table" then
    close_conn(st)
    error(errors.new("protocol", string.format("%s: invalid reply to a batch (a %s, not a list)",
      st.url, type(list)), { url = st.url, method = "<batch>" }), 0)
  end
  return results.batch_results(list, calls, st.url)
end

-- The call name(...) on st in co's kind: its result or raises. batch: nil,
-- or a batch's flags (see attempt) and ... is its list of calls; the result
-- is then its BatchResults (nothing for a oneway batch).
local function call(st, co, batch, name, ...)
  local r = finish(st, name, 1, attempt(st, co, batch, name, ...))
  if r == NEXT then r = finish(st, name, 2, attempt(st, co, batch, name, ...)) end
  if r == ONEWAY then return end
  if batch then return batch_results(st, r, ...) end
  if results.is_stream(r) then return r, nil, nil, r end -- a for loop's closing value
  return r
end

-- Connects st now in co's kind, unless it has an idle connection, or raises.
local function bind(st, co)
  local conn, _, err = connection(st, co)
  if conn == nil then error(err, 0) end
  return conn
end

-- Pyro's wire PING (type 6, serializer 42) on st's connection, answered by
-- the daemon thread without running service code: true, or raises.
local function ping(st, co)
  local c = bind(st, co)
  local ok, emsg, code = c:push(MSG_PING, 0, 0, 42, "ping", true)
  local msg
  if ok then msg, emsg, code = c:receive(st.timeout) end
  if not msg or msg.type ~= MSG_PING then
    close_conn(st)
    error(comm_error(st, kind_of(code or "SR_EPROTOCOL"), "ping of", emsg or "no pong", code), 0)
  end
  return true
end

-- ---- locking and the three execution modes ------------------------------------------

local co_running = coroutine.running
local PUMPED = {}

-- The execution mode of a call on st made now: inside a springrun task
-- (the task: its calls use luv and yield), PUMPED (outside a task while
-- this process exports services, or while st's connection is busy or a
-- luv one: the call runs as a task and the loop is turned until it is
-- done, so calling a service of this process cannot deadlock), or nil
-- (blocking on the C connection).
local function mode(st)
  local rt = runtime_mod
  if rt == nil then rt = runtime() end
  if not rt then return nil end
  local _, main = co_running()
  if not main then
    local co = rt.current()
    if co then return co end
  end
  if st.busy or rt.has_exports() or (st.conn ~= nil and st.conn.async) then return PUMPED end
  return nil
end

-- ---- lanes: the connections of one proxy shared by tasks --------------------------
--
-- A connection carries one request at a time (a Python Pyro4 daemon serves
-- one connection's requests one after the other anyway), so tasks sharing a
-- proxy would queue behind each other. Each proxy therefore has lanes: the
-- first is the proxy's state itself (st.conn, st.busy: the connection a
-- blocking call uses too), the others are made on demand ({ conn =, busy = }
-- in st.lanes, task connections only), at most st.max_connections in all.
-- A task takes a free lane, or makes one, or waits in st.waiters for one.
-- Sequence numbers, metadata and the URL stay the proxy's.

M.MAX_CONNECTIONS = 16 -- the default of the proxy property max_connections

-- A call's view of st on a lane other than st itself, or with a timeout of
-- its own (a future's deadline): the lane's connection and that timeout,
-- everything else st's.
local view_mt = {
  __index = function(v, k)
    if k == "conn" then return v._lane.conn end
    if k == "timeout" then
      local t = v._timeout
      if t ~= nil then return t end
    end
    return v._st[k]
  end,
  __newindex = function(v, k, val)
    if k == "conn" then v._lane.conn = val else v._st[k] = val end
  end,
}

-- A free lane of st for the task co (marked busy), waiting for one when
-- all max_connections are busy.
local function acquire(st, co)
  while true do
    if not st.busy then
      st.busy = true
      return st
    end
    local lanes = st.lanes
    local n = lanes and #lanes or 0
    for i = 1, n do
      local l = lanes[i]
      if not l.busy then
        l.busy = true
        return l
      end
    end
    if n + 1 < (st.max_connections or M.MAX_CONNECTIONS) then
      if lanes == nil then
        lanes = {}
        st.lanes = lanes
      end
      local l = { conn = nil, busy = true }
      lanes[n + 1] = l
      return l
    end
    local w = st.waiters
    if w == nil then
      w = {}
      st.waiters = w
    end
    w[#w + 1] = co
    coroutine.yield()
  end
end

local function release(st, lane)
  lane.busy = false
  local w = st.waiters
  local co = w and table.remove(w, 1)
  if co then runtime().resume(co) end
end

local function released(st, lane, ok, ...)
  release(st, lane)
  if not ok then error((...), 0) end
  return ...
end

-- fn(st, co, ...) in the task co on a lane of st (timeout: the call's own
-- deadline, or nil for st.timeout).
local function in_task(st, co, timeout, fn, ...)
  local lane = acquire(st, co)
  local s = st
  if lane ~= st or timeout ~= nil then
    s = setmetatable({ _st = st, _lane = lane, _timeout = timeout }, view_mt)
  end
  return released(st, lane, pcall(fn, s, co, ...))
end

local function pumped(st, timeout, fn, ...)
  local rt, u = runtime(), get_uv()
  local args = table.pack(...)
  local res
  rt.spawn(function()
    res = table.pack(pcall(in_task, st, rt.current(), timeout, fn, table.unpack(args, 1, args.n)))
  end)
  while res == nil do u.run("once") end
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- fn(st, co, ...) in the mode() of st now; its results, or raises its
-- error. A blocking call needs no lane: nothing else runs until it ends.
local function execute(st, fn, ...)
  local co = mode(st)
  if co == nil then
    return fn(st, nil, ...)
  elseif co == PUMPED then
    return pumped(st, nil, fn, ...)
  end
  return in_task(st, co, nil, fn, ...)
end

M.SERIALIZERS = SERIALIZERS
M.tls_context = tls_context
M.close = close_all

-- st's proxy call name(...): the result, or raises.
function M.call(st, name, ...) return execute(st, call, nil, name, ...) end

-- The call name(...) on st from the task co with the deadline timeout
-- (seconds, or nil for st.timeout): a future's call (springrun.future).
function M.task_call(st, co, timeout, name, ...) return in_task(st, co, timeout, call, nil, name, ...) end

-- One entry of a batch's list of calls: name(...) as Pyro4 records it,
-- [name, [args], {kwargs}] (a last argument made with springrun.kwargs is
-- the kwargs). The arguments are encoded when the batch is sent.
function M.batch_entry(name, ...)
  local args, kwargs = split_kwargs(table.pack(...))
  return setmetatable({ name, setmetatable(args, array_mt()), kwargs or {} }, array_mt())
end

-- Pyro4's batch on st: calls (a list of batch_entry()s, .n set) sent as ONE
-- INVOKE of "<batch>" with FLAGS_BATCH (| FLAGS_ONEWAY when oneway) through
-- the call pipeline. Returns the BatchResults, or nothing for a oneway
-- batch; raises as a call does (a method the object lacks fails the whole
-- batch: the daemon's AttributeError).
local function batch_flags(oneway) return oneway and (FLAG_BATCH | FLAG_ONEWAY) or FLAG_BATCH end

function M.batch(st, calls, oneway)
  return execute(st, call, batch_flags(oneway), "<batch>", calls)
end

-- M.batch from the task co with the deadline timeout (nil: st.timeout): an
-- asynchronous batch's future.
function M.task_batch(st, co, timeout, calls, oneway)
  return in_task(st, co, timeout, call, batch_flags(oneway), "<batch>", calls)
end

-- Connects st now (with the handshake) unless it has an idle connection.
function M.bind(st) execute(st, bind) end

-- A wire PING on st's connection (made first when there is none): true, or raises.
function M.ping(st) return execute(st, ping) end

-- Counters of this process's proxy connections (tests, benchmarks):
-- connections made; pipelined: those whose first call went out with the
-- CONNECT (whether the handshake then succeeded or not); fast: calls sent
-- by a one-step C call (conn:invoke, conn:connect_invoke).
function M.stats()
  return { connections = stats.connections, pipelined = stats.pipelined, fast = stats.fast }
end

return M
