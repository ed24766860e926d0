-- springrun.etcd: an etcd v3 client over springrun.http, through etcd 3.4's
-- JSON gateway (POST /v3/...; keys and values travel base64-encoded, 64-bit
-- numbers as decimal strings). Calls block outside tasks and yield inside
-- them, as springrun.http does.
--
--   local etcd = require "springrun.etcd"
--   local c = etcd.client("http://127.0.0.1:2379" [, opts])
--       opts: timeout (s, each call; default 5), connect_timeout, and the
--       TLS options of springrun.http (ssl_cacerts, ssl_certfile,
--       ssl_keyfile, ssl_verify). "etcd://host:port" means http://host:port.
--   c:put(key, value [, { lease = id }]) -> revision
--   c:get(key) -> value, kv | nil         (nil: no such key)
--   c:range(prefix) -> { kv, ... }, revision   every key starting with prefix,
--       in key order; kv = { key =, value =, lease = id|nil,
--       create_revision =, mod_revision =, version = }
--   c:delete(key [, { prefix = true }]) -> number of keys deleted
--   c:grant(ttl) -> lease id, ttl         (etcd raises a short ttl to its minimum)
--   c:keepalive_once(id) -> ttl           (0: the lease is gone)
--   c:revoke(id) -> true                  (its keys are deleted)
--   c:keepalive(id, ttl [, { on_lost = fn(id) }]) -> keeper
--       a luv timer refreshes the lease every ttl/3 s (each refresh in a
--       short task); keeper:stop(). When etcd answers that the lease is
--       gone (it expired while etcd was out of reach), the keeper stops and
--       on_lost(id) is called.
--   c:watch(prefix, { on_event = fn(ev), on_error = fn(err), decode = fn,
--                     start_revision =, retry_interval =, max_retry_interval = })
--       -> watcher
--       a streamed POST /v3/watch (springrun.http's callback mode: no task
--       is kept busy, the stream lives on the loop) covers every key under
--       prefix and
--       calls on_event{ type = "put"|"delete", key =, value = (put only),
--       revision = mod_revision, lease = } in revision order. decode(value,
--       key) -> decoded | nil, why: a put whose value it rejects is not
--       delivered; the rejection is reported (on_error and a warning naming
--       the key), as is any unreadable line from etcd. When the stream ends
--       or breaks (etcd stopped, network), the watcher reports it, waits
--       retry_interval (0.2 s, doubling up to max_retry_interval, 5 s, reset
--       once etcd answers) and resumes from the last revision it delivered,
--       so no event is lost or repeated while etcd keeps its history.
--       watcher.revision is that revision; watcher.reconnects counts the
--       resumptions; watcher:cancel() stops it. on_event, on_error and
--       decode run from the loop: they must not block (spawn a task,
--       springrun.runtime.spawn, to make calls from them).
--
-- Errors: springrun.errors objects. What etcd refuses (a missing lease, a bad
-- request) is kind "remote", class "springrun.etcd.Error", with etcd's
-- message and its gRPC code as e.code; a reply that is not etcd's JSON is
-- kind "protocol"; network failures are springrun.http's (refused, timeout,
-- ...), their messages naming the URL.
local core = require "springrun.core"
local errors = require "springrun.errors"
local http = require "springrun.http"
local json = require "springrun.json"
local log = require "springrun.log"
local runtime = require "springrun.runtime"
local uv = require "luv"

local M = {}

local CLASS = "springrun.etcd.Error"
local b64, unb64 = core.base64_encode, core.base64_decode
local logger = log.get("springrun.etcd")

-- The longest line of a watch stream kept while waiting for its end.
M.max_line = 16 * 1024 * 1024

local Client = {}
Client.__index = Client
Client.__name = "springrun.etcd.Client"

