-- springrun.log: named loggers with levels, in the shape of Python's logging
-- as Spring Python used it. One line per record on stderr (or the output set
-- with log.set_output):
--
--   2026-11-25 19:30:00,123 - springrun.context.ApplicationContext - DEBUG - message
--
--   local log = require "springrun.log"
--   local logger = log.get("springrun.remoting.pyro.PyroServiceExporter")
--   logger:debug("Exporting %s at %s:%d", name, host, port)
--   log.set_level("DEBUG")          -- global level (default WARNING)
--   logger:set_level("INFO")        -- per-logger override
--
-- Levels are DEBUG < INFO < WARNING < ERROR. A logger's effective level is its
-- own level if set, else the nearest dotted ancestor's explicit level
-- (log.get("springrun"):set_level("DEBUG") covers "springrun.x.Y", as
-- Python's logger hierarchy does), else the global level. The environment
-- variable SPRINGRUN_LOG (a level name) sets the initial global level.
-- Messages are formatted only when the record is emitted; with no extra
-- arguments the message is written as is (a '%' in it is harmless).
local M = {}

local string_format = string.format
local tostring = tostring
local select = select

local uv_ok, uv = pcall(require, "luv")
if not uv_ok or type(uv.gettimeofday) ~= "function" then uv = nil end

M.DEBUG, M.INFO, M.WARNING, M.ERROR = 10, 20, 30, 40
local by_name = { DEBUG = 10, INFO = 20, WARNING = 30, WARN = 30, ERROR = 40 }
local names = { [10] = "DEBUG", [20] = "INFO", [30] = "WARNING", [40] = "ERROR" }

local global_level = M.WARNING
local loggers = {}
-- Bumped by every level change; a logger caches its effective level per generation
-- so a suppressed record costs one comparison.
local generation = 0
local tagger -- nil, or the function set with M.set_tagger
local output -- nil: io.stderr; a file handle (has :write) or function(line)

-- Turns "DEBUG"/"debug"/10 into 10; raises naming the bad value otherwise.
local function level_number(level, who)
  if type(level) == "number" and names[level] then return level end
  if type(level) == "string" then
    local n = by_name[level:upper()]
    if n then return n end
  end
  error(string_format("%s: unknown log level %s (expected DEBUG, INFO, WARNING or ERROR)",
    who, type(level) == "string" and string_format("%q", level) or tostring(level)), 3)
end

local function timestamp()
  local sec, usec
  if uv then sec, usec = uv.gettimeofday() end
  if not sec then sec, usec = os.time(), 0 end
  return os.date("%Y-%m-%d %H:%M:%S", sec) .. string_format(",%03d", (usec or 0) // 1000)
end

local function write_line(line)
  local out = output
  if out == nil then
    io.stderr:write(line, "\n")
  elseif type(out) == "function" then
    out(line)
  else
    out:write(line, "\n")
    if out.flush then out:flush() end
  end
end

local Logger = {}
Logger.__index = Logger
Logger.__name = "springrun.log.Logger"

function Logger:__tostring()
  return "Logger(" .. self.name .. ")"
end

-- The level that decides whether a record is emitted (a number).
function Logger:effective_level()
  if self._gen == generation then return self._eff end
  local eff = self.level
  if not eff then
    local name = self.name
    while true do
      local parent = name:match("^(.*)%.[^.]*$")
      if not parent then break end
      local p = loggers[parent]
      if p and p.level then eff = p.level; break end
      name = parent
    end
  end
  eff = eff or global_level
  self._gen, self._eff = generation, eff
  return eff
end

function Logger:is_enabled_for(level)
  return level_number(level, "logger:is_enabled_for") >= self:effective_level()
end

-- Sets this logger's own level; nil removes the override.
function Logger:set_level(level)
  if level == nil then
    self.level = nil
  else
    self.level = level_number(level, "logger:set_level")
  end
  generation = generation + 1
end

function Logger:get_level()
  return names[self:effective_level()]
end

local function emit(self, level, fmt, ...)
  if level < self:effective_level() then return end
  local msg
  if select("#", ...) == 0 then
    msg = tostring(fmt)
  else
    local ok, res = pcall(string_format, tostring(fmt), ...)
    if ok then
      msg = res
    else
      msg = tostring(fmt) .. " (log format error: " .. tostring(res) .. ")"
    end
  end
  local tag = tagger and tagger()
  if tag then msg = "[corr " .. tag .. "] " .. msg end
  write_line(timestamp() .. " - " .. self.name .. " - " .. names[level] .. " - " .. msg)
end

-- log.set_tagger(fn): fn() -> text or nil, called for each line written; a
-- text is put in front of the message as "[corr <text>] " (springrun.callctx
-- sets it: the correlation id of the call being served).
function M.set_tagger(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error("log.set_tagger: expected a function or nil, got " .. type(fn), 2)
  end
  tagger = fn
end

function Logger:debug(fmt, ...) emit(self, 10, fmt, ...) end
function Logger:info(fmt, ...) emit(self, 20, fmt, ...) end
function Logger:warning(fmt, ...) emit(self, 30, fmt, ...) end
Logger.warn = Logger.warning
function Logger:error(fmt, ...) emit(self, 40, fmt, ...) end

-- log.get(name) -> the one logger with that name (created on first use).
function M.get(name)
  if type(name) ~= "string" or name == "" then
    error("log.get: logger name must be a non-empty string, got " .. tostring(name), 2)
  end
  local l = loggers[name]
  if not l then
    l = setmetatable({ name = name }, Logger)
    loggers[name] = l
  end
  return l
end

-- Global level (what loggers without their own or an ancestor's level use).
function M.set_level(level)
  global_level = level_number(level, "log.set_level")
  generation = generation + 1
end

function M.get_level()
  return names[global_level]
end

-- Where lines go: nil (stderr), a file handle, or function(line) (no "\n").
-- Returns the previous output so callers can restore it.
function M.set_output(out)
  if out ~= nil and type(out) ~= "function" and not (type(out) == "userdata" or type(out) == "table") then
    error("log.set_output: expected nil, a file handle or a function, got " .. type(out), 2)
  end
  local prev = output
  output = out
  return prev
end

-- Level name for a number and number for a name (nil when unknown).
function M.level_name(n) return names[n] end
function M.level_number(name) return type(name) == "string" and by_name[name:upper()] or nil end

do
  local env = os.getenv("SPRINGRUN_LOG")
  if env and env ~= "" and by_name[env:upper()] then global_level = by_name[env:upper()] end
end

return M
