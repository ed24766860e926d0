-- springrun.uri: parses the URLs a proxy accepts.
--
--   PYRO:<object>@<host>:<port>     Pyro4's direct URI (protocol name is
--                                   case-insensitive; host may be [ipv6])
--   PYROLOC://<host>:<port>/<name>  Spring Python's (Pyro3) form, an alias:
--                                   rewritten here to PYRO:<name>@<host>:<port>
--                                   and never sent to a peer (Pyro4 rejects it)
--   PYRONAME:<name>[@host[:port]]   name server lookups: refused here; a proxy
--                                   resolves them through springrun.naming
--
-- uri.parse(url) -> u | nil, message. u = { protocol = "PYRO", object = ...,
-- host = ..., port = <integer>, url = "PYRO:object@host:port" (canonical),
-- original = url }. The message names the URL and what is wrong with it.
local M = {}

local function bad(url, why)
  return nil, string.format("invalid Pyro URL '%s': %s", tostring(url), why)
end

-- host:port (host may be [v6]) -> host, port | nil, why
local function location(loc)
  local host, port
  if loc:match("^%./u:") then return nil, "unix domain sockets are not supported" end
  if loc:sub(1, 1) == "[" then
    host, port = loc:match("^%[([^%]]+)%]:([^:]*)$")
  else
    host, port = loc:match("^([^:]*):([^:]*)$")
  end
  if host == nil then
    return nil, "the location must be host:port"
  end
  if host == "" then return nil, "the host is empty" end
  local p = port:match("^%d+$") and tonumber(port)
  if not p or p < 1 or p > 65535 then
    return nil, string.format("invalid port '%s' (1..65535)", port)
  end
  return host, math.tointeger(p)
end

function M.parse(url)
  if type(url) ~= "string" then
    return bad(url, "a URL must be a string, got " .. type(url))
  end
  if url:match("^%s") or url:match("%s$") then return bad(url, "surrounding whitespace") end
  local proto, rest = url:match("^([%a]+):(.*)$")
  if proto == nil then return bad(url, "no protocol (expected PYRO:name@host:port)") end
  proto = proto:upper()
  local object, loc
  if proto == "PYROLOC" then
    loc, object = rest:match("^//([^/]+)/(.*)$")
    if loc == nil then return bad(url, "expected PYROLOC://host:port/name") end
  elseif proto == "PYRO" then
    object, loc = rest:match("^([^@]*)@(.*)$")
    if object == nil then return bad(url, "no location (expected PYRO:name@host:port)") end
  elseif proto == "PYRONAME" or proto == "PYROMETA" then
    return bad(url, proto .. " URLs (name server lookups) are not supported yet; "
      .. "use PYRO:name@host:port")
  else
    return bad(url, "unknown protocol '" .. proto .. "' (expected PYRO or PYROLOC)")
  end
  if object == "" then return bad(url, "the object name is empty") end
  if object:find("[%s@]") then return bad(url, "the object name contains '@' or whitespace") end
  local host, port = location(loc)
  if host == nil then return bad(url, port) end
  local shown = host:find(":", 1, true) and ("[" .. host .. "]") or host
  return {
    protocol = "PYRO",
    object = object,
    host = host,
    port = port,
    url = string.format("PYRO:%s@%s:%d", object, shown, port),
    original = url,
  }
end

return M
