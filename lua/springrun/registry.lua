-- springrun.registry: an exported service's entry in etcd, under a lease it
-- keeps alive, so that a server that dies without unregistering (kill -9, a
-- host gone) disappears when the lease expires. PyroServiceExporter uses it
-- for its `registry` and `registry_ttl` properties.
--
--   registry.parse("etcd://127.0.0.1:2379/services")
--       -> { endpoint = "http://127.0.0.1:2379", prefix = "/services/" }
--   registry.key(prefix, name, pyro_url) -> "<prefix><name>/<host>:<port>"
--   registry.register(url, name, pyro_url, ttl) -> reg
--       grants a lease of ttl seconds (default 10), puts
--       "<prefix><name>/<host>:<port>" -> pyro_url under it and keeps it
--       alive from a task; raises (naming the registry URL) when etcd
--       cannot be reached. Several copies of one service (other ports or
--       hosts) get one key each under "<prefix><name>/".
--       When the lease is lost anyway (etcd unreachable for longer than
--       ttl), it registers again as soon as etcd answers.
--   reg:revoke()    stops the keep-alive and revokes the lease (the key goes
--                   at once); a failure is logged, not raised. Idempotent.
--
-- The other side, a pool's member source (springrun.pool's
-- registries.etcd; props.registry = "etcd://host:port/prefix" and
-- props.service_name):
--   registry.source(pool, url, props) -> source
--       lists "<prefix><service_name>/" (every value a PYRO: URL becomes a
--       member, anything else is skipped with a warning naming its key),
--       then watches it from the revision listed: a put adds a member, a
--       delete (revoke, lease expiry) removes it. When etcd breaks off,
--       the pool keeps the members it knows and the watch resumes from the
--       last revision it saw once etcd answers. When etcd cannot be
--       reached at start: with static props.urls the pool starts with those
--       and lists again (0.2 s doubling to 5 s) until etcd answers; without
--       them it raises, naming the registry URL. source:refresh() lists again
--       and makes the members match; source:close() stops it.
local errors = require "springrun.errors"
local uri = require "springrun.uri"
local etcd = require "springrun.etcd"
local log = require "springrun.log"
local runtime = require "springrun.runtime"
local uv = require "luv"

local M = {}

M.default_ttl = 10

local logger = log.get("springrun.registry")

function M.parse(url)
  if type(url) ~= "string" then
    errors.raise("config", "registry must be an etcd://host:port/prefix URL, got " .. type(url))
  end
  local hostport, path = url:match("^etcd://([^/]+)(/.*)$")
  if not hostport then hostport, path = url:match("^etcd://([^/]+)$"), "/" end
  if not hostport or not hostport:match(":%d+$") then
    errors.raise("config", "registry must be an etcd://host:port/prefix URL, got " .. url)
  end
  if path:sub(-1) ~= "/" then path = path .. "/" end
  return { endpoint = "http://" .. hostport, prefix = path }
end

function M.key(prefix, name, pyro_url)
  local where = pyro_url:match("@(.+)$") or pyro_url
  return prefix .. name .. "/" .. where
end

local Reg = {}
Reg.__index = Reg

-- Grants a lease, puts the key under it, starts the keeper.
function Reg:_register()
  local id = self.client:grant(self.ttl)
  self.client:put(self.key, self.value, { lease = id })
  self.lease = id
  self.keeper = self.client:keepalive(id, self.ttl, { on_lost = function() self:_lost() end })
  logger:debug("registered %s -> %s in %s (lease %d, ttl %d s)", self.key, self.value, self.url, id, self.ttl)
end

-- The lease expired: register again until it works or revoke() (each try
-- a short task, the waits on a luv timer: nothing stays busy meanwhile).
function Reg:_lost()
  self.lease, self.keeper = nil, nil
  local wait = 0.2
  local function try()
    self.timer = nil
    if self.revoked then return end
    runtime.spawn(function()
      local ok, err = pcall(self._register, self)
      if ok then
        if self.revoked then self:revoke() end
        return
      end
      logger:warning("registering %s in %s again failed: %s", self.key, self.url, tostring(err))
      if self.revoked then return end
      self.timer = uv.new_timer()
      self.timer:start(math.floor(wait * 1000), 0, function()
        self.timer:close()
        try()
      end)
      wait = math.min(wait * 2, math.max(1, self.ttl / 3))
    end)
  end
  try()
end

function M.register(url, name, pyro_url, ttl)
  local where = M.parse(url)
  ttl = ttl or M.default_ttl
  if math.type(ttl) ~= "integer" then
    if type(ttl) == "number" and ttl == math.floor(ttl) then ttl = math.tointeger(ttl) end
  end
  if math.type(ttl) ~= "integer" or ttl < 1 then
    errors.raise("config", "registry_ttl must be a whole number of seconds >= 1, got " .. tostring(ttl))
  end
  local self = setmetatable({ url = url, ttl = ttl, key = M.key(where.prefix, name, pyro_url),
    value = pyro_url, client = etcd.client(where.endpoint, { timeout = 3 }), revoked = false }, Reg)
  self:_register()
  return self
end

