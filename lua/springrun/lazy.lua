-- springrun.lazy: modules loaded on first use, so that requiring a module on
-- the call path (proxy, session, transport) stays cheap, and an optional
-- part can degrade instead of failing.
--
--   local lazy = require "springrun.lazy"
--   local get_core = lazy.loader "springrun.core"       -- get_core() -> module
--   local get_log = lazy.loader("springrun.log", true)  -- nil if it cannot load
local M = {}

function M.loader(name, optional)
  local mod
  return function()
    if mod == nil then
      if optional then
        local ok, m = pcall(require, name)
        mod = ok and m or false
      else
        mod = require(name)
      end
    end
    return mod or nil
  end
end

return M
