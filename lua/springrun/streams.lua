-- springrun.streams: what an export keeps beyond a single call -- item
-- streams (a method that returns springrun.stream(iter)) and the instances
-- of instance_mode "session" and "percall" -- and the one sweep that drops
-- what belonged to client connections that have closed.
--
-- Apart from springrun.daemon (the dispatch policy: it opens a stream for a
-- call's result and asks here for the object a call runs on) and
-- springrun.exporter (which checks the properties) because this is state
-- with a life of its own: kept per connection, limited per listener, ended
-- by a timer rather than by a call. Streams and session instances share
-- that timer, so they share the module.
--
--   stream(f [, s [, c [, closing]]]), is_stream(v)   springrun.stream (below)
--   LIMITS, LIMIT_NAMES          item stream limits: defaults, property names
--   open(d, conn, value) -> id | nil, err   a stream for a call's result
--   next_item(d, id), close(d, id)   Pyro.Daemon's get_next_stream_item and
--                                    close_stream on listener d
--   count(d)                     streams open on listener d (lingering too)
--   INSTANCE_MODES, instance_of, stand_in(entry), drop_sessions(entry)
--                                instance modes (below)
local core = require "springrun.core"
local runtime = require "springrun.runtime"
local exc = require "springrun.exception"

local M = {}

local pyro_error, err_text = exc.pyro_error, exc.err_text

local luv_now = require("luv").now
local function uv_now_s() return luv_now() / 1000 end

local exporter_log = require("springrun.log").get("springrun.remoting.pyro.PyroServiceExporter")

-- item streams (see "item streams" below): id -> { next, closing, d,
-- conn (nil: lingering), last, since }
local streams = {}
local close_stream, next_stream_item -- (below)

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
-- through prepare (springrun.daemon), which asks instance_of[stand-in] for
-- the call's object.

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

-- Opens a stream of value for a call on conn of listener d (nil: the call
-- is not a remote one): its id, or nil and the error.
local function open_stream(d, conn, value)
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

-- Pyro.Daemon's close_stream(id) of listener d.
local function close_of(d, id)
  local st = type(id) == "string" and streams[id]
  if st and st.d == d then close_stream(id, "close_stream") end
end

-- The number of item streams open on listener d, including those lingering
-- after their connection closed.
local function count(d)
  local n = 0
  for _, st in pairs(streams) do
    if st.d == d then n = n + 1 end
  end
  return n
end

-- The export of entry ended: its session instances go.
local function drop_sessions(entry)
  held[entry] = nil
  entry.sessions, entry.nsessions = {}, 0
end

M.LIMITS, M.LIMIT_NAMES = STREAM_LIMITS, STREAM_LIMIT_NAMES
M.open, M.next_item, M.close, M.count = open_stream, next_stream_item, close_of, count
M.INSTANCE_MODES, M.instance_of = INSTANCE_MODES, instance_of
M.stand_in, M.drop_sessions = stand_in, drop_sessions

return M