function Reg:revoke()
  self.revoked = true
  if self.timer and not self.timer:is_closing() then self.timer:close() end
  self.timer = nil
  if self.keeper then self.keeper:stop() end
  self.keeper = nil
  local id = self.lease
  self.lease = nil
  if id then
    local ok, err = pcall(self.client.revoke, self.client, id)
    if ok then
      logger:debug("revoked lease %d of %s in %s", id, self.key, self.url)
    else
      logger:warning("cannot revoke the lease of %s in %s: %s (it expires in %d s)", self.key, self.url,
        tostring(err), self.ttl)
    end
  end
end

-- ---- the pool's member source ------------------------------------------------

local Source = {}
Source.__index = Source

-- The member URL a value names, or nil and why.
local function member_of(value)
  if type(value) ~= "string" or not value:upper():match("^PYRO:") then
    return nil, "not a PYRO: URL"
  end
  local u, why = uri.parse(value)
  if not u then return nil, why end
  return u.url
end

function Source:_skip(key, value, why)
  logger:warning("pool '%s': skipping %q in %s: %s (value %q)", self.name, key, self.url, why,
    value:sub(1, 80))
end

-- key now names value (nil: the key is gone, or its value is not a member).
function Source:_set(key, value)
  local url
  if value ~= nil then
    local why
    url, why = member_of(value)
    if not url then self:_skip(key, value, why) end
  end
  local old = self.keys[key]
  if old == url then return end
  self.keys[key] = url
  if old then
    self.count[old] = self.count[old] - 1
    if self.count[old] == 0 then
      self.count[old] = nil
      if self.mine[old] then
        self.mine[old] = nil
        self.pool:remove(old)
      end
    end
  end
  if url then
    self.count[url] = (self.count[url] or 0) + 1
    -- a member the pool had already (a static URL) stays the pool's
    if self.count[url] == 1 and self.pool:add(url, "etcd") then self.mine[url] = true end
  end
end

-- Lists the prefix and makes the members from etcd match it; returns the
-- revision listed. Raises when etcd cannot be asked.
function Source:_list()
  local kvs, rev = self.client:range(self.prefix)
  local seen = {}
  for _, kv in ipairs(kvs) do
    seen[kv.key] = true
    self:_set(kv.key, kv.value)
  end
  for key in pairs(self.keys) do
    if not seen[key] then self:_set(key, nil) end
  end
  return rev
end

function Source:_watch(rev)
  self.watcher = self.client:watch(self.prefix, { start_revision = rev + 1,
    on_event = function(ev)
      if self.closed then return end
      self:_set(ev.key, ev.type == "put" and ev.value or nil)
    end,
    on_error = function(err)
      if self.closed then return end
      logger:warning("pool '%s': the watch on %s broke off (%s); keeping %d known members", self.name,
        self.url, (tostring(err):match("^[^\n]*")), #self.pool:members())
    end })
end

-- etcd could not be listed at start: list again from a task after a
-- growing wait, until it answers or the pool closes; then watch.
function Source:_retry(wait)
  self.timer = uv.new_timer()
  self.timer:start(math.floor(wait * 1000), 0, function()
    self.timer:close()
    self.timer = nil
    if self.closed then return end
    runtime.spawn(function()
      local ok, rev = pcall(self._list, self)
      if self.closed then return end
      if ok then
        logger:info("pool '%s': %s answered; watching %s", self.name, self.url, self.prefix)
        self:_watch(rev)
      else
        logger:debug("pool '%s': %s still unreachable: %s", self.name, self.url, tostring(rev))
        self:_retry(math.min(wait * 2, 5))
      end
    end)
  end)
end

function M.source(pool, url, props)
  local where = M.parse(url)
  local name = props.service_name
  if type(name) ~= "string" or name == "" or name:find("/", 1, true) then
    errors.raise("config", "PoolProxyFactory.service_name: registry " .. url
      .. " needs service_name (the service's key under the prefix, without '/')")
  end
  local self = setmetatable({ pool = pool, url = url, name = name, prefix = where.prefix .. name .. "/",
    client = etcd.client(where.endpoint, { timeout = props.timeout or 3 }), keys = {}, count = {},
    mine = {}, closed = false, tag = "etcd", live = true }, Source)
  local ok, rev = pcall(self._list, self)
  if ok then
    self:_watch(rev)
  elseif props.urls and #props.urls > 0 then
    logger:warning("pool '%s': cannot list members in %s (%s); starting with its %d static urls and "
      .. "retrying", name, url, (tostring(rev):match("^[^\n]*")), #props.urls)
    self:_retry(0.2)
  else
    errors.raise("connect", string.format("pool '%s': cannot list members in %s: %s", name, url,
      (tostring(rev):match("^[^\n]*"))), { pool = name, url = url })
  end
  return self
end

-- Lists again (etcd must answer) and makes the members match.
function Source:refresh()
  self:_list()
end

function Source:close()
  self.closed = true
  if self.watcher then self.watcher:cancel() end
  self.watcher = nil
  if self.timer and not self.timer:is_closing() then self.timer:close() end
  self.timer = nil
end

return M
