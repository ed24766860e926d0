-- springrun.remoting.pyro: the Pyro remoting classes under the names Spring
-- Python used (springpython.remoting.pyro.*). The exporter lives in
-- springrun.exporter, the proxy in springrun.proxy; this module only gathers
-- them so class strings like "springrun.remoting.pyro.PyroServiceExporter"
-- resolve.
local M = {}

setmetatable(M, {
  __index = function(t, name)
    local v
    if name == "PyroServiceExporter" then
      v = require("springrun.exporter").PyroServiceExporter
    elseif name == "PyroProxyFactory" or name == "proxy" then
      v = require("springrun.proxy")[name]
    end
    if v ~= nil then rawset(t, name, v) end
    return v
  end,
})

return M
