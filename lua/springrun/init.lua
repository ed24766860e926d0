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
---@field _pyroReconnect fun(self: springrun.Proxy): boolean
---@field _pyroGetMetadata fun(self: springrun.Proxy): {methods: table<string, boolean>, oneway: table<string, boolean>, attrs: table<string, boolean>}
---@field _pyroSerializer "json"|"serpent"
---@field _pyro_seq integer
---@field _pyroMethods table<string, boolean>  read only; empty until connected
---@field _pyroOneway table<string, boolean>   read only
---@field _pyroAttrs table<string, boolean>    read only
---@field _pyroBatch fun(self: springrun.Proxy): springrun.BatchProxy  Pyro4's batch: record calls, send them as one
---@field _pyro_batch fun(self: springrun.Proxy): springrun.BatchProxy
---@field _pyroAsync fun(self: springrun.Proxy, on?: boolean)  on (default true): remote calls return futures
---@field _pyro_async fun(self: springrun.Proxy, on?: boolean)
---@field async fun(self: springrun.Proxy, name: string, ...): springrun.Future
---@field [string] fun(self: springrun.Proxy, ...): ...  remote methods (futures after _pyroAsync())

---@class springrun.BatchProxy       proxy:_pyroBatch(): b:m(...) records m(...); b() sends them all in one request
---@overload fun(opts?: {oneway?: boolean, async?: boolean, asynchronous?: boolean}): springrun.BatchResults|springrun.Future|nil
---@field [string] fun(self: springrun.BatchProxy, ...)  records the call (nothing is sent yet)

---@class springrun.BatchResults     the results of a batch, in order: for r in b() do ... end
---@overload fun(): any             the next result (springrun.null for nil); raises at the call that failed

---@class springrun.Future           a call or task under way (springrun.future)
---@field wait fun(self: springrun.Future, timeout?: number): ...  its results, or raises its error
---@field done fun(self: springrun.Future): boolean
---@field result fun(self: springrun.Future): ...  its results once done, or raises
---@field on_done fun(self: springrun.Future, fn: fun(f: springrun.Future)): springrun.Future
---@field cancel fun(self: springrun.Future): boolean

---@class springrun.Stats            what exporter:stats() and springrun.stats() return
---@field calls integer                calls finished (returned, raised, or refused)
---@field errors integer               of those, the ones answered with an exception
---@field in_flight integer            calls started and not finished
---@field latency {p50: number, p90: number, p99: number, p999: number, max: number, mean: number}  seconds

---@class springrun.PyroServiceExporter
---@overload fun(props: table): springrun.PyroServiceExporter
---@field service_name string
---@field service table|userdata
---@field service_host string           default "localhost"
---@field service_port integer|integer[] default 7766; 0: a free port; a list: one copy per port
---@field oneway string[]?
---@field expose string[]?              exactly these methods
---@field hide string[]?                all but these
---@field remote_stats boolean?         false: Pyro.Daemon.get_stats refuses this object
---@field register_with_nameserver boolean?
---@field ns_host string?
---@field ns_port integer?
---@field ns_name string?
---@field registry string?              "etcd://host:port/prefix"
---@field registry_ttl number?
---@field ssl boolean?
---@field ssl_certfile string?
---@field ssl_keyfile string?
---@field ssl_cacerts string?
---@field ssl_require_client_cert boolean?
---@field handshake_secret string?
---@field max_message_size integer?
---@field max_connections integer?
---@field send_deadline number|false?
---@field handshake_timeout number|false?
---@field idle_timeout number|false?
---@field max_queued_per_connection integer?
---@field max_queued integer?
---@field max_queued_bytes integer?
---@field max_reply_bytes_per_connection integer?
---@field max_reply_bytes integer?
---@field max_oneway integer?
---@field call_timeout number|false?
---@field max_depth integer?
---@field max_elements integer?
---@field after_properties_set fun(self: springrun.PyroServiceExporter)
---@field destroy fun(self: springrun.PyroServiceExporter)
---@field is_exported fun(self: springrun.PyroServiceExporter): boolean
---@field bound_port fun(self: springrun.PyroServiceExporter): integer?
---@field bound_ports fun(self: springrun.PyroServiceExporter): integer[]?
---@field metadata fun(self: springrun.PyroServiceExporter): {methods: string[], oneway: string[], attrs: string[]}?
---@field stats fun(self: springrun.PyroServiceExporter): springrun.Stats?

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
---@field PyroServiceExporter springrun.PyroServiceExporter  springrun.PyroServiceExporter{service_name=, service=, ...}
---@field PyroProxyFactory table         springrun.PyroProxyFactory{service_url=, timeout=, serializer=, ...}
---@field proxy springrun.proxy_module   springrun.proxy(url, opts); springrun.proxy.stats()
---@field kwargs fun(t: table<string, any>): table
---@field run fun(opts?: {timeout?: number, fail_on_error?: boolean}): integer
---@field spawn fun(fn: function, ...): springrun.Future
---@field sleep fun(seconds: number)
---@field async fun(proxy: any, opts?: {timeout?: number}): table  springrun.async(proxy):method(...) -> future
---@field gather fun(futures: springrun.Future[], opts?: {all_errors?: boolean, timeout?: number}): table, table?
---@field first fun(futures: springrun.Future[], opts?: {timeout?: number}): integer, any
---@field stop fun()
---@field pool fun(props: table): table     springrun.pool{urls=, service_name=, strategy=, ...}: a pool, called like a proxy
---@field PoolProxyFactory table         the pool for contexts (class = springrun.PoolProxyFactory)
---@field HessianProxyFactory table      springrun.HessianProxyFactory{service_url=, timeout=, ...}: a Java service over Hessian
---@field HessianServiceExporter table   springrun.HessianServiceExporter{service=, service_host=, service_port=, service_path=}
---@field hessian_proxy fun(url: string, opts?: table): table  a Hessian proxy for url
---@field stats fun(): table<string, springrun.Stats>  every exported object's call statistics, by PYRO: URL
---@field hessian table                  springrun.hessian: the Hessian 2 codec (Java peers)
---@field http table                     springrun.http: the HTTP client (request, start)
---@field etcd table                     springrun.etcd: etcd v3 client (client(endpoint))
---@field runtime table                  springrun.runtime: tasks (spawn, current, resume), run, stop
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
  spawn = { "springrun.future", "spawn" },
  sleep = { "springrun.future", "sleep" },
  async = { "springrun.future", "async" },
  gather = { "springrun.future", "gather" },
  first = { "springrun.future", "first" },
  stats = { "springrun.exporter", "stats" },
  hessian = { "springrun.hessian" },
  http = { "springrun.http" },
  etcd = { "springrun.etcd" },
  runtime = { "springrun.runtime" },
  HessianProxyFactory = { "springrun.remoting.hessian", "HessianProxyFactory" },
  HessianServiceExporter = { "springrun.remoting.hessian", "HessianServiceExporter" },
  hessian_proxy = { "springrun.remoting.hessian", "hessian_proxy" },
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
