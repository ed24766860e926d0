-- springrun.transport: the two connection kinds under a proxy, with one
-- interface (push, receive, request, close; see src/lsr_client.c):
--   * blocking (springrun.core.client_connect, src/client.c): a plain
--     script or the REPL, no event loop, one caller; it also has the
--     one-step calls conn:invoke and conn:connect_invoke, which
--     springrun.session uses where they apply;
--   * luv (AsyncConn, here): inside a springrun task, where waiting yields
--     the task to the loop; luv callbacks wake it through runtime.resume.
-- connect() picks the kind. Both send queued bytes only on a connection
-- that can carry a request (not closed by the peer, nothing arrived
-- unasked), failing with sent = false otherwise; what to send and what a
-- reply means is springrun.session's.
local M = {}

local FLAG_ONEWAY = 0x04
local SER_JSON, SER_SERPENT = 2, 1

-- Modules loaded on first use, so `require "springrun.transport"` stays
-- cheap.
local lazy = require "springrun.lazy"
local get_core = lazy.loader "springrun.core"
local get_uv = lazy.loader "luv"
local runtime = lazy.loader "springrun.runtime"

-- The transport error text `name` of the C connection's table
-- (core.client_texts, src/client.h) with its arguments: both kinds say
-- the same about the same failure.
local function text(name, ...)
  return string.format(get_core().client_texts[name], ...)
end

-- ---- the luv connection, used inside springrun tasks ------------------------------
--
-- One request at a time (the proxy gives each task a lane of its own:
-- springrun.session).

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

-- Closes a luv handle this way (springrun.future's timers too).
M.close_handle = close_handle

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
    -- the loop's clock is as old as its last turn: a task started after a
    -- blocking call (or any long stretch without the loop) would otherwise
    -- see its deadline already past
    get_uv().update_time()
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
      if err then self:write_failed({ msg = text("send_failed", tostring(err)), code = err }) end
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
    self.broken = self.broken or { msg = text("recv_failed", tostring(err)), code = err }
  elseif data == nil then
    self.broken = self.broken or { msg = text("closed_by_peer"), code = "SR_ECLOSED" }
  elseif self.tls then
    -- TLS: decrypt (this also drives the handshake), send what the session
    -- answers, frame the plaintext
    self.rx = (self.rx or 0) + 1
    local plain, emsg, ecode = self.tls:feed(data)
    self:tls_pump()
    if emsg then
      if ecode == "SR_ECLOSED" then emsg = text("closed_by_peer") end
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
      return nil, text("resolve_timeout", host, timeout), "ETIMEDOUT"
    end
    if res.err or not res.addrs or not res.addrs[1] then
      self:close()
      return nil, text("resolve_failed", host, tostring(res.err or "no address")),
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
      return nil, text("connect_timeout", host, port, timeout), "ETIMEDOUT"
    end
    return nil, text("connect_failed", host, port, tostring(cres)), cres
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
        if b.code == "SR_ECLOSED" then m = text("tls_not_tls") end
        return nil, text("tls_failed", host, port, m), b.code == "SR_ECLOSED" and "SR_ETLS" or b.code
      end
      if timed_out and done == false then
        return nil, text("tls_timeout", host, port, timeout), "ETIMEDOUT"
      end
      return nil, text("tls_failed", host, port, tostring(herr or text("closed_by_peer"))), hcode or "SR_ETLS"
    end
  end
  self.tcp:unref()
  return self
end

-- True when the idle connection can carry a request (see the header).
function AsyncConn:idle()
  if self.closed or self.broken or #self.inbox > 0 then return false end
  -- TLS: the fd may hold records (session tickets) luv has not read yet;
  -- the read side marks a connection the peer closed as broken
  if self.tls then return true end
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
function AsyncConn:push(mtype, flags, seq, ser, value, raw, corr)
  if self.closed then return nil, text("closed"), "SR_ECLOSED" end
  local c = get_core()
  local data, emsg, ecode = value, nil, nil
  if not raw then data, emsg, ecode = c.client_encode_payload(ser, value) end
  if not data then return nil, emsg, ecode end
  local q = self.outq
  if q == nil then
    q = {}
    self.outq = q
  end
  q[#q + 1] = c.wire_encode(mtype, flags, seq, ser, data, corr and { { "CORR", corr } } or nil)
  return true
end

function AsyncConn:request(mtype, flags, seq, ser, value, timeout, corr)
  if self.closed then return nil, text("closed"), "SR_ECLOSED", false end
  local ok, emsg, ecode = self:push(mtype, flags, seq, ser, value, nil, corr)
  if not ok then return nil, emsg, ecode, false end
  return self:receive(timeout, flags & FLAG_ONEWAY ~= 0)
end

function AsyncConn:receive(timeout, noreply, known)
  local c = get_core()
  local co = runtime().current()
  local q = self.outq
  self.outq = nil
  if self.closed then return nil, text("closed"), "SR_ECLOSED", false end
  local wrote = true
  if q ~= nil then
    if not self:idle() then
      self:close()
      return nil, text("closed_by_peer"), "SR_ECLOSED", false
    end
    wrote = nil
    local frame = #q == 1 and q[1] or table.concat(q)
    if self.tls then
      local ok, terr, tcode = self.tls:write(frame)
      if not ok then
        self:close()
        return nil, text("send_failed", tostring(terr)), tcode, false
      end
      frame = self.tls:take()
    end
    local ok, werr = self.tcp:write(frame, function(err)
      if err and self.tls then
        -- the peer may have said why (a TLS alert) before the reset: let the
        -- read side report it
        self:write_failed({ msg = text("send_failed", tostring(err)), code = err })
        return
      end
      wrote = err or true
      if err then
        self.broken = self.broken or { msg = text("send_failed", tostring(err)), code = err }
      end
      self:wake()
    end)
    if not ok then
      self:close()
      return nil, text("send_failed", tostring(werr)), werr, false
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
  if self.closed then return nil, text("closed"), "SR_ECLOSED", true end
  if oneway and wrote == true then return true end
  if #self.inbox == 0 then
    local b = self.broken
    self:close()
    if b then return nil, b.msg, b.code, true end
    return nil, text("recv_timeout", timeout), "SR_ETIMEOUT", true
  end
  local msg = table.remove(self.inbox, 1)
  local reply = { type = msg.type, flags = msg.flags, seq = msg.seq, serializer = msg.serializer,
    ann = msg.ann }
  -- a class dict may be in it (see src/lsr_client.c has_class)
  if msg.flags & 0x02 ~= 0 or msg.data:find("__class__", 1, true) then reply.classes = true end
  if known ~= nil and msg.data == known then
    reply.same = true
  elseif msg.serializer == SER_JSON or msg.serializer == SER_SERPENT then
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

-- Connects to host:port within timeout seconds (nil: no limit), over TLS
-- with tls_ctx (servername: the name the certificate must carry): the luv
-- kind inside the task co, the blocking kind without one. Returns the
-- connection or nil, msg, code.
function M.connect(host, port, timeout, co, tls_ctx, servername)
  if co then return AsyncConn.connect(host, port, timeout, co, tls_ctx, servername) end
  return get_core().client_connect(host, port, timeout, tls_ctx, servername)
end

return M
