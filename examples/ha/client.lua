-- The seed's 7.4 client as configuration: a round-robin pool over the copies
-- (the same port list as server.lua) instead of a hand-written
-- HighAvailabilityService. A copy that dies is skipped, probed and taken back
-- when it answers; get_data is declared idempotent, so a call that was under
-- way on a copy that died is made again on another one.
--
--   bin/springrun examples/ha/client.lua                 # copies on 7001..7010
--   bin/springrun examples/ha/client.lua 7001 7002       # these copies
--   HA_REGISTRY=etcd://127.0.0.1:2379/services bin/springrun examples/ha/client.lua
--                          # the copies registered in etcd (server.lua's HA_REGISTRY)
local springrun = require "springrun"
local ports = require "ports"

-- the members: what etcd lists under HA_REGISTRY, else the port list
local registry, urls = os.getenv("HA_REGISTRY"), nil
if not registry then
  urls = {}
  for _, port in ipairs(ports.list(arg)) do urls[#urls + 1] = ports.host .. ":" .. port end
end

local appContext = springrun.context {
  service = {
    class = "springrun.remoting.pool.PoolProxyFactory",
    props = { service_name = "ServiceName", urls = urls, registry = registry, strategy = "round_robin",
              idempotent = { "get_data" }, timeout = 5 },
  },
}

local service = appContext:get_object("service")
print("CLIENT: " .. service:get_data("Hello"))
print("CLIENT: " .. service:get_data("World"))
for i = 1, 2 * #service:members() - 2 do service:get_data(i) end
for _, m in ipairs(service:members()) do
  print(string.format("%s %s served %d", m.url, m.state, m.served))
end
appContext:close()
