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
local errors = require "springrun.errors"
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

return M
