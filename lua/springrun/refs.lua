-- springrun.refs: objects passed by reference, as Pyro4 passes them.
--
--   springrun.register(obj [, name]) -> "PYRO:name@host:port"
--       exports obj on this process's daemon: the listener of the call
--       being served when called from a service, else one this process
--       already listens on, else a new one on 127.0.0.1 (a free port).
--       name defaults to a random "obj_<hex>". Registered again: the same URL.
--   springrun.unregister(obj)      stops exporting what register exported
--   springrun.callback(obj) -> obj registers obj (a client's callback
--       object) and returns it, to pass as an argument
--
-- Every exported object (by an exporter or by register) travels as Pyro4's
-- Proxy class dict {"__class__": "Pyro4.core.Proxy", "state": [url, oneway,
-- methods, attrs, 0.0, null, "hello", 0, null]} wherever it appears in
-- arguments or results (the payload encoder asks core.encode_set_refs's
-- table). A Proxy class dict received becomes a springrun proxy, which
-- connects at its first call, never when decoded. A server answers a
-- request holding any other class dict (except Pyro4.core.URI and
-- exceptions) with SerializeError "unsupported serialized class: X", as a
-- Pyro4 daemon does (the connection stays open).
--
-- Registrations made while serving a call count against that call's
-- connection (max_registrations_per_connection, an exporter property of
-- the listener, default 64: past it register raises naming the limit) and
-- end when that connection closes.
local core = require "springrun.core"
local json = require "springrun.json"

local M = {}

local NULL = json.null

local refs = setmetatable({}, { __mode = "k" }) -- object -> its Proxy class dict
core.encode_set_refs(refs)

-- Makes obj travel as a proxy to url with metadata meta (the exporter calls it).
function M.set(obj, url, meta)
  refs[obj] = { __class__ = "Pyro4.core.Proxy",
    state = json.array({ url, meta.oneway, meta.methods, meta.attrs, 0.0, NULL, "hello", 0, NULL }) }
end

-- Stops obj travelling as a proxy to url (another export of it may have taken over).
function M.clear(obj, url)
  local d = refs[obj]
  if d and d.state[1] == url then refs[obj] = nil end
end

-- The URL obj travels as, or nil.
function M.url_of(obj)
  local d = refs[obj]
  return d and d.state[1] or nil
end

-- ---- class dicts received -----------------------------------------------------

local KEPT = { ["Pyro4.core.URI"] = true } -- class dicts passed on as plain tables

local proxy_mod
local function new_proxy(url)
  proxy_mod = proxy_mod or require "springrun.proxy"
  return proxy_mod.proxy(url)
end

-- v with every Proxy class dict in it replaced by a proxy (tables changed in
-- place). strict: any other class dict (but URI and exceptions) fails:
-- returns nil, message.
local function rebuild(v, strict)
  if type(v) ~= "table" then return v end
  local cls = rawget(v, "__class__")
  if cls ~= nil then
    if cls == "Pyro4.core.Proxy" then
      local st = rawget(v, "state")
      local url = type(st) == "table" and st[1] or nil
      if type(url) ~= "string" then return nil, "malformed Pyro4.core.Proxy class dict (no URI in its state)" end
      local ok, p = pcall(new_proxy, url)
      if not ok then return nil, "cannot rebuild Pyro4.core.Proxy: " .. tostring(p) end
      return p
    end
    if KEPT[cls] or rawget(v, "__exception__") == true or not strict then return v end
    return nil, "unsupported serialized class: " .. tostring(cls)
  end
  for k, x in next, v do
    if type(x) == "table" then
      local r, err = rebuild(x, strict)
      if r == nil then return nil, err end
      if r ~= x then v[k] = r end
    end
  end
  return v
end

-- A result holding class dicts: Proxy dicts become proxies, others stay.
function M.rebuild_result(v) return (rebuild(v, false)) end

-- The daemon's hook (core.daemon_set_class_hook): a request's params and kwargs.
function M.rebuild_request(params, kwargs)
  local p, err = rebuild(params, true)
  if p == nil then return nil, err end
  if kwargs ~= nil then
    local k
    k, err = rebuild(kwargs, true)
    if k == nil then return nil, err end
    kwargs = k
  end
  return p, kwargs
end

-- ---- register ------------------------------------------------------------------

local registered = setmetatable({}, { __mode = "k" }) -- obj -> exporter made by register
local by_conn = {}   -- conn -> { obj -> true } registered while serving a call on conn
local own_port       -- the port of the listener register opened, if any
local sweep_timer

local function sweep()
  for conn, objs in pairs(by_conn) do
    if core.daemon_peer(conn) == nil then
      by_conn[conn] = nil
      for obj in pairs(objs) do M.unregister(obj) end
    end
  end
  if next(by_conn) == nil then sweep_timer:stop() end
end

local function random_name()
  local b = require("luv").random(8)
  return "obj_" .. b:gsub(".", function(c) return string.format("%02x", c:byte()) end)
end

function M.register(obj, name)
  local t = type(obj)
  if t ~= "table" and t ~= "userdata" then
    error("springrun.register: expected a table or userdata object, got " .. t, 2)
  end
  if name ~= nil and (type(name) ~= "string" or name == "") then
    error("springrun.register: name must be a non-empty string, got " .. type(name), 2)
  end
  local old = registered[obj]
  if old and old:is_exported() then return M.url_of(obj) end
  local exporter = require "springrun.exporter"
  local runtime = require "springrun.runtime"
  local conn = runtime._serving_conn()
  local host, port, limits = exporter._registration_listener(own_port)
  if conn and limits then
    local objs = by_conn[conn]
    local n = 0
    for _ in pairs(objs or {}) do n = n + 1 end
    if n >= limits.max_registrations_per_connection then
      error(string.format("springrun.register: too many objects registered for this connection (max_registrations_per_connection %d)",
        limits.max_registrations_per_connection), 2)
    end
  end
  local ex = exporter.PyroServiceExporter { service_name = name or random_name(), service = obj,
    service_host = host or "127.0.0.1", service_port = port or 0 }
  ex:after_properties_set()
  if not host then own_port = ex:bound_port() end
  registered[obj] = ex
  if conn then
    by_conn[conn] = by_conn[conn] or {}
    by_conn[conn][obj] = true
    if not sweep_timer then
      sweep_timer = require("luv").new_timer()
      sweep_timer:unref()
    end
    if not sweep_timer:is_active() then sweep_timer:start(200, 200, sweep) end
  end
  return M.url_of(obj)
end

function M.unregister(obj)
  local ex = registered[obj]
  if ex == nil then return end
  registered[obj] = nil
  ex:destroy()
end

function M.callback(obj)
  M.register(obj)
  return obj
end

-- The number of objects registered while serving calls of connections
-- still counted (tests).
function M.count()
  local n = 0
  for _, objs in pairs(by_conn) do for _ in pairs(objs) do n = n + 1 end end
  return n
end

return M
