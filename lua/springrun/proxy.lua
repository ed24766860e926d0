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
--   ssl          true: TLS (OpenSSL, 1.2+), as Pyro4's SSL=True
--   ssl_cacerts  CA file (or directory) the server certificate must chain to
--                (default: the system's CA store)
--   ssl_certfile, ssl_keyfile  a client certificate and key (PEM) for
--                mutual TLS (Pyro4's SSL_CLIENTCERT / SSL_CLIENTKEY)
--   ssl_servername  the name or IP address the server certificate must
--                carry (default: the URL's host); checked unless
--                ssl_verify = false (tests only: no verification at all)
-- Local names (never sent): the properties, set_service_url, set_timeout,
-- set_serializer, after_properties_set (checks the URL; the connection is
-- made lazily at the first call), destroy (closes the connection; a later
-- call reconnects), _disposable (true: contexts call destroy on close), and
-- helpers that start with '_': _pyro_call(name, ...) calls a remote method
-- whose name is taken by a local one, _pyro_bind() connects now,
-- _pyro_release() closes the connection, _pyro_metadata() -> { methods =,
-- oneway =, attrs = } (sets), and the field _pyro_seq (Pyro4's _pyroSeq:
-- the last sequence number used, 0..65535, settable). Other names starting
-- with '_' are nil: Pyro never exposes them.
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
--     counts them (fast: calls made in one step, see below).
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
--     exported by the same process cannot deadlock. The common blocking
--     call (JSON, a known method that is not oneway, an idle connection)
--     is one step in C (conn:invoke: encode, send, receive, decode), and
--     so is such a call as the first of a new connection to a service whose
--     metadata is remembered (conn:connect_invoke: CONNECT and the call in
--     one write, the CONNECTOK checked against the remembered one);
--     anything unusual they meet ends on the general path, with the same
--     results and errors. Calls from several tasks
--     on one proxy queue up: one request at a time per connection.
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

local M = {}

local LOGGER_NAME = "springrun.remoting.pyro.PyroProxyFactory"

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

-- ---- the async (luv) connection, used inside springrun tasks --------------------
--
-- Same interface as the C connection (core.client_connect): request(),
-- alive(), close(). Waiting yields the running task; luv callbacks wake it
-- through runtime.resume. One request at a time (the proxy serialises).

-- luv 1.44 crashes in lua_close when a handle was closed but the loop did
-- not turn since: its userdata is finalized (memory freed) while libuv's
-- close callback is still pending, and luv's own loop finalizer then runs
-- that callback. So handles closed here are counted, and each close makes a
-- fresh guard object (newer than the handle, so finalized before it) whose
-- finalizer turns the loop while any close is pending; only the newest
-- guard acts.
local closing = 0
local exit_guard

local function guard_gc(g)
  if not g.active then return end
  local n = 0
  while closing > 0 and n < 10 do
    get_uv().run("nowait")
    n = n + 1
  end
end

local function close_handle(h)
  if h == nil or h:is_closing() then return end
  closing = closing + 1
  h:close(function() closing = closing - 1 end)
  if exit_guard then exit_guard.active = false end
  exit_guard = setmetatable({ active = true }, { __gc = guard_gc })
end

local AsyncConn = {}
AsyncConn.__index = AsyncConn

local function is_ip(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

function AsyncConn:wake()
  local co = self.waiter
  if co then
    self.waiter = nil
    runtime().resume(co)
  end
end

-- Yields the task until pred() holds, the timer fired, or the connection broke.
function AsyncConn:wait(co, pred)
  while not (pred() or self.timed_out or self.broken or self.closed) do
    self.waiter = co
    coroutine.yield()
  end
  self.waiter = nil
end

function AsyncConn:arm(timeout)
  self.timed_out = false
  if timeout and timeout > 0 then
    self.timer:start(math.max(1, math.ceil(timeout * 1000)), 0, function()
      self.timed_out = true
      self:wake()
    end)
  end
end

function AsyncConn:disarm()
  if self.timer and not self.timer:is_closing() then self.timer:stop() end
end

-- A write of a TLS connection failed: a reset peer may have sent an alert
-- that says why, which the read side reports (as broken) as soon as the
-- loop reads it; the write error is reported only when nothing better came
-- within 100 ms.
function AsyncConn:write_failed(b)
  if self.broken or self.closed then return end
  local t = get_uv().new_timer()
  t:start(100, 0, function()
    close_handle(t)
    if not self.broken and not self.closed then
      self.broken = b
      self:wake()
    end
  end)
end

-- Writes the ciphertext the TLS session has to send.
function AsyncConn:tls_pump()
  local out = self.tls:take()
  if #out > 0 and not self.closed then
    self.tcp:write(out, function(err)
      if err then self:write_failed({ msg = "sending failed: " .. tostring(err), code = err }) end
    end)
  end
end

-- Frames plaintext bytes into the inbox; a broken stream marks the connection.
function AsyncConn:frame(data)
  self.framer:feed(data)
  while true do
    local msg, emsg, ename = self.framer:next()
    if msg == nil then
      if emsg ~= nil then
        self.broken = self.broken or { msg = emsg, code = ename or "SR_EPROTOCOL" }
      end
      return
    end
    self.inbox[#self.inbox + 1] = msg
  end
end

function AsyncConn:on_read(err, data)
  if err then
    self.broken = self.broken or { msg = "receiving failed: " .. tostring(err), code = err }
  elseif data == nil then
    self.broken = self.broken or { msg = "connection closed by the server", code = "SR_ECLOSED" }
  elseif self.tls then
    -- TLS: decrypt (this also drives the handshake), send what the session
    -- answers, frame the plaintext
    self.rx = (self.rx or 0) + 1
    local plain, emsg, ecode = self.tls:feed(data)
    self:tls_pump()
    if emsg then
      if ecode == "SR_ECLOSED" then emsg = "connection closed by the server" end
      self.broken = self.broken or { msg = emsg, code = ecode }
    end
    if #plain > 0 then self:frame(plain) end
  else
    self:frame(data)
  end
  self:wake()
end

-- Connects (resolving names through luv) with a deadline. Returns the
-- connection or nil, msg, code.
function AsyncConn.connect(host, port, timeout, co, tls_ctx, servername)
  local u = get_uv()
  local self = setmetatable({ async = true, inbox = {}, timer = u.new_timer() }, AsyncConn)
  self:arm(timeout)
  local ips = { host }
  if not is_ip(host) then
    local res
    local _, gerr = u.getaddrinfo(host, tostring(port), { socktype = "stream" }, function(err, addrs)
      res = { err = err, addrs = addrs }
      self:wake()
    end)
    if gerr then res = { err = gerr } end
    self:wait(co, function() return res ~= nil end)
    if self.timed_out then
      self:close()
      return nil, string.format("resolving %s timed out after %g s", host, timeout), "ETIMEDOUT"
    end
    if res.err or not res.addrs or not res.addrs[1] then
      self:close()
      return nil, string.format("cannot resolve host '%s': %s", host, tostring(res.err or "no address")),
        "EAI_NONAME"
    end
    ips = {}
    for _, a in ipairs(res.addrs) do ips[#ips + 1] = a.addr end
  end
  -- every address in turn (localhost may be ::1 and 127.0.0.1), as the C path
  local cres
  for _, ip in ipairs(ips) do
    close_handle(self.tcp)
    self.tcp = u.new_tcp()
    cres = nil
    local tcp = self.tcp
    local ok, cerr = tcp:connect(ip, port, function(err)
      if self.tcp ~= tcp then return end
      cres = err or true
      self:wake()
    end)
    if not ok then cres = cerr end
    self:wait(co, function() return cres ~= nil end)
    if cres == true or self.timed_out or self.closed then break end
  end
  self:disarm()
  if cres ~= true then
    self:close()
    if self.timed_out and cres == nil then
      return nil, string.format("connect to %s:%d timed out after %g s", host, port, timeout), "ETIMEDOUT"
    end
    return nil, string.format("connect to %s:%d failed: %s", host, port, tostring(cres)), cres
  end
  self.tcp:nodelay(true)
  self.framer = get_core().framer()
  if tls_ctx then
    local sess, serr, scode = tls_ctx:session(servername or host)
    if not sess then
      self:close()
      return nil, string.format("%s:%d: %s", host, port, tostring(serr)), scode
    end
    self.tls = sess
  end
  self.tcp:read_start(function(err, data) self:on_read(err, data) end)
  if self.tls then
    -- the TLS handshake, within the same timeout
    self:arm(timeout)
    local done, herr, hcode = self.tls:handshake()
    self:tls_pump()
    while done == false do
      local rx = self.rx
      self:wait(co, function() return self.rx ~= rx end)
      if self.broken or self.timed_out or self.closed then break end
      done, herr, hcode = self.tls:handshake()
      self:tls_pump()
    end
    self:disarm()
    if done ~= true then
      local b = self.broken
      local timed_out = self.timed_out
      self:close()
      if b then
        local m = b.msg
        if b.code == "SR_ECLOSED" then m = "TLS handshake failed: the server closed the connection (does it use TLS?)" end
        return nil, string.format("%s:%d: %s", host, port, m), b.code == "SR_ECLOSED" and "SR_ETLS" or b.code
      end
      if timed_out and done == false then
        return nil, string.format("TLS handshake with %s:%d timed out after %g s", host, port, timeout), "ETIMEDOUT"
      end
      return nil, string.format("%s:%d: %s", host, port, tostring(herr or "connection closed")), hcode or "SR_ETLS"
    end
  end
  self.tcp:unref()
  return self
end

function AsyncConn:alive()
  if self.closed or self.broken or #self.inbox > 0 then return false end
  local fd = self.tcp:fileno()
  return fd ~= nil and get_core().client_fd_alive(fd)
end

function AsyncConn:close()
  if self.closed then return end
  self.closed = true
  local co = self.waiter
  self.waiter = nil
  close_handle(self.tcp)
  close_handle(self.timer)
  if self.framer then self.framer:close() end
  if self.tls then self.tls:free() end
  if co then runtime().resume(co) end
end

-- Same contracts as the C conn:push, conn:receive and conn:request (see
-- src/lsr_client.c): push queues an encoded message, receive writes what
-- is queued (one write) and waits for the next reply.
function AsyncConn:push(mtype, flags, seq, ser, value, raw)
  if self.closed then return nil, "connection is closed", "SR_ECLOSED" end
  local c = get_core()
  local data, emsg, ecode = value, nil, nil
  if not raw then data, emsg, ecode = c.client_encode_payload(ser, value) end
  if not data then return nil, emsg, ecode end
  local q = self.outq
  if q == nil then
    q = {}
    self.outq = q
  end
  q[#q + 1] = c.wire_encode(mtype, flags, seq, ser, data)
  return true
end

function AsyncConn:request(mtype, flags, seq, ser, value, timeout)
  if self.closed then return nil, "connection is closed", "SR_ECLOSED", false end
  local ok, emsg, ecode = self:push(mtype, flags, seq, ser, value)
  if not ok then return nil, emsg, ecode, false end
  return self:receive(timeout, flags & FLAG_ONEWAY ~= 0)
end

function AsyncConn:receive(timeout, noreply, known)
  local c = get_core()
  local co = runtime().current()
  local q = self.outq
  self.outq = nil
  if self.closed then return nil, "connection is closed", "SR_ECLOSED", false end
  local wrote = true
  if q ~= nil then
    wrote = nil
    local frame = #q == 1 and q[1] or table.concat(q)
    if self.tls then
      local ok, terr, tcode = self.tls:write(frame)
      if not ok then
        self:close()
        return nil, "sending the request failed: " .. tostring(terr), tcode, false
      end
      frame = self.tls:take()
    end
    local ok, werr = self.tcp:write(frame, function(err)
      if err and self.tls then
        -- the peer may have said why (a TLS alert) before the reset: let the
        -- read side report it
        self:write_failed({ msg = "sending the request failed: " .. tostring(err), code = err })
        return
      end
      wrote = err or true
      if err then
        self.broken = self.broken or { msg = "sending the request failed: " .. tostring(err), code = err }
      end
      self:wake()
    end)
    if not ok then
      self:close()
      return nil, "sending the request failed: " .. tostring(werr), werr, false
    end
  end
  self.tcp:ref()
  self:arm(timeout)
  local oneway = noreply
  if oneway then
    self:wait(co, function() return wrote ~= nil end)
  else
    self:wait(co, function() return #self.inbox > 0 end)
  end
  self:disarm()
  if not self.closed then self.tcp:unref() end
  if self.closed then return nil, "connection closed", "SR_ECLOSED", true end
  if oneway and wrote == true then return true end
  if #self.inbox == 0 then
    local b = self.broken
    self:close()
    if b then return nil, b.msg, b.code, true end
    return nil, string.format("no reply within %g s", timeout), "SR_ETIMEOUT", true
  end
  local msg = table.remove(self.inbox, 1)
  local reply = { type = msg.type, flags = msg.flags, seq = msg.seq, serializer = msg.serializer,
    ann = msg.ann }
  if known ~= nil and msg.data == known then
    reply.same = true
  elseif msg.serializer == SERIALIZERS.json or msg.serializer == SERIALIZERS.serpent then
    if known == true then reply.raw = msg.data end
    local dok, v, dcode = c.client_decode_payload(msg.serializer, msg.flags, msg.data)
    if not dok then
      self:close()
      return nil, v, dcode, true
    end
    reply.value = v
  else
    reply.data = msg.data
  end
  return reply
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
  local host, port = st.uri.host, st.uri.port
  local ctx = tls_context(st)
  local name = st.ssl_servername or host
  if co then return AsyncConn.connect(host, port, st.timeout, co, ctx, name) end
  return get_core().client_connect(host, port, st.timeout, ctx, name)
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
        if v == core.null then return nil end
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

-- ---- the PyroProxyFactory class --------------------------------------------------------

local STATE = setmetatable({}, { __mode = "k" }) -- proxy -> state

local PROPS = { service_url = true, timeout = true, serializer = true, handshake = true,
  ssl = true, ssl_cacerts = true, ssl_certfile = true, ssl_keyfile = true, ssl_servername = true,
  ssl_verify = true }
local PROP_NAMES = { "service_url", "timeout", "serializer", "handshake", "ssl", "ssl_cacerts",
  "ssl_certfile", "ssl_keyfile", "ssl_servername", "ssl_verify" }

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
for _, k in ipairs({ "handshake", "ssl", "ssl_verify", "ssl_cacerts", "ssl_certfile", "ssl_keyfile",
    "ssl_servername" }) do
  methods["set_" .. k] = function(self, v) setters[k](check_state(self, "set_" .. k), v) end
end

function methods._pyro_call(self, name, ...)
  local st = check_state(self, "_pyro_call")
  if type(name) ~= "string" then
    error(errors.new("config", "PyroProxyFactory:_pyro_call: the method name must be a string"), 2)
  end
  return call_v(st, name, ...)
end

function methods._pyro_bind(self)
  local st = check_state(self, "_pyro_bind")
  if st.uri == nil then error(errors.new("config", "PyroProxyFactory: service_url is not set"), 2) end
  dispatch(st, function(co) connection(st, co) end)
  return true
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
-- _pyroBind, _pyroRelease, _pyroReconnect, _pyroGetMetadata, and the fields
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
    return call_v(st, name, ...)
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
local PROP_ORDER = { "serializer", "timeout", "handshake", "ssl", "ssl_verify", "ssl_cacerts",
  "ssl_certfile", "ssl_keyfile", "ssl_servername", "service_url" }

local function new_proxy()
  -- every field a proxy's state gets, so the table is sized once (nil
  -- fields size the constructor too) instead of growing three times
  local st = { seq = 0, ser = SERIALIZERS.json, serializer = "json", service_url = nil, url = nil,
    uri = nil, named = nil, meta = nil, conn = nil, busy = false, timeout = nil }
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

-- For the specs: the first call of a new connection in one step (connect_v,
-- true: the default) or always the general way (false), so both can be
-- checked to end alike.
function M._connect_one_step(on) connect_one_step = on and true or false end

function M.stats()
  return { connections = stats.connections, pipelined = stats.pipelined, fast = stats.fast }
end

-- True when v is a proxy made here.
function M.is_proxy(v) return STATE[v] ~= nil end

return M
