-- springrun.remoting.pool: the pool class under a Spring-style class string
-- ("springrun.remoting.pool.PoolProxyFactory", and through the context's
-- springpython.* mapping "springpython.remoting.pool.PoolProxyFactory"),
-- like springrun.remoting.pyro. The pool itself lives in springrun.pool.
local M = {}

setmetatable(M, {
  __index = function(t, name)
    if name ~= "PoolProxyFactory" and name ~= "pool" then return nil end
    local v = require("springrun.pool")[name]
    rawset(t, name, v)
    return v
  end,
})

return M
