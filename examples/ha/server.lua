-- The seed's 7.4 servers as configuration: ONE exporter definition serving
-- service.lua's Service as "ServiceName" on every port of the list (ten
-- copies on 7001..7010 by default; see ports.lua for arguments and HA_PORTS).
--
--   bin/springrun examples/ha/server.lua                 # ten copies, one process
--   bin/springrun examples/ha/server.lua 7001 7002       # two copies
--   HA_PORTS=7003 bin/springrun examples/ha/server.lua   # one copy per process
--
-- With HA_REGISTRY=etcd://host:port/prefix each copy also registers in etcd
-- (key <prefix>/ServiceName/<host>:<port>) under a lease of HA_REGISTRY_TTL
-- seconds (default 10), which it keeps alive and revokes when it stops.
-- springrun puts this file's directory (ports.lua) first on package.path;
-- service.lua, the seed's service, is one directory up
package.path = arg[0]:match("^(.-)[^/]*$") .. "../?.lua;" .. package.path

local springrun = require "springrun"
local ports = require "ports"

springrun.context {
  remoteService = { class = "service.Service" },
  service_exporter = {
    class = "springrun.remoting.pyro.PyroServiceExporter",
    props = {
      service_name = "ServiceName",
      service = springrun.ref "remoteService",
      service_host = ports.host,
      service_port = ports.list(arg),
      registry = os.getenv("HA_REGISTRY"),
      registry_ttl = os.getenv("HA_REGISTRY") and tonumber(os.getenv("HA_REGISTRY_TTL") or "10"),
    },
  },
}
