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
    headers = { ["Content-Type"] = "x-application/hessian" },
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

return M
