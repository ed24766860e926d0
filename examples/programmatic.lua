-- The seed's 7.2.3 ("Do I have to use XML?"): the same objects built by hand,
-- without a context. As the seed warns, an exporter built by hand needs its
-- after_properties_set() call: that is what starts exporting.
--
--   bin/springrun examples/programmatic.lua                  # 127.0.0.1:7000
--   bin/springrun examples/programmatic.lua 127.0.0.1 7001   # host/port overrides

local springrun = require "springrun"
local Service = require("service").Service

local host = arg[1] or "127.0.0.1"
local port = tonumber(arg[2] or "7000")

-- Create the service
local remoteService = Service.new()

-- Export it via Pyro using springrun's classes
local service_exporter = springrun.PyroServiceExporter()
service_exporter.service_name = "ServiceName"
service_exporter.service = remoteService
service_exporter.service_host = host
service_exporter.service_port = port
service_exporter:after_properties_set()

-- Get a handle on a client-side proxy that will remotely call the service.
local service = springrun.PyroProxyFactory()
service.service_url = string.format("PYROLOC://%s:%d/ServiceName", host, port)

-- Call the service just as you did in the original, simplified version.
print(service:get_data("Hello"))

-- Without a context nobody cleans up for us: stop exporting so the script ends.
service:destroy()
service_exporter:destroy()
