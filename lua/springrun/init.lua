-- springrun: the public facade. Every name is loaded on first use from the
-- module that owns it, so `lua5.4 -l springrun` starts fast and a script pays
-- only for what it touches.
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
  proxy = { "springrun.remoting.pyro", "proxy" },
  kwargs = { "springrun.proxy", "kwargs" },
  run = { "springrun.runtime", "run" },
  stop = { "springrun.runtime", "stop" },
  _serve_after_script = { "springrun.runtime", "serve_after_script" },
  pool = { "springrun.pool", "pool" },
  PoolProxyFactory = { "springrun.pool", "PoolProxyFactory" },
}

setmetatable(M, {
  __index = function(t, name)
    local e = exports[name]
    if e == nil then return nil end
    local mod = require(e[1])
    local v = mod
    if e[2] ~= nil then v = mod[e[2]] end
    rawset(t, name, v)
    return v
  end,
})

M.version = "0.1.0"

return M
