-- The seed's server (examples/server.lua) registering itself with a name
-- server, so clients need only its name: PYRONAME:ServiceName@nshost:nsport.
-- destroy (SIGINT/SIGTERM) removes the name again.
--
--   bin/springrun ns &                                  # a name server on 127.0.0.1:9090
--   bin/springrun examples/ns_server.lua                # 127.0.0.1:7000, name server 127.0.0.1:9090
--   bin/springrun examples/ns_server.lua 127.0.0.1 7001 127.0.0.1 9091

local springrun = require "springrun"

springrun.context {
  remoteService = { class = "service.Service" },
  service_exporter = {
    class = "springrun.remoting.pyro.PyroServiceExporter",
    props = {
      service_name = "ServiceName",
      service = springrun.ref "remoteService",
      service_host = arg[1] or "127.0.0.1",
      service_port = tonumber(arg[2] or "7000"),
      register_with_nameserver = true,
      ns_host = arg[3] or "127.0.0.1",
      ns_port = tonumber(arg[4] or "9090"),
    },
  },
}
