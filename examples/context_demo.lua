-- The seed's 7.2.2 in one process: the context exports remoteService and
-- hands the client a proxy to it under the old name "service", so the client
-- code (the last lines) is the same as when the service was local.
--
--   bin/springrun examples/context_demo.lua                  # 127.0.0.1:7766
--   bin/springrun examples/context_demo.lua 127.0.0.1 7001   # host/port overrides (7.2.2.1)
-- The proxy call runs while this same process serves the exported service:
-- springrun turns the event loop during the call, so this does not deadlock.

local springrun = require "springrun"

local host = arg[1] or "127.0.0.1"
local port = tonumber(arg[2] or "7766")

local appContext = springrun.context {
  remoteService = { class = "service.Service" },
  service_exporter = {
    class = "springrun.remoting.pyro.PyroServiceExporter",
    props = {
      service_name = "ServiceName",
      service = springrun.ref "remoteService",
      service_host = host,
      service_port = port,
    },
  },
  service = {
    class = "springrun.remoting.pyro.PyroProxyFactory",
    props = { service_url = string.format("PYROLOC://%s:%d/ServiceName", host, port) },
  },
}

local service = appContext:get_object("service")
print(service:get_data("Hello"))

-- Closing the context unexports the service, so springrun exits here.
appContext:close()
