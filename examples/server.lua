-- The seed's server half (7.2.4: server.xml + server.py): a context that
-- exports service.lua's Service as "ServiceName" on 127.0.0.1:7000. After
-- the script, `springrun` keeps serving until SIGINT/SIGTERM.
--
--   bin/springrun examples/server.lua                  # 127.0.0.1:7000
--   bin/springrun examples/server.lua 127.0.0.1 7001   # host and port overrides
--   bin/springrun --log-level DEBUG examples/server.lua   # the seed's log chatter

local springrun = require "springrun"

local host = arg[1] or "127.0.0.1"
local port = tonumber(arg[2] or "7000")

springrun.context {
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
}
