-- springrun: the public facade. Every name is loaded on first use from the
-- module that owns it, so `lua5.4 -l springrun` starts fast and a script pays
-- only for what it touches; pairs(springrun) lists (and loads) all of them.

---@class springrun.Proxy
---@field service_url string
---@field timeout number?
---@field serializer "json"|"serpent"
---@field _pyroTimeout number?
---@field _pyroHandshake any
---@field _pyroSeq integer
---@field _pyroUri string
---@field _pyro_bind fun(self: springrun.Proxy): boolean
---@field _pyroBind fun(self: springrun.Proxy): boolean
---@field _pyro_release fun(self: springrun.Proxy)
---@field _pyroRelease fun(self: springrun.Proxy)
---@field _pyro_metadata fun(self: springrun.Proxy): {methods: table<string, boolean>, oneway: table<string, boolean>, attrs: table<string, boolean>}
---@field _pyro_call fun(self: springrun.Proxy, name: string, ...): ...
---@field [string] fun(self: springrun.Proxy, ...): ...  remote methods

---@class springrun.proxy_module
---@overload fun(url: string, opts?: {timeout?: number, serializer?: "json"|"serpent", handshake?: any, ssl?: boolean, ssl_cacerts?: string, ssl_certfile?: string, ssl_keyfile?: string, ssl_servername?: string, ssl_verify?: boolean}): springrun.Proxy
---@field stats fun(): {connections: integer, pipelined: integer, fast: integer}
---@field kwargs fun(t: table<string, any>): table
---@field is_proxy fun(v: any): boolean

---@class springrun
---@field version string
---@field json table                     springrun.json: the JSON payload codec
---@field serpent table                  springrun.serpent: the serpent payload codec
---@field null lightuserdata             None / JSON null (== cjson.null)
---@field log table                      springrun.log: named loggers
---@field errors table                   springrun.errors: typed errors, config_error
---@field naming table                   springrun.naming: PYRONAME resolution, name server calls
---@field context fun(...: table): springrun.ApplicationContext
---@field load_context fun(path: string): springrun.ApplicationContext
---@field ref fun(id: string): table
---@field object fun(def: table): table
---@field ApplicationContext table
---@field context_from_xml fun(path: string): springrun.ApplicationContext
---@field PyroServiceExporter table      springrun.PyroServiceExporter{service_name=, service=, service_host=, service_port=, expose=, hide=, oneway=, ...}
---@field PyroProxyFactory table         springrun.PyroProxyFactory{service_url=, timeout=, serializer=, ...}
---@field proxy springrun.proxy_module   springrun.proxy(url, opts); springrun.proxy.stats()
---@field kwargs fun(t: table<string, any>): table
---@field run fun(fn?: function): any
---@field stop fun()
---@field current_context fun(): {correlation_id: string?, client_address: string?}
---@field set_correlation_id fun(uuid: string?)
---@field stream fun(iter: any, state?: any, control?: any, closing?: any): table
---@field register fun(obj: table, name?: string): string
---@field unregister fun(obj: table)
---@field callback fun(obj: table): table

---@class springrun.ApplicationContext
---@field get_object fun(self: springrun.ApplicationContext, id: string): any
---@field has_object fun(self: springrun.ApplicationContext, id: string): boolean
---@field object_ids fun(self: springrun.ApplicationContext): string[]
---@field close fun(self: springrun.ApplicationContext)

---@type springrun
local M = {}

-- public name -> { module, field } (field nil: the module itself)
local exports = {
  json = { "springrun.json" },
  serpent = { "springrun.serpent" },
  null = { "springrun.json", "null" },
  log = { "springrun.log" },
  errors = { "springrun.errors" },
  context = { "springrun.context", "context" },
  load_context = { "springrun.context", "load_context" },
  ref = { "springrun.context", "ref" },
  object = { "springrun.context", "object" },
  ApplicationContext = { "springrun.context", "ApplicationContext" },
  context_from_xml = { "springrun.xml", "context_from_xml" },
  PyroServiceExporter = { "springrun.remoting.pyro", "PyroServiceExporter" },
  PyroProxyFactory = { "springrun.remoting.pyro", "PyroProxyFactory" },
  proxy = { "springrun.proxy", "proxy", "callable" },
  naming = { "springrun.naming" },
  kwargs = { "springrun.proxy", "kwargs" },
  run = { "springrun.runtime", "run" },
  stop = { "springrun.runtime", "stop" },
  _serve_after_script = { "springrun.runtime", "serve_after_script" },
  pool = { "springrun.pool", "pool" },
  PoolProxyFactory = { "springrun.pool", "PoolProxyFactory" },
  current_context = { "springrun.callctx", "current_context" },
  set_correlation_id = { "springrun.callctx", "set_correlation_id" },
  stream = { "springrun.exporter", "stream" },
  register = { "springrun.refs", "register" },
  unregister = { "springrun.refs", "unregister" },
  callback = { "springrun.refs", "callback" },
}

-- springrun.proxy is both the function (springrun.proxy(url, opts)) and
-- the table of the proxy module's helpers (springrun.proxy.stats()).
local function callable_module(mod, fname)
  local f = mod[fname]
  return setmetatable({ stats = mod.stats, kwargs = mod.kwargs, is_proxy = mod.is_proxy },
    { __call = function(_, ...) return f(...) end })
end

setmetatable(M, {
  __index = function(t, name)
    local e = exports[name]
    if e == nil then return nil end
    local mod = require(e[1])
    local v = mod
    if e[3] == "callable" then
      v = callable_module(mod, e[2])
    elseif e[2] ~= nil then
      v = mod[e[2]]
    end
    rawset(t, name, v)
    return v
  end,
  -- every public name (those not starting with '_'), loading what is not yet
  __pairs = function(t)
    local names = { "version" }
    for name in pairs(exports) do
      if name:sub(1, 1) ~= "_" then names[#names + 1] = name end
    end
    table.sort(names)
    local i = 0
    return function()
      i = i + 1
      local name = names[i]
      if name == nil then return nil end
      return name, t[name]
    end, t, nil
  end,
})

M.version = "0.1.0"

return M
