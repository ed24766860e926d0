-- springrun.exception: the Pyro exception dicts a server sends -- the one
-- exception builder of the exporter's dispatch (springrun.daemon), its
-- item streams (springrun.streams) and springrun.exporter's messages.
--
-- A module of its own because all of those raise or build these, and
-- springrun.daemon needs springrun.streams, which needs these: kept apart,
-- the modules require each other one way only.
--
--   exception(class, message [, tb_lines]) -> the dict (__class__,
--       __exception__, args = {message}, attributes._pyroTraceback)
--   to_exception(e [, tb]) -> the dict for an error caught in a service call
--       (tb: its traceback text); see springrun.exporter's "Call mapping"
--   pyro_error(class, message) raises such an error from a built-in object
--       (Pyro.Daemon); to_exception keeps its class
--   err_text(e) -> an error value as one string
local json = require "springrun.json"

local M = {}

local PyroExc = {} -- metatable of { class = "Pyro4.errors.X", message = "..." }

local function pyro_error(class, message)
  error(setmetatable({ class = class, message = message }, PyroExc), 0)
end

local function exception(class, message, tb_lines)
  local tb = tb_lines or { class .. ": " .. message .. "\n" }
  return {
    __class__ = class,
    __exception__ = true,
    args = json.array({ message }),
    attributes = { _pyroTraceback = json.array(tb) },
  }
end

local function err_text(e)
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if mt and mt.__tostring then
    local ok, s = pcall(tostring, e)
    if ok then return s end
  end
  if type(e) == "table" and type(e.message) == "string" then return e.message end
  return "(error object is a " .. type(e) .. " value)"
end

-- Turns an error caught in a service call into an exception dict.
local function to_exception(e, tb)
  local class, message, args = "builtins.RuntimeError", nil, nil
  if getmetatable(e) == PyroExc then
    class, message = e.class, e.message
  elseif type(e) == "table" and type(e.class) == "string" and type(e.message) == "string" then
    -- a Python class the client can rebuild travels as is, except a local
    -- failure of a nested proxy call (kind refused/timeout/closed...): a
    -- CommunicationError would make a Python client drop its own connection
    local rebuildable = e.class:match("^builtins%.[%a_][%w_]*$")
      or e.class:match("^Pyro4%.errors%.[%a_][%w_]*$")
    local kind = rawget(e, "kind")
    if rebuildable and (kind == nil or kind == "remote") then
      class, message = e.class, e.message
      if type(e.args) == "table" and #e.args > 0 then args = e.args end
    else
      message = e.class .. ": " .. e.message
    end
  else
    message = err_text(e)
  end
  local lines = { "Traceback (Lua, most recent call first):\n" }
  if tb then
    local first = true
    for line in tb:gmatch("[^\n]+") do
      if line:find("in function 'xpcall'", 1, true) then break end -- springrun's own frames follow
      if first then
        first = false -- the message itself: it closes the traceback below
      elseif line ~= "stack traceback:" then
        lines[#lines + 1] = "  " .. line:gsub("^\t", "") .. "\n"
      end
    end
  end
  lines[#lines + 1] = class:gsub("^builtins%.", "") .. ": " .. message .. "\n"
  local x = exception(class, message, lines)
  if args then x.args = json.array(args) end
  return x
end

M.exception = exception
M.to_exception = to_exception
M.pyro_error = pyro_error
M.err_text = err_text

return M
