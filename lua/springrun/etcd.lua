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
--       a task refreshes the lease every ttl/3 s; keeper:stop(). When etcd
--       answers that the lease is gone (it expired while etcd was out of
--       reach), on_lost(id) is called and the keeper stops.
--   c:watch(prefix, { on_event = fn(ev), on_error = fn(err), decode = fn,
--                     start_revision =, retry_interval =, max_retry_interval = })
--       -> watcher
--       a task holds a streamed POST /v3/watch for every key under prefix and
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
--       resumptions; watcher:cancel() stops it.
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

-- ---- tasks: sleeping that a stop can cut short ----------------------------

-- Runs fn as a task now (a task of its own even when called from one).
local function spawn(fn) return runtime.spawn(fn) end

-- Suspends the running task for `seconds`, or until wake(holder) is called;
-- holder.sleeping is set meanwhile.
local function sleep(holder, seconds)
  local co = runtime.current()
  local t = uv.new_timer()
  holder.sleeping = { timer = t, co = co }
  t:start(math.max(1, math.floor(seconds * 1000)), 0, function()
    local s = holder.sleeping
    if s and s.co == co then
      holder.sleeping = nil
      runtime.resume(co)
    end
  end)
  coroutine.yield()
  t:stop()
  t:close()
end

local function wake(holder)
  local s = holder.sleeping
  if s then
    holder.sleeping = nil
    runtime.resume(s.co)
  end
end

-- ---- lease keep-alive ---------------------------------------------------

local Keeper = {}
Keeper.__index = Keeper

function Client:keepalive(id, ttl, opts)
  opts = opts or {}
  local k = setmetatable({ client = self, id = id, ttl = ttl, on_lost = opts.on_lost, stopped = false }, Keeper)
  local interval = math.max(0.5, ttl / 3)
  spawn(function()
    while not k.stopped do
      sleep(k, interval)
      if k.stopped then break end
      local ok, left = pcall(self.keepalive_once, self, id)
      if k.stopped then break end
      if ok and left == 0 then
        logger:warning("lease %d at %s is gone (expired)", id, self.base)
        k.stopped = true
        if k.on_lost then
          local cok, cerr = pcall(k.on_lost, id)
          if not cok then logger:error("on_lost for lease %d failed: %s", id, tostring(cerr)) end
        end
      elseif not ok then
        logger:warning("keeping lease %d alive at %s failed: %s", id, self.base, tostring(left))
      end
    end
  end)
  return k
end

function Keeper:stop()
  self.stopped = true
  wake(self)
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
  elseif header_rev and (self.revision == nil or header_rev > self.revision) then
    -- created or a progress notice: everything up to header_rev is known
    self.revision = header_rev
  end
  if res.canceled then return false end
  return true
end

-- Holds one watch stream until it ends, breaks or is cancelled.
function Watcher:_stream()
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
          req:cancel()
          return
        end
      end
    end
    if #pending > M.max_line then
      self:_warn("etcd at %s sent a watch line longer than %d bytes", self.url, M.max_line)
      req:cancel()
    end
  end
  local o = self.client:_opts("/v3/watch", { create_request = create }, { on_data = on_data })
  o.timeout = nil -- a watch lasts
  req = http.start(o)
  self.req = req
  local ok, err = pcall(req.wait, req)
  self.req = nil
  return ok, err
end

function Watcher:_run()
  while not self.stopped do
    local ok, err = self:_stream()
    if self.stopped then break end
    local why = ok and "the stream ended" or tostring(err)
    if not (not ok and errors.is(err, "closed") and err.code == "ECANCELED") then
      logger:warning("watch on %q at %s interrupted (%s); resuming from revision %s in %g s", self.prefix,
        self.url, why, tostring(self.revision and self.revision + 1 or "now"), self.retry)
      if not ok then self:_report(err) end
    end
    sleep(self, self.retry)
    self.retry = math.min(self.retry * 2, self.max_retry_interval)
    if not self.stopped then self.reconnects = self.reconnects + 1 end
  end
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
  spawn(function() w:_run() end)
  return w
end

function Watcher:cancel()
  if self.stopped then return end
  self.stopped = true
  if self.req then self.req:cancel() end
  wake(self)
end

return M
