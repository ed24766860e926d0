-- The seed's simple service (Spring Python chapter 7.2.1), as a Lua module.
-- Nothing in it knows about remoting: the contexts in server.lua and
-- context_demo.lua decide whether it is local or exported.
--
--   local Service = require("service").Service
--   local service = Service.new()
--   print(service:get_data("Hello"))     --> You got remote data => Hello
local M = {}

local Service = {}
Service.__index = Service
M.Service = Service

function Service.new()
  return setmetatable({}, Service)
end

function Service:get_data(param)
  return "You got remote data => " .. tostring(param)
end

return M
