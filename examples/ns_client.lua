-- The seed's client (examples/client.lua) finding the service by name through
-- a name server (springrun's `springrun ns` or Python's Pyro4.naming).
--
--   bin/springrun examples/ns_client.lua                  # PYRONAME:ServiceName@127.0.0.1:9090
--   bin/springrun examples/ns_client.lua 127.0.0.1 9091   # another name server
local springrun = require "springrun"

local ns_host = arg[1] or "127.0.0.1"
local ns_port = tonumber(arg[2] or "9090")

local appContext = springrun.context {
  service = {
    class = "springrun.remoting.pyro.PyroProxyFactory",
    props = { service_url = string.format("PYRONAME:ServiceName@%s:%d", ns_host, ns_port) },
  },
}

local service = appContext:get_object("service")
print("CLIENT: " .. service:get_data("Hello"))
appContext:close()
