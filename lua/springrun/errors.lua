-- springrun.errors: the typed error objects a proxy call raises. A proxy call
-- never raises a bare string, because nil is a legal remote result and the
-- caller must be able to tell a failure from a value.
--
-- Every error is a table with the metatable errors.Error:
--   e.kind      what went wrong, one of errors.KINDS (below)
--   e.class     a Pyro4-style class name ("builtins.ValueError",
--               "Pyro4.errors.TimeoutError", ...): for a remote exception
--               the class the server sent, otherwise derived from the kind
--   e.message   one line of text
--   e.url       the proxy's URL when there is one (PYRO:name@host:port)
--   e.method    the remote method being called, when known
--   e.code      the low-level cause when there is one ("ECONNREFUSED")
--   e.sent      every communication error: false when the request certainly
--               did not reach the server (connect or handshake failed, nothing
--               of it written, CONNECTFAIL), true when it may have run (the
--               default: a retry is safe only when it is false or the method
--               is idempotent)
--   remote exceptions also carry:
--   e.args              the exception's argument list (as the server sent it)
--   e.attributes        the exception's attributes map (may be empty)
--   e.remote_traceback  the remote traceback as one string ("" if none)
-- tostring(e) gives "class: message", plus the remote traceback for remote
-- exceptions, so print(e) and an uncaught error both read well.
--
-- Kinds (class used when the error is not a remote one):
--   remote     the remote method raised (class from the server)
--   attribute  the remote object does not expose that name; raised locally,
--              nothing is sent            (builtins.AttributeError)
--   refused    nobody listens at host:port (Pyro4.errors.CommunicationError)
--   connect    other connect failures: unreachable, unknown host
--                                         (Pyro4.errors.CommunicationError)
--   rejected   the daemon answered CONNECTFAIL (unknown object...)
--                                         (Pyro4.errors.CommunicationError)
--   timeout    connect or call took longer than `timeout`
--                                         (Pyro4.errors.TimeoutError)
--   closed     the connection broke while a request was outstanding
--                                         (Pyro4.errors.ConnectionClosedError)
--   protocol   bad frame, bad payload, out-of-sequence reply
--                                         (Pyro4.errors.ProtocolError)
--   serialize  an argument cannot be sent (a function, a cyclic table...)
--                                         (Pyro4.errors.SerializeError)
--   config     misuse: a bad or missing URL, a bad option
--                                         (Pyro4.errors.PyroError)
--   cancelled  a future cancelled before it finished (springrun.future)
--                                         (springrun.errors.CancelledError)
--
-- errors.is(e [, what]) tells whether e is such an error; with `what` it
-- also checks the kind or the class ("timeout", "builtins.ValueError"), or
-- the group "communication" (refused, connect, rejected, timeout, closed,
-- protocol).
local M = {}

local Error = {}
Error.__index = Error
Error.__name = "springrun.Error"
M.Error = Error

local CLASS_OF_KIND = {
  attribute = "builtins.AttributeError",
  refused = "Pyro4.errors.CommunicationError",
  connect = "Pyro4.errors.CommunicationError",
  rejected = "Pyro4.errors.CommunicationError",
  timeout = "Pyro4.errors.TimeoutError",
  closed = "Pyro4.errors.ConnectionClosedError",
  protocol = "Pyro4.errors.ProtocolError",
  serialize = "Pyro4.errors.SerializeError",
  config = "Pyro4.errors.PyroError",
  remote = "builtins.Exception",
  cancelled = "springrun.errors.CancelledError",
}

local COMMUNICATION = {
  refused = true, connect = true, rejected = true, timeout = true, closed = true, protocol = true,
}

