-- The seed's client half (7.2.4: client.xml + client.py): a context with a
-- PyroProxyFactory named "service"; the client code only asks the context for
-- "service" and calls it, not knowing it is remote.
--
--   bin/springrun examples/client.lua                  # PYROLOC://127.0.0.1:7000/ServiceName
--   bin/springrun examples/client.lua 127.0.0.1 7001   # host and port overrides
local springrun = require "springrun"

local host = arg[1] or "127.0.0.1"
local port = tonumber(arg[2] or "7000")

local appContext = springrun.context {
  service = {
    class = "springrun.remoting.pyro.PyroProxyFactory",
    props = { service_url = string.format("PYROLOC://%s:%d/ServiceName", host, port) },
  },
}

local service = appContext:get_object("service")
print("CLIENT: " .. service:get_data("Hello"))
appContext:close()
