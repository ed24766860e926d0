-- The springrun side of make bench's Hessian rows: add(a, b) and echo(v)
-- served by a HessianServiceExporter at http://HOST:PORT/lua (the methods
-- HessianTestServer.TestService's Java client calls). Prints "listening
-- PORT" once exported; runs until SIGTERM.
-- Usage: springrun bench/sr_hessian_server.lua HOST PORT
local springrun = require "springrun"

local Service = {}
function Service:add(a, b) return a + b end
function Service:echo(v) return v end

local ex = springrun.HessianServiceExporter {
  service = Service, service_path = "/lua", service_host = arg[1] or "127.0.0.1",
  service_port = tonumber(arg[2] or "0"),
}
ex:after_properties_set()
print("listening " .. ex:bound_port())
io.stdout:flush()
