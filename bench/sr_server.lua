-- bench/sr_server.lua -- the springrun side of the benchmark: exports the bench
-- service (get_data, echo, oneway ping) as "bench" on 127.0.0.1:PORT.
--   bin/springrun bench/sr_server.lua [PORT [WRITER]]   (0 or none: a free port)
-- WRITER (for comparisons; default auto) says who writes replies: auto (the
-- Lua thread, or the daemon thread for requests drained together), direct
-- (the Lua thread whenever it can) or thread (always the daemon thread); see
-- core.daemon_set_reply_writer.
-- Prints "PORT <n>" once exported; the CLI then serves until SIGTERM.
-- SR_REGISTRY=etcd://host:port/prefix (bench/ha.lua): also registers in etcd
-- under a lease of SR_REGISTRY_TTL seconds (default 2) and first prints
-- "REGISTERED <epoch seconds>" (the wall clock once the key is in etcd).
local springrun = require "springrun"

local port = tonumber(arg and arg[1] or "0")
if not port then error("usage: springrun bench/sr_server.lua [PORT [auto|direct|thread]]") end
local writer = arg and arg[2]
if writer then require("springrun.core").daemon_set_reply_writer(writer) end

local Bench = {}
Bench.__index = Bench

function Bench:get_data(param)
  return "You got remote data => " .. tostring(param)
end

function Bench:echo(value)
  return value
end

function Bench:ping()
end

local exporter = springrun.PyroServiceExporter {
  service_name = "bench",
  service = setmetatable({}, Bench),
  service_host = "127.0.0.1",
  service_port = port,
  oneway = { "ping" },
  -- the default (4096) would refuse part of the 10,000 idle connections
  -- (the Pyro4 threadpool server gets THREADPOOL_SIZE raised the same way)
  max_connections = 16384,
  registry = os.getenv("SR_REGISTRY"),
  registry_ttl = os.getenv("SR_REGISTRY") and tonumber(os.getenv("SR_REGISTRY_TTL") or "2"),
}
exporter:after_properties_set()
if os.getenv("SR_REGISTRY") then
  local sec, usec = require("luv").gettimeofday()
  io.stdout:write(string.format("REGISTERED %.6f\n", sec + usec * 1e-6))
end
io.stdout:write("PORT ", exporter.service_port, "\n")
io.stdout:flush()
