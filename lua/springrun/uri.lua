-- springrun.uri: parses the URLs a proxy accepts.
--
--   PYRO:<object>@<host>:<port>     Pyro4's direct URI (protocol name is
--                                   case-insensitive; host may be [ipv6])
--   PYROLOC://<host>:<port>/<name>  Spring Python's (Pyro3) form, an alias:
--                                   rewritten here to PYRO:<name>@<host>:<port>
--                                   and never sent to a peer (Pyro4 rejects it)
--   PYRONAME:<name>[@host[:port]]   a name to look up on a name server, and
--   PYROMETA:<m1,m2>[@host[:port]]  metadata to match there: parsed by
--                                   springrun.naming.parse_uri (Pyro4's rules),
--                                   resolved by springrun.naming.resolve (a
--                                   proxy does that on each new connection)
--
-- uri.parse(url) -> u | nil, message. The message names the URL and what is
-- wrong with it. For PYRO and PYROLOC: u = { protocol = "PYRO", object = ...,
-- host = ..., port = <integer>, url = "PYRO:object@host:port" (canonical),
-- original = url }. For PYRONAME/PYROMETA: naming.parse_uri's table
-- { protocol = "PYRONAME" | "PYROMETA", object = the name (PYROMETA: a list
-- of metadata strings), host = string|nil (nil: no location in the URL, the
-- name server is found as naming.resolve says), port = integer|nil (9090 when
-- the URL has a host without a port; default_port = true then) } plus
-- url = the URL as Pyro4 prints it (naming.uri_string) and original = url.
-- The port must be 1..65535 and unix domain sockets are refused, as for PYRO.
local naming = require "springrun.naming"

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

-- PYRONAME:/PYROMETA: url (proto: its protocol, upper case) -> u | nil, why,
-- through springrun.naming.parse_uri.
local function named(url, proto)
  local u, why = naming.parse_uri(url)
  if not u then return bad(url, why) end
  if u.sockname then return bad(url, "unix domain sockets are not supported") end
  if u.host == "" then return bad(url, "the host is empty") end
  if u.port and (u.port < 1 or u.port > 65535) then
    return bad(url, string.format("invalid port '%d' (1..65535)", u.port))
  end
  u.url = naming.uri_string(u)
  u.original = url
  return u
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
    return named(url, proto)
  else
    return bad(url, "unknown protocol '" .. proto .. "' (expected PYRO, PYROLOC, PYRONAME or PYROMETA)")
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