-- The end of the range of keys that start with prefix (etcd's range_end):
-- the prefix with its last byte below 0xff incremented; "\0" means all keys.
local function prefix_end(prefix)
  local p = prefix
  while #p > 0 do
    local last = p:byte(-1)
    if last < 0xff then return p:sub(1, -2) .. string.char(last + 1) end
    p = p:sub(1, -2)
  end
  return "\0"
end
M.prefix_end = prefix_end

local function int(v)
  if v == nil then return nil end
  return math.tointeger(tonumber(v))
end

function M.client(endpoint, opts)
  if type(endpoint) ~= "string" then
    errors.raise("config", "springrun.etcd: expected an endpoint URL, got " .. type(endpoint), { class = CLASS })
  end
  local base = endpoint:gsub("^etcd://", "http://"):gsub("/+$", "")
  if not base:match("^https?://[^/]+$") then
    errors.raise("config", "springrun.etcd: endpoint must be http://host:port (or https://, etcd://), got "
      .. endpoint, { class = CLASS })
  end
  opts = opts or {}
  local c = setmetatable({ base = base, timeout = opts.timeout or 5, connect_timeout = opts.connect_timeout,
    tls = { ssl_cacerts = opts.ssl_cacerts, ssl_certfile = opts.ssl_certfile, ssl_keyfile = opts.ssl_keyfile,
      ssl_verify = opts.ssl_verify } }, Client)
  return c
end

-- The request options for POST base..path with a JSON body.
function Client:_opts(path, body, extra)
  local o = { method = "POST", url = self.base .. path, body = json.encode(body),
    headers = { ["Content-Type"] = "application/json" },
    timeout = self.timeout, connect_timeout = self.connect_timeout }
  for k, v in pairs(self.tls) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Decodes one JSON reply of etcd; raises protocol for anything else.
local function decode_reply(url, text)
  local ok, v = pcall(json.decode, text)
  if not ok or type(v) ~= "table" then
    errors.raise("protocol", string.format("etcd at %s: malformed reply (%s): %q", url,
      ok and "not a JSON object" or tostring(v), text:sub(1, 200)), { class = CLASS, url = url })
  end
  return v
end

-- POSTs body (a table) to path; returns the decoded reply or raises.
function Client:call(path, body)
  local url = self.base .. path
  local r = http.request(self:_opts(path, body))
  local v = decode_reply(url, r.body)
  if r.status ~= 200 then
    local msg = v.message or v.error or r.body
    errors.raise("remote", string.format("etcd at %s: %s (HTTP %d)", url, tostring(msg), r.status),
      { class = CLASS, url = url, code = v.code })
  end
  return v
end

local function kv_of(raw)
  return {
    key = unb64(raw.key or ""),
    value = raw.value and unb64(raw.value) or "",
    lease = int(raw.lease),
    create_revision = int(raw.create_revision),
    mod_revision = int(raw.mod_revision),
    version = int(raw.version),
  }
end

function Client:put(key, value, opts)
  local body = { key = b64(key), value = b64(value) }
  if opts and opts.lease then body.lease = opts.lease end
  local v = self:call("/v3/kv/put", body)
  return int(v.header and v.header.revision)
end

function Client:get(key)
  local v = self:call("/v3/kv/range", { key = b64(key) })
  local kvs = v.kvs
  if type(kvs) ~= "table" or kvs[1] == nil then return nil end
  local kv = kv_of(kvs[1])
  return kv.value, kv
end

function Client:range(prefix)
  local v = self:call("/v3/kv/range", { key = b64(prefix), range_end = b64(prefix_end(prefix)) })
  local out = {}
  for i, raw in ipairs(type(v.kvs) == "table" and v.kvs or {}) do out[i] = kv_of(raw) end
  return out, int(v.header and v.header.revision)
end

function Client:delete(key, opts)
  local body = { key = b64(key) }
  if opts and opts.prefix then body.range_end = b64(prefix_end(key)) end
  local v = self:call("/v3/kv/deleterange", body)
  return int(v.deleted) or 0
end

function Client:grant(ttl)
  if math.type(ttl) ~= "integer" or ttl <= 0 then
    errors.raise("config", "springrun.etcd: grant: ttl must be a positive integer (seconds), got "
      .. tostring(ttl), { class = CLASS })
  end
  local v = self:call("/v3/lease/grant", { TTL = ttl })
  if v.error and v.error ~= "" then
    errors.raise("remote", string.format("etcd at %s: %s", self.base, v.error), { class = CLASS })
  end
  return int(v.ID), int(v.TTL)
end

function Client:keepalive_once(id)
  local v = self:call("/v3/lease/keepalive", { ID = id })
  local res = v.result or {}
  return int(res.TTL) or 0
end

function Client:revoke(id)
  self:call("/v3/lease/revoke", { ID = id })
  return true
end

-- Keep-alives and watches outlive any task: they run from luv timers and
-- the HTTP client's callback mode, so a long-lived watch or keeper never
-- counts as a call in flight (the CLI's shutdown waits for those).

local function timer_once(seconds, fn)
  local t = uv.new_timer()
  t:start(math.max(1, math.floor(seconds * 1000)), 0, function()
    t:close()
    fn()
  end)
  return t
end

local function close_timer(t)
  if t and not t:is_closing() then
    t:stop()
    t:close()
  end
end

-- ---- lease keep-alive ---------------------------------------------------

local Keeper = {}
Keeper.__index = Keeper

function Keeper:_lost()
  logger:warning("lease %d at %s is gone (expired)", self.id, self.client.base)
  self:stop()
  if self.on_lost then
    local ok, err = pcall(self.on_lost, self.id)
    if not ok then logger:error("on_lost for lease %d failed: %s", self.id, tostring(err)) end
  end
end

-- One refresh, from a short task of its own (the timer keeps ticking; a
-- refresh still running skips the tick).
function Keeper:_tick()
  if self.busy or self.stopped then return end
  self.busy = true
  runtime.spawn(function()
    local ok, left = pcall(self.client.keepalive_once, self.client, self.id)
    self.busy = false
    if self.stopped then return end
    if ok and left == 0 then
      self:_lost()
    elseif not ok then
      logger:warning("keeping lease %d alive at %s failed: %s", self.id, self.client.base, tostring(left))
    end
  end)
end

function Client:keepalive(id, ttl, opts)
  opts = opts or {}
  local k = setmetatable({ client = self, id = id, ttl = ttl, on_lost = opts.on_lost, stopped = false,
    busy = false }, Keeper)
  local ms = math.max(500, math.floor(ttl * 1000 / 3))
  k.timer = uv.new_timer()
  k.timer:start(ms, ms, function() k:_tick() end)
  return k
end

function Keeper:stop()
  self.stopped = true
  close_timer(self.timer)
end

-- ---- watch -----------------------------------------------------------------

local Watcher = {}
Watcher.__index = Watcher
Watcher.__name = "springrun.etcd.Watcher"

function Watcher:_report(err)
  if self.on_error then
    local ok, e = pcall(self.on_error, err)
    if not ok then logger:error("watch on_error failed: %s", tostring(e)) end
  end
end

function Watcher:_warn(fmt, ...)
  local msg = string.format(fmt, ...)
  logger:warning("%s", msg)
  self:_report(errors.new("protocol", msg, { class = CLASS, url = self.url }))
end

function Watcher:_deliver(ev)
  local ok, e = pcall(self.on_event, ev)
  if not ok then logger:error("watch on_event failed: %s", tostring(e)) end
end

-- One decoded message of the watch stream. Returns false when the stream
-- must be dropped and opened again.
function Watcher:_message(msg)
  if msg.error then
    local e = msg.error
    self:_warn("etcd at %s ended the watch on %q: %s", self.url, self.prefix,
      type(e) == "table" and tostring(e.message) or tostring(e))
    return false
  end
  local res = msg.result
  if type(res) ~= "table" then
    self:_warn("etcd at %s sent a watch message without result", self.url)
    return true
  end
  self.retry = self.retry_interval -- etcd answers: the next break starts the back-off anew
  local compact = int(res.compact_revision)
  if compact and compact > 0 then
    self:_warn("watch on %q at %s: revisions before %d were compacted; resuming there", self.prefix,
      self.url, compact)
    self.revision = compact - 1
    return false
  end
  local header_rev = int(res.header and res.header.revision)
  local events = res.events
  if type(events) == "table" and events[1] ~= nil then
    for _, raw in ipairs(events) do
      local kv = type(raw.kv) == "table" and raw.kv or {}
      local rev = int(kv.mod_revision) or header_rev
      if self.revision == nil or rev == nil or rev > self.revision then
        local key = unb64(kv.key or "")
        local ev = { type = raw.type == "DELETE" and "delete" or "put", key = key, revision = rev,
          lease = int(kv.lease) }
        local deliver = true
        if ev.type == "put" then
          ev.value = kv.value and unb64(kv.value) or ""
          if self.decode then
            local ok, v, why = pcall(self.decode, ev.value, key)
            if ok and v ~= nil then
              ev.value = v
            else
              deliver = false
              self:_warn("skipping the value of %q under %q at %s: %s", key, self.prefix, self.url,
                ok and tostring(why or "rejected") or tostring(v))
            end
          end
        end
        if rev then self.revision = rev end
        if deliver then self:_deliver(ev) end
        if self.stopped then return false end
      end
    end
  elseif header_rev and not res.created and (self.revision == nil or header_rev > self.revision) then
    -- a progress notice: everything up to header_rev was sent. Not the
    -- "created" answer: its header is etcd's revision now, and the events
    -- from start_revision up to there are still to come.
    self.revision = header_rev
  elseif res.created and self.revision == nil and header_rev then
    -- a watch from now: nothing before header_rev is wanted
    self.revision = header_rev
  end
  if res.canceled then return false end
  return true
end

-- The stream broke or ended (err: the error object, or nil): report it and
-- open it again after the back-off.
function Watcher:_broken(err)
  self.req = nil
  if self.stopped then return end
  logger:warning("watch on %q at %s interrupted (%s); resuming from revision %s in %g s", self.prefix,
    self.url, err and tostring(err) or "the stream ended",
    tostring(self.revision and self.revision + 1 or "now"), self.retry)
  if err and not (errors.is(err, "closed") and err.code == "ECANCELED") then self:_report(err) end
  local wait = self.retry
  self.retry = math.min(self.retry * 2, self.max_retry_interval)
  self.timer = timer_once(wait, function()
    self.timer = nil
    if self.stopped then return end
    self.reconnects = self.reconnects + 1
    self:_connect()
  end)
end

-- Opens one watch stream (callback mode: nothing waits on it).
function Watcher:_connect()
  local create = { key = b64(self.prefix), range_end = b64(prefix_end(self.prefix)) }
  if self.revision then create.start_revision = self.revision + 1 end
  local pending = ""
  local req
  local function on_data(chunk)
    pending = pending .. chunk
    while true do
      local nl = pending:find("\n", 1, true)
      if not nl then break end
      local line = pending:sub(1, nl - 1)
      pending = pending:sub(nl + 1)
      if line:match("%S") then
        local ok, msg = pcall(json.decode, line)
        if not ok or type(msg) ~= "table" then
          self:_warn("etcd at %s sent an unreadable watch line: %q", self.url, line:sub(1, 200))
        elseif not self:_message(msg) then
          if req:cancel() then self:_broken(nil) end
          return
        end
      end
    end
    if #pending > M.max_line then
      self:_warn("etcd at %s sent a watch line longer than %d bytes", self.url, M.max_line)
      if req:cancel() then self:_broken(nil) end
    end
  end
  local o = self.client:_opts("/v3/watch", { create_request = create },
    { on_data = on_data, on_done = function(_, err) self:_broken(err) end })
  o.timeout = nil -- a watch lasts
  local ok, r = pcall(http.start, o)
  if not ok then return self:_broken(r) end
  req = r
  self.req = req
end

function Client:watch(prefix, opts)
  if type(prefix) ~= "string" then
    errors.raise("config", "springrun.etcd: watch: prefix must be a string", { class = CLASS })
  end
  opts = opts or {}
  if type(opts.on_event) ~= "function" then
    errors.raise("config", "springrun.etcd: watch: on_event must be a function", { class = CLASS })
  end
  local w = setmetatable({ client = self, prefix = prefix, url = self.base .. "/v3/watch",
    on_event = opts.on_event, on_error = opts.on_error, decode = opts.decode,
    revision = opts.start_revision and (opts.start_revision - 1) or nil,
    retry_interval = opts.retry_interval or 0.2, max_retry_interval = opts.max_retry_interval or 5,
    reconnects = 0, stopped = false }, Watcher)
  w.retry = w.retry_interval
  w:_connect()
  return w
end

function Watcher:cancel()
  if self.stopped then return end
  self.stopped = true
  if self.req then self.req:cancel() end
  self.req = nil
  close_timer(self.timer)
  self.timer = nil
end

return M