M.KINDS = {}
for k in pairs(CLASS_OF_KIND) do M.KINDS[#M.KINDS + 1] = k end
table.sort(M.KINDS)

function Error.__tostring(e)
  local s = tostring(e.class) .. ": " .. tostring(e.message)
  if e.remote_traceback and e.remote_traceback ~= "" then
    s = s .. "\n +--- This exception occured remotely - Remote traceback:\n"
      .. e.remote_traceback:gsub("\n$", ""):gsub("([^\n]*)", " | %1")
      .. "\n +--- End of remote traceback"
  end
  return s
end

-- errors.new(kind, message [, fields]) -> error object. fields may set url,
-- method, code, class. Raises on an unknown kind (a bug in the caller).
function M.new(kind, message, fields)
  local class = CLASS_OF_KIND[kind]
  if class == nil then
    error(string.format("springrun.errors.new: unknown kind '%s'", tostring(kind)), 2)
  end
  local e = { kind = kind, class = class, message = tostring(message) }
  if fields then
    for k, v in pairs(fields) do e[k] = v end
  end
  -- unless the raiser knows the request did not go out, it may have run
  if e.sent == nil and COMMUNICATION[kind] then e.sent = true end
  return setmetatable(e, Error)
end

-- errors.raise(kind, message [, fields]): error(errors.new(...)), level 0 so
-- the object is raised untouched.
function M.raise(kind, message, fields)
  error(M.new(kind, message, fields), 0)
end

local function join_traceback(tb)
  if type(tb) == "string" then return tb end
  if type(tb) ~= "table" then return "" end
  local parts = {}
  for i = 1, #tb do
    if type(tb[i]) == "string" then parts[#parts + 1] = tb[i] end
  end
  return table.concat(parts)
end

local function args_message(args)
  if type(args) ~= "table" then
    if args == nil then return "" end
    return tostring(args)
  end
  local n = args.n or #args
  if n == 1 then
    local a = args[1]
    if type(a) == "string" then return a end
  end
  local parts = {}
  for i = 1, n do
    local a = args[i]
    if type(a) == "string" then parts[#parts + 1] = a else parts[#parts + 1] = tostring(a) end
  end
  return table.concat(parts, ", ")
end

-- errors.from_remote(dict [, fields]) -> error object of kind "remote", from
-- a decoded Pyro4 exception payload:
--   {"__class__": "builtins.ValueError", "__exception__": true, "args": [...],
--    "attributes": {"_pyroTraceback": ["Traceback...\n", ...]}}
-- A payload that is not such a map still gives an error object (the class
-- "builtins.Exception" and the value as message) rather than failing.
function M.from_remote(dict, fields)
  local e
  if type(dict) == "table" then
    local attrs = type(dict.attributes) == "table" and dict.attributes or {}
    local args = type(dict.args) == "table" and dict.args or {}
    e = M.new("remote", args_message(args), fields)
    if type(dict.__class__) == "string" then e.class = dict.__class__ end
    e.args = args
    e.attributes = attrs
    e.remote_traceback = join_traceback(attrs._pyroTraceback)
  else
    e = M.new("remote", tostring(dict), fields)
    e.args = { dict }
    e.attributes = {}
    e.remote_traceback = ""
  end
  return e
end

-- errors.is(e [, what]) -> boolean (see the header).
function M.is(e, what)
  if getmetatable(e) ~= Error then return false end
  if what == nil then return true end
  if what == "communication" then return COMMUNICATION[e.kind] == true end
  return e.kind == what or e.class == what
end

-- The Pyro4 errors that make a Pyro4 proxy drop its connection when they
-- come back as remote exceptions (CommunicationError and its subclasses).
M.CONNECTION_DROPPING = {
  ["Pyro4.errors.CommunicationError"] = true,
  ["Pyro4.errors.ConnectionClosedError"] = true,
  ["Pyro4.errors.TimeoutError"] = true,
  ["Pyro4.errors.ProtocolError"] = true,
  ["Pyro4.errors.MessageTooLargeError"] = true,
  ["Pyro4.errors.SerializeError"] = true,
}

-- ---- configuration errors ----------------------------------------------------
-- A configuration mistake (an unknown property, an unknown ref, an address
-- in use) raises errors.config_error(message). It prints as its message
-- alone (tostring), concatenates as its message, and answers string methods
-- as its message does (e:find(...)), so code that took these errors for
-- strings keeps working. The CLI prints it without a traceback: a traceback
-- is for programming errors (or --log-level DEBUG).
local ConfigError = { __name = "springrun.ConfigError" }
ConfigError.__tostring = function(e) return e.message end
ConfigError.__concat = function(a, b) return tostring(a) .. tostring(b) end
ConfigError.__index = function(e, k)
  local f = string[k]
  if f == nil then return nil end
  return function(self, ...) return f(rawget(self, "message"), ...) end
end
M.ConfigError = ConfigError

---@param message string
---@return table error a springrun.ConfigError
function M.config_error(message)
  return setmetatable({ message = tostring(message) }, ConfigError)
end

-- True for errors.config_error objects and proxy errors of kind "config".
function M.is_config(e)
  return getmetatable(e) == ConfigError or (getmetatable(e) == Error and e.kind == "config")
end

-- Levenshtein distance of a and b (short names: property names).
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

-- The name in list closest to name when it is close enough to be a typo
-- (at most a third of its letters off, at least 2 allowed), else nil.
function M.closest(name, list)
  if type(name) ~= "string" then return nil end
  local best, bestd
  for _, cand in ipairs(list) do
    local d = distance(name, cand)
    if bestd == nil or d < bestd then best, bestd = cand, d end
  end
  if bestd and bestd <= math.max(2, #name // 3) then return best end
  return nil
end

-- The text for an unknown property of a springrun class: "unknown property
-- 'servce' of PyroServiceExporter (did you mean 'service'?)", or with the
-- list of properties when nothing is close.
function M.unknown_property_message(class, name, list)
  local near = M.closest(name, list)
  if near then
    return string.format("unknown property '%s' of %s (did you mean '%s'?)", tostring(name), class, near)
  end
  return string.format("unknown property '%s' of %s (properties: %s)", tostring(name), class,
    table.concat(list, ", "))
end

return M
