-- springrun.remoting.hessian: Hessian remoting under Spring Python's names
-- (springpython.remoting.hessian.*): HessianProxyFactory, a client proxy for
-- a Hessian service (Java's HessianServlet, Caucho's HessianSkeleton, or a
-- springrun HessianServiceExporter), and HessianServiceExporter, which serves
-- a Lua object to Hessian clients (Caucho's HessianProxyFactory in Java).
--
--   local svc = springrun.HessianProxyFactory { service_url = "http://127.0.0.1:8080/test" }
--   print(svc:add(2, 3))
--   local svc = springrun.hessian_proxy("http://127.0.0.1:8080/test", { timeout = 5 })
--
-- HessianProxyFactory properties (set in the constructor table, by
-- assignment before the first call, with set_<name>, or through a context's
-- props):
--   service_url  http:// or https:// URL of the service (required)
--   timeout      seconds bounding each call (connect included); nil: none
--   ssl_cacerts  CA file (or directory) an https server must chain to
--                (default: the system's store)
--   ssl_certfile, ssl_keyfile  client certificate and key (PEM)
--   ssl_verify   false: no certificate or name check (tests only)
-- Calls: svc:method(a, b, ...) sends a Hessian 2 call (H 02 00 C) with the
-- arguments in order (nil as null) and returns the decoded reply; values map
-- as springrun.hessian says (README "Hessian: Java and Lua values"). A
-- remote method whose name is a local one (after_properties_set, destroy,
-- set_*, a property) is reached with svc:_hessian_call("name", ...).
-- The HTTP goes through springrun.http (one libcurl client on luv's loop):
-- connections are kept alive and reused; inside a springrun task a call
-- yields, outside it blocks (turning the loop, so a service exported by the
-- same process still answers).
--
-- Errors are springrun.errors objects: a Hessian fault is kind "remote" with
--   e.class      the Java exception's class when the fault carried one
--                ("java.lang.IllegalStateException"), else
--                "com.caucho.hessian.client.HessianServiceException"
--   e.code       the fault code ("ServiceException", "NoSuchMethodException",
--                "ProtocolException")
--   e.message    the fault's message
--   e.exception  the Java exception's class (nil when none), e.detail the
--                decoded detail
-- An HTTP status other than 200 without a Hessian body is kind "protocol"
-- (code "HTTP_<status>"); transport failures are springrun.http's kinds
-- (refused, connect, timeout, closed, protocol).
local core = require "springrun.core"
local errors = require "springrun.errors"
local hessian = require "springrun.hessian"
local http = require "springrun.http"

local M = {}

local type, tostring, rawget, rawset, setmetatable, getmetatable, error =
  type, tostring, rawget, rawset, setmetatable, getmetatable, error
local encode_call, decode_reply = hessian.encode_call, hessian.decode_reply

-- ---- HessianProxyFactory ----------------------------------------------------------

local PROXY_PROPS = { "service_url", "timeout", "ssl_cacerts", "ssl_certfile", "ssl_keyfile",
                      "ssl_verify" }
local IS_PROXY_PROP = {}
for _, p in ipairs(PROXY_PROPS) do IS_PROXY_PROP[p] = true end

local Proxy = {}
local proxy_methods = {}
Proxy.__name = "springrun.HessianProxyFactory"

local function pconf(fmt, ...)
  error(errors.new("config", "HessianProxyFactory: " .. string.format(fmt, ...)), 3)
end

-- The checked request options, built on the first call and after any
-- property changes (properties are plain fields until then).
local function settle(self)
  local st = rawget(self, "_hst")
  if st and st.ok then return st end
  local url = rawget(self, "service_url")
  if url == nil then pconf("service_url is not set") end
  if type(url) ~= "string" or not url:match("^[Hh][Tt][Tt][Pp][Ss]?://[^/]") then
    pconf("service_url must be an http:// or https:// URL, got %s", tostring(url))
  end
  local timeout = rawget(self, "timeout")
  if type(timeout) == "string" then timeout = tonumber(timeout) or timeout end
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout > 0)) then
    pconf("timeout must be a positive number of seconds or nil, got %s", tostring(timeout))
  end
  for _, k in ipairs({ "ssl_cacerts", "ssl_certfile", "ssl_keyfile" }) do
    local v = rawget(self, k)
    if v ~= nil and (type(v) ~= "string" or v == "") then pconf("%s must be a file name, got %s", k, tostring(v)) end
  end
  local verify = rawget(self, "ssl_verify")
  if verify ~= nil and type(verify) ~= "boolean" then pconf("ssl_verify must be true or false") end
  st = { ok = true, opts = {
    url = url, method = "POST", timeout = timeout,
    -- "Expect:" stops libcurl from asking for 100-continue before a body
    -- over 1 KiB: servers that never answer it (the JDK's HttpServer)
    -- would make each such call wait a second
    headers = { "Content-Type: x-application/hessian", "Expect:" },
    ssl_cacerts = rawget(self, "ssl_cacerts"), ssl_certfile = rawget(self, "ssl_certfile"),
    ssl_keyfile = rawget(self, "ssl_keyfile"), ssl_verify = verify,
  } }
  rawset(self, "_hst", st)
  return st
end

-- The error object for a fault (decode_reply's second result).
local function fault_error(url, method, f)
  local e = errors.new("remote", f.message or "", { url = url, method = method })
  e.class = f.exception or "com.caucho.hessian.client.HessianServiceException"
  e.code = f.code
  e.exception = f.exception
  e.detail = f.detail
  e.args = { f.message }
  e.attributes = {}
  e.remote_traceback = ""
  return e
end

local function call(self, method, ...)
  local st = settle(self)
  local o = st.opts
  local ok, body = pcall(encode_call, method, ...)
  if not ok then
    errors.raise("serialize", tostring(body), { url = o.url, method = method })
  end
  o.body = body
  local resp = http.request(o)
  o.body = nil
  local ctype = resp.headers["content-type"] or ""
  if resp.status ~= 200 and not ctype:find("hessian", 1, true) then
    errors.raise("protocol", string.format("%s: HTTP %d from the server: %s", o.url, resp.status,
      (resp.body or ""):sub(1, 200):match("^[^\r\n]*")),
      { url = o.url, method = method, code = "HTTP_" .. resp.status })
  end
  local dok, rok, v = pcall(decode_reply, resp.body)
  if not dok then
    errors.raise("protocol", string.format("%s: cannot read the reply to %s: %s", o.url, method,
      tostring(rok)), { url = o.url, method = method })
  end
  if not rok then error(fault_error(o.url, method, v), 0) end
  if v == hessian.null then return nil end
  return v
end

function proxy_methods.after_properties_set(self) settle(self) end
function proxy_methods.destroy(self) end
function proxy_methods._hessian_call(self, method, ...)
  if type(method) ~= "string" then pconf("_hessian_call: the method name must be a string") end
  return call(self, method, ...)
end
for _, p in ipairs(PROXY_PROPS) do
  proxy_methods["set_" .. p] = function(self, v) self[p] = v end
end

function Proxy.__index(self, k)
  local m = proxy_methods[k]
  if m ~= nil then return m end
  if type(k) ~= "string" or IS_PROXY_PROP[k] or k:sub(1, 1) == "_" then return nil end
  local f = function(me, ...)
    if getmetatable(me) ~= Proxy then
      pconf("call remote method %s with ':' (svc:%s(...))", k, k)
    end
    return call(me, k, ...)
  end
  rawset(self, k, f)
  return f
end

function Proxy.__newindex(self, k, v)
  if IS_PROXY_PROP[k] then
    rawset(self, k, v)
    rawset(self, "_hst", nil) -- checked again at the next call
    return
  end
  error(errors.config_error(errors.unknown_property_message("HessianProxyFactory", k, PROXY_PROPS)), 2)
end

function Proxy.__tostring(self)
  return "<springrun.HessianProxyFactory " .. tostring(rawget(self, "service_url")) .. ">"
end

local HessianProxyFactory = setmetatable({ _disposable = true }, {
  __call = function(_, opts)
    local self = setmetatable({}, Proxy)
    if opts ~= nil then
      if type(opts) ~= "table" then pconf("expected a table of properties, got %s", type(opts)) end
      for k, v in pairs(opts) do self[k] = v end
    end
    return self
  end,
})
HessianProxyFactory.new = function(opts) return HessianProxyFactory(opts) end
M.HessianProxyFactory = HessianProxyFactory
M._proxy_mt = Proxy

--- springrun.hessian_proxy(url [, opts]): a HessianProxyFactory for url,
-- opts the other properties (timeout, ssl_*).
function M.hessian_proxy(url, opts)
  local p = HessianProxyFactory(opts)
  p.service_url = url
  settle(p)
  return p
end

-- ---- HessianServiceExporter ------------------------------------------------------

-- Properties: service (the Lua object), service_host (default "localhost"),
-- service_port (default 8080; 0 binds a free port, read back from
-- service_port or bound_port()), service_path (required: the URL path the
-- service answers at, e.g. "/ServiceName"), expose / hide (as PyroServiceExporter),
-- and the limits of PyroServiceExporter that apply to HTTP connections:
-- max_message_size (a request body; larger gets 413), max_connections
-- (more get 503), send_deadline (a request started must be complete
-- within it), handshake_timeout (a connection's first request must be
-- complete within it), idle_timeout, max_queued_per_connection,
-- max_queued, max_queued_bytes, max_reply_bytes_per_connection,
-- max_reply_bytes, call_timeout, max_depth, max_elements. A request head
-- longer than 16 KiB gets 431, bytes that are not HTTP 400; a request for
-- another path 404, a method other than POST 405.
-- https: ssl = true with ssl_certfile and ssl_keyfile (and, for mutual TLS,
-- ssl_cacerts with ssl_require_client_cert = true) -- PyroServiceExporter's
-- TLS properties, read and checked by the same code and served by the same
-- TLS engine on the daemon thread; every connection is then TLS, and a
-- plain HTTP request gets 400 "this server requires TLS". Log lines (calls
-- that fail, refused requests, TLS failures) go to the logger
-- springrun.remoting.hessian.HessianServiceExporter.
-- Exporters on one host:port share its listener (one path each; the first
-- sets the limits). Calls run like Pyro calls: each in its own task,
-- through the same dispatch; service:method(args...) gets the Hessian
-- call's arguments (null as nil); its one result is the reply; a Lua error
-- is a fault "ServiceException" whose detail is a java.lang.RuntimeException
-- with the error's message (an error object {class = "java.lang.X",
-- message = m} becomes a java.lang.X), an unknown method a fault
-- "NoSuchMethodException", a body that is not a Hessian call a fault
-- "ProtocolException".
local exporter_mod = require "springrun.exporter"
local daemon = require "springrun.daemon"
local address, norm_host = daemon.address, daemon.norm_host
local runtime = require "springrun.runtime"
local log = require("springrun.log").get("springrun.remoting.hessian.HessianServiceExporter")

local EXPORTER_PROPS = { "service", "service_host", "service_port", "service_path", "expose", "hide",
                         "ssl", "ssl_certfile", "ssl_keyfile", "ssl_cacerts", "ssl_require_client_cert" }
local EXPORTER_LIMITS = {}
for _, n in ipairs(exporter_mod._LIMIT_NAMES) do
  if n ~= "max_oneway" then
    EXPORTER_LIMITS[#EXPORTER_LIMITS + 1] = n
    EXPORTER_PROPS[#EXPORTER_PROPS + 1] = n
  end
end
local IS_EXPORTER_PROP = {}
for _, p in ipairs(EXPORTER_PROPS) do IS_EXPORTER_PROP[p] = true end

local listeners = {} -- "host:port" -> { id, port, key, where, scheme, paths = { path -> exporter }, count, limits, security }
local exporters = {} -- set of exporters exporting now

local Exporter = {}
Exporter.__index = Exporter
Exporter.__name = "springrun.HessianServiceExporter"
Exporter._disposable = true
Exporter.service_host = "localhost"
Exporter.service_port = 8080

function Exporter.__newindex(self, k, v)
  if not IS_EXPORTER_PROP[k] and not (type(k) == "string" and k:sub(1, 1) == "_") then
    error(errors.config_error(errors.unknown_property_message("HessianServiceExporter", k, EXPORTER_PROPS)), 2)
  end
  rawset(self, k, v)
end
for _, p in ipairs(EXPORTER_PROPS) do
  Exporter["set_" .. p] = function(self, v) self[p] = v end
end

local function who(self)
  local p = rawget(self, "service_path")
  return type(p) == "string" and ("HessianServiceExporter '" .. p .. "'") or "HessianServiceExporter"
end

local function econf(self, fmt, ...)
  error(errors.config_error(who(self) .. ": " .. string.format(fmt, ...)), 3)
end

--- Starts serving; raises on a configuration problem or when the address
-- cannot be listened on.
function Exporter:after_properties_set()
  if getmetatable(self) ~= Exporter then error("HessianServiceExporter: call after_properties_set with ':'", 2) end
  if rawget(self, "_export") then econf(self, "already exporting (call destroy() first)") end
  local service = self.service
  if service == nil then econf(self, "property service is not set") end
  if type(service) ~= "table" and type(service) ~= "userdata" then
    econf(self, "service must be a table or userdata object, got %s", type(service))
  end
  local path = self.service_path
  if type(path) ~= "string" or not path:match("^/[^%s?#]*$") or #path > 1024 then
    econf(self, "service_path must be a path starting with '/' (no spaces, '?' or '#'), got %s", tostring(path))
  end
  local host = self.service_host
  if type(host) ~= "string" or host == "" then econf(self, "service_host must be a host name or address, got %s", tostring(host)) end
  local port = self.service_port
  if type(port) == "string" then port = tonumber(port) end
  if math.type(port) == "float" and port == math.floor(port) then port = math.tointeger(port) end
  if math.type(port) ~= "integer" or port < 0 or port > 65535 then
    econf(self, "service_port must be an integer 0..65535, got %s", tostring(self.service_port))
  end
  rawset(self, "_who", who(self))
  local names, is_method = exporter_mod._select_exposed(self, service)
  if #names == 0 then econf(self, "the service exposes no methods (functions whose names do not start with '_')") end
  local limits = {}
  for _, k in ipairs(EXPORTER_LIMITS) do
    local v = self[k]
    if type(v) == "string" then v = tonumber(v) or v end
    limits[k] = v
  end
  local security = exporter_mod._read_security(self)
  exporter_mod._ensure_handler()
  local key = norm_host(host) .. ":" .. port
  local d = port ~= 0 and listeners[key] or nil
  if d then
    local why = daemon.shared_conflict(d, { { EXPORTER_LIMITS, limits, d.limits } },
      security, "the TLS settings ssl, ssl_certfile, ssl_keyfile, ssl_cacerts, ssl_require_client_cert")
    if why then econf(self, "%s", why) end
    if d.paths[path] then econf(self, "a service is already exported at %s%s", d.where, path) end
    local ok, rerr = core.daemon_register(d.id, path, "hessian")
    if not ok then econf(self, "cannot register: %s", tostring(rerr)) end
  else
    local ok, id, bound = pcall(core.daemon_listen, host, port, { { path, "hessian" } }, limits,
      security.listen, "http")
    if not ok then error(who(self) .. ": " .. tostring(id), 2) end
    if not id then
      if tostring(bound):find("EADDRINUSE", 1, true) then
        error(errors.config_error(string.format("cannot export %s: %s is already in use", path, address(key:match("^(.*):"), port))), 2)
      end
      error(errors.config_error(string.format("cannot export %s: %s", path, tostring(bound))), 2)
    end
    key = norm_host(host) .. ":" .. bound
    d = { id = id, port = bound, key = key, where = address(host, bound), paths = {}, count = 0,
          limits = limits, security = security, scheme = security.ssl and "https" or "http" }
    listeners[key] = d
    daemon.warn_if_open(log, path, host, bound, security)
  end
  d.paths[path] = self
  d.count = d.count + 1
  core.serve_register(d.id, path, service, is_method)
  rawset(self, "_export", { listener = d, path = path })
  rawset(self, "service_port", d.port)
  exporters[self] = true
  runtime._exported(1)
  log:info("exporting %s at %s://%s%s (methods: %s)", path, d.scheme, d.where, path, table.concat(names, ", "))
end

--- Stops serving (the listener closes with its last path). Idempotent.
function Exporter:destroy()
  local ex = rawget(self, "_export")
  if not ex then return end
  rawset(self, "_export", nil)
  exporters[self] = nil
  local d = ex.listener
  d.paths[ex.path] = nil
  d.count = d.count - 1
  core.serve_unregister(d.id, ex.path)
  if d.count == 0 then
    listeners[d.key] = nil
    core.daemon_unlisten(d.id)
    core.serve_unregister(d.id)
  else
    core.daemon_unregister(d.id, ex.path)
  end
  runtime._exported(-1)
  log:info("stopped exporting %s at %s://%s%s", ex.path, d.scheme, d.where, ex.path)
end

--- The port listened on, or nil while not exported.
function Exporter:bound_port()
  local ex = rawget(self, "_export")
  return ex and ex.listener.port or nil
end

--- http(s)://host:port/path of the service, or nil while not exported.
function Exporter:service_url()
  local ex = rawget(self, "_export")
  return ex and (ex.listener.scheme .. "://" .. ex.listener.where .. ex.path) or nil
end

function Exporter:is_exported() return rawget(self, "_export") ~= nil end

function Exporter.new(opts)
  local self = setmetatable({}, Exporter)
  if opts ~= nil then
    if type(opts) ~= "table" then error("HessianServiceExporter: expected a table of properties, got " .. type(opts), 2) end
    for k, v in pairs(opts) do self[k] = v end
  end
  return self
end
setmetatable(Exporter, { __call = function(_, opts) return Exporter.new(opts) end })
M.HessianServiceExporter = Exporter

--- Stops every Hessian export of this process (runtime shutdown).
function M.unexport_all()
  local list = {}
  for ex in pairs(exporters) do list[#list + 1] = ex end
  for _, ex in ipairs(list) do ex:destroy() end
end

return M
