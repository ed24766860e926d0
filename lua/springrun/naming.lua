-- springrun.naming: the client side of Pyro4's name server. Resolves
-- PYRONAME:/PYROMETA: URLs into direct PYRO: URLs by asking a real name server
-- (Python's `python3 -m Pyro4.naming` or `springrun ns`), and registers or
-- removes names for exporters.
--
--   local naming = require "springrun.naming"
--   naming.resolve("PYRONAME:example.greeting@127.0.0.1:9090")
--       --> "PYRO:obj_42@127.0.0.1:51234"
--   naming.register("example.greeting", "PYRO:Greeting@127.0.0.1:7000",
--                   { ns_host = "127.0.0.1", ns_port = 9090 })
--   naming.remove("example.greeting", { ns_host = "127.0.0.1", ns_port = 9090 })  --> 1
--   local ns = naming.locate_ns("127.0.0.1", 9090)   -- a proxy: ns:list(), ns:count() ...
--
-- Locating the name server (as Pyro4's locateNS):
--   the URL's @host[:port], else opts.ns_host/opts.ns_port, else the
--   environment's PYRO_NS_HOST/PYRO_NS_PORT (as Pyro4 reads them), else
--   localhost:9090. The name server is the object "Pyro.NameServer" on that
--   address. When no host was given anywhere and localhost does not answer,
--   a UDP broadcast asks for it (naming.broadcast_locate: "GET_NSURI" to
--   port 9091, or opts.ns_bcport / PYRO_NS_BCPORT; opts.broadcast = false
--   turns it off), which Pyro4 name servers and `springrun ns` answer.
--
-- Every call opens its own connection to the name server (a springrun proxy)
-- and closes it afterwards, as Pyro4's resolve does. Inside a springrun task
-- the calls yield to the loop like any proxy call.
--
-- Errors are springrun.errors objects:
--   * the name server cannot be reached (refused, timeout, rejected, ...):
--     class "Pyro4.errors.NamingError", kind of the cause ("refused",
--     "timeout", ...), message "failed to locate the nameserver at
--     127.0.0.1:9090: <cause>" (plus "; no answer to a broadcast on UDP
--     port 9091" when it broadcast), e.cause = the proxy's error;
--   * an answer of the name server itself is raised as it came:
--     "Pyro4.errors.NamingError: unknown name: X" (kind "remote"; for
--     resolve, e.url is the PYRONAME URL and e.ns_url the name server's);
--   * a bad URL, name or option: kind "config", message naming it.
--
-- URIs: naming.parse_uri(s) parses any Pyro4 URI exactly as Pyro4's
-- core.URI does (PYRO, PYRONAME, PYROMETA; protocol case-insensitive; object
-- ends at the first '@'; PYRONAME/PYROMETA port defaults to 9090);
-- naming.uri_string(u) writes it back as Pyro4 prints it;
-- naming.uri_dict(u) builds the class dict Pyro4 sends for a URI
-- ({"__class__": "Pyro4.core.URI", "state": [...]}); naming.to_url(v) takes
-- either form (string or class dict) and returns the URI string.
local errors = require "springrun.errors"

local M = {}

M.NAMESERVER_NAME = "Pyro.NameServer"
M.DEFAULT_PORT = 9090
M.DEFAULT_HOST = "localhost"

local json -- loaded on first use (springrun.json needs the C core)
local function get_json()
  json = json or require "springrun.json"
  return json
end

local function config_error(msg, fields)
  return errors.new("config", msg, fields)
end

-- ---- URIs ------------------------------------------------------------------------

local function is_null(v)
  return v == nil or v == get_json().null
end

-- location -> host, port, sockname | nil, message (Pyro4 URI._parseLocation)
local function parse_location(location, default_port)
  if location == nil or location == "" then return nil, nil, nil end
  if location:sub(1, 4) == "./u:" then
    local sockname = location:sub(5)
    if sockname == "" or sockname:find(":", 1, true) then
      return false, "invalid uri (location)"
    end
    return nil, nil, sockname
  end
  local host, port
  if location:sub(1, 1) == "[" then
    if location:sub(1, 2) == "[[" then
      return false, "invalid ipv6 address: enclosed in too many brackets"
    end
    local h, rest = location:match("^%[([%x:%%]+)%](.*)$")
    if h == nil then
      return false, "invalid ipv6 address: the part between brackets must be a numeric ipv6 address"
    end
    host = h
    port = rest:match("^:(%d+)") or ""
  else
    local colon = location:find(":", 1, true)
    if colon then
      host, port = location:sub(1, colon - 1), location:sub(colon + 1)
    else
      host, port = location, ""
    end
  end
  if port == "" then
    if default_port == false then return host, nil, nil end
    if default_port == nil then
      return false, "invalid port in uri, port=None"
    end
    port = default_port
  else
    local p = port:match("^%s*([+-]?%d+)%s*$")
    if p == nil then return false, "invalid port in uri, port=" .. port end
    port = math.tointeger(tonumber(p))
  end
  return host, port, nil
end

-- naming.parse_uri(s) -> u | nil, message. u = { protocol = "PYRO" |
-- "PYRONAME" | "PYROMETA", object = string (PYROMETA: a list of metadata
-- strings), host = string|nil, port = integer|nil, sockname = string|nil }.
-- The messages are Pyro4's ("invalid uri", "invalid uri (protocol)",
-- "invalid port in uri, port=x", ...).
function M.parse_uri(s)
  if type(s) ~= "string" then return nil, "uri parameter object is of wrong type" end
  -- (?P<protocol>[Pp][Yy][Rr][Oo][a-zA-Z]*):(?P<object>\S+?)(@(?P<location>.+))?$
  local proto, rest = s:match("^([Pp][Yy][Rr][Oo]%a*):(.*)$")
  if proto == nil then return nil, "invalid uri" end
  local at = rest:find("@", 1, true)
  local object, location = rest, nil
  if at and at < #rest then
    -- the object ends at the first '@' that has a location after it
    object, location = rest:sub(1, at - 1), rest:sub(at + 1)
    if location:find("\n", 1, true) then return nil, "invalid uri" end
  end
  if object == "" or object:find("%s") then return nil, "invalid uri" end
  proto = proto:upper()
  local u = { protocol = proto, object = object }
  local host, port, sockname
  if proto == "PYRONAME" then
    host, port, sockname = parse_location(location, M.DEFAULT_PORT)
  elseif proto == "PYRO" then
    if location == nil then return nil, "invalid uri" end
    host, port, sockname = parse_location(location, nil)
  elseif proto == "PYROMETA" then
    local metas = {}
    for m in (object .. ","):gmatch("([^,]*),") do
      metas[#metas + 1] = m:match("^%s*(.-)%s*$")
    end
    u.object = metas
    host, port, sockname = parse_location(location, M.DEFAULT_PORT)
  else
    return nil, "invalid uri (protocol)"
  end
  if host == false then return nil, port end
  u.host, u.port, u.sockname = host, port, sockname
  if proto ~= "PYRO" and host then
    -- no port in a PYRONAME/PYROMETA location: 9090 (Pyro4's NS_PORT default);
    -- resolve() uses opts.ns_port / PYRO_NS_PORT there instead
    u.default_port = select(2, parse_location(location, false)) == nil
  end
  return u
end

-- naming.uri_string(u) -> "PYRO:obj@host:port" as Pyro4's URI.asString.
function M.uri_string(u)
  local s
  if u.protocol == "PYROMETA" and type(u.object) == "table" then
    s = "PYROMETA:" .. table.concat(u.object, ",")
  else
    s = u.protocol .. ":" .. tostring(u.object)
  end
  if u.host and u.host ~= "" and not is_null(u.host) then
    if u.host:find(":", 1, true) then
      s = s .. string.format("@[%s]:%d", u.host, u.port)
    else
      s = s .. string.format("@%s:%d", u.host, u.port)
    end
  elseif u.sockname and not is_null(u.sockname) then
    s = s .. "@./u:" .. u.sockname
  end
  return s
end

-- naming.uri_dict(u or string) -> the class dict Pyro4's serializers write
-- for a URI: { __class__ = "Pyro4.core.URI", state = [protocol, object,
-- sockname|null, host|null, port|null] } (state is a JSON array).
function M.uri_dict(u)
  if type(u) == "string" then
    local parsed, why = M.parse_uri(u)
    if not parsed then error(config_error(string.format("invalid uri '%s': %s", u, why)), 2) end
    u = parsed
  end
  local j = get_json()
  local object = u.object
  if type(object) == "table" then object = j.array({ table.unpack(object) }) end
  local function v(x) if x == nil then return j.null end return x end
  return {
    __class__ = "Pyro4.core.URI",
    state = j.array({ u.protocol, object, v(u.sockname), v(u.host), v(u.port) }),
  }
end

-- naming.to_url(v) -> URI string | nil, message. v: a URI string (checked)
-- or a URI class dict as a Pyro4 peer sends it.
function M.to_url(v)
  if type(v) == "string" then
    local u, why = M.parse_uri(v)
    if not u then return nil, string.format("invalid uri '%s': %s", v, why) end
    return M.uri_string(u)
  end
  if type(v) == "table" and v.__class__ == "Pyro4.core.URI" and type(v.state) == "table" then
    local st = v.state
    local u = { protocol = st[1], object = st[2] }
    if not is_null(st[3]) then u.sockname = st[3] end
    if not is_null(st[4]) then u.host = st[4] end
    if not is_null(st[5]) then u.port = st[5] end
    if type(u.protocol) ~= "string" or (type(u.object) ~= "string" and type(u.object) ~= "table")
      or (u.host ~= nil and (type(u.host) ~= "string" or math.type(u.port) ~= "integer")) then
      return nil, "invalid Pyro4.core.URI state"
    end
    return M.uri_string(u)
  end
  if type(v) == "table" and type(v.__class__) == "string" then
    return nil, "expected a Pyro4.core.URI, got a " .. v.__class__
  end
  return nil, "expected a URI string or a Pyro4.core.URI, got a " .. type(v)
end

-- ---- locating the name server and calling it ---------------------------------------

local function env_port()
  local p = os.getenv("PYRO_NS_PORT")
  if p and p:match("^%d+$") then return math.tointeger(tonumber(p)) end
  return nil
end

local function env_bcport()
  local p = os.getenv("PYRO_NS_BCPORT")
  if p and p:match("^%d+$") then return math.tointeger(tonumber(p)) end
  return nil
end

-- explicit host/port, else opts (ns_host, ns_port), else PYRO_NS_HOST /
-- PYRO_NS_PORT, else localhost:9090 -> host, port, host_given
local function ns_address(host, port, opts)
  opts = opts or {}
  local given = true
  host = host or opts.ns_host or os.getenv("PYRO_NS_HOST")
  if host == nil then host, given = M.DEFAULT_HOST, false end
  port = port or opts.ns_port or env_port() or M.DEFAULT_PORT
  if type(host) ~= "string" or host == "" then
    error(config_error("name server host must be a non-empty string, got " .. tostring(host)), 3)
  end
  if math.type(port) ~= "integer" or port < 1 or port > 65535 then
    error(config_error("name server port must be an integer 1..65535, got " .. tostring(port)), 3)
  end
  return host, port, given
end

local function ns_url(host, port)
  if host:find(":", 1, true) then
    return string.format("PYRO:%s@[%s]:%d", M.NAMESERVER_NAME, host, port)
  end
  return string.format("PYRO:%s@%s:%d", M.NAMESERVER_NAME, host, port)
end

-- Turns a communication failure into "failed to locate the nameserver".
local function locate_error(e, where, url, extra)
  if errors.is(e) and (errors.is(e, "communication") or e.kind == "attribute") then
    local ne = errors.new(e.kind == "attribute" and "rejected" or e.kind, string.format(
      "failed to locate the nameserver at %s: %s%s", where, e.message, extra or ""),
      { class = "Pyro4.errors.NamingError", url = url, cause = e, code = e.code })
    return ne
  end
  return e
end

-- Waits (yielding a springrun task, else turning luv's loop) until done().
local function wait_until(uv, done, co, rt, state)
  while not done() do
    if co then
      state.waiting = true
      coroutine.yield()
      state.waiting = false
    else
      uv.run("once")
    end
  end
end

-- naming.broadcast_locate([opts]) -> the name server URI text a
-- broadcast responder answered, or nil and why. Sends the datagram
-- "GET_NSURI" to 255.255.255.255 and 0.0.0.0 on opts.ns_bcport (else
-- PYRO_NS_BCPORT, else 9091), up to 3 rounds of 0.7 s, as Pyro4's
-- locateNS does. Inside a springrun task it yields; elsewhere it turns luv's
-- loop while waiting.
function M.broadcast_locate(opts)
  opts = opts or {}
  local uv = require "luv"
  local bcport = opts.ns_bcport or env_bcport() or 9091
  local rounds, wait_ms = opts.broadcast_rounds or 3, opts.broadcast_wait_ms or 700
  local rok, rt = pcall(require, "springrun.runtime")
  local co = rok and rt.current and rt.current() or nil
  local state = { waiting = false }
  local function wake()
    if co and state.waiting then rt.resume(co) end
  end
  local udp = uv.new_udp()
  local ok, err = udp:bind("0.0.0.0", 0)
  if not ok then
    udp:close()
    return nil, "cannot open a UDP socket: " .. tostring(err)
  end
  udp:set_broadcast(true)
  local reply
  udp:recv_start(function(rerr, data)
    if not rerr and data and data ~= "" and reply == nil then
      reply = data
      wake()
    end
  end)
  local timer = uv.new_timer()
  for _ = 1, rounds do
    for _, dest in ipairs({ "255.255.255.255", "0.0.0.0" }) do
      pcall(udp.send, udp, "GET_NSURI", dest, bcport, function() end)
    end
    local expired = false
    timer:start(wait_ms, 0, function()
      expired = true
      wake()
    end)
    wait_until(uv, function() return reply ~= nil or expired end, co, rt, state)
    timer:stop()
    if reply then break end
  end
  udp:recv_stop()
  udp:close()
  timer:close()
  if not co then uv.run("nowait") end
  if reply == nil then
    return nil, string.format("no answer to a broadcast on UDP port %d", bcport)
  end
  return reply
end

local function bind_ns(url, opts)
  local proxy = require "springrun.proxy"
  local p = proxy.proxy(url, { timeout = opts and opts.timeout or nil })
  local ok, e = pcall(p._pyro_bind, p)
  if not ok then
    p:destroy()
    return nil, e
  end
  return p
end

-- naming.locate_ns([host [, port [, opts]]]) -> a springrun proxy for the
-- name server, connected (so a missing name server fails here). opts:
-- ns_host, ns_port, timeout (seconds for connect and each call), broadcast
-- (false: never broadcast), ns_bcport. Without any host (argument,
-- opts.ns_host or PYRO_NS_HOST) it tries localhost:port, then a broadcast
-- (naming.broadcast_locate), as Pyro4 does. The caller may destroy() the
-- proxy when done.
function M.locate_ns(host, port, opts)
  opts = opts or {}
  local given
  host, port, given = ns_address(host, port, opts)
  local url = ns_url(host, port)
  local p, e = bind_ns(url, opts)
  if p then return p end
  if given or opts.broadcast == false or not (errors.is(e) and errors.is(e, "communication")) then
    error(locate_error(e, string.format("%s:%d", host, port), url), 0)
  end
  local found, why = M.broadcast_locate(opts)
  if found then
    local burl = M.to_url(found)
    if burl then
      local bp, be = bind_ns(burl, opts)
      if bp then return bp end
      error(locate_error(be, burl:match("@(.*)$") or burl, burl, " (found by broadcast)"), 0)
    end
    why = "a broadcast answer that is no URI: " .. found
  end
  error(locate_error(e, string.format("%s:%d", host, port), url, "; " .. why), 0)
end

-- Runs f(ns) with a name server proxy (located as locate_ns does) and
-- closes it afterwards.
local function with_ns(host, port, opts, f)
  local ns = M.locate_ns(host, port, opts)
  local res = table.pack(pcall(f, ns))
  local url = ns.service_url
  ns:destroy()
  if not res[1] then error(locate_error(res[2], url:match("@(.*)$") or url, url), 0) end
  return table.unpack(res, 2, res.n)
end

local function check_name(name, what)
  if type(name) ~= "string" or name == "" then
    error(config_error(string.format("%s: the name must be a non-empty string, got %s",
      what, name == "" and "an empty string" or type(name))), 3)
  end
end

-- naming.resolve(url [, opts]) -> "PYRO:obj@host:port".
--   PYRO:...              returned as Pyro4 prints it (nothing is asked)
--   PYRONAME:name[@h[:p]] lookup(name) on the name server at h:p
--   PYROMETA:m1,m2[@h[:p]] list(metadata_all = {m1, m2}); one match picked at
--                         random; none -> NamingError "no registrations
--                         available with desired metadata properties ..."
-- opts: ns_host, ns_port (when the URL has no location), timeout,
-- broadcast, ns_bcport (see locate_ns).
function M.resolve(url, opts)
  local u, why = M.parse_uri(url)
  if not u then
    error(config_error(string.format("invalid Pyro URL '%s': %s", tostring(url), why), { url = url }), 2)
  end
  if u.protocol == "PYRO" then return M.uri_string(u) end
  if u.sockname then
    error(config_error(string.format("invalid Pyro URL '%s': unix domain sockets are not supported", url),
      { url = url }), 2)
  end
  local result = with_ns(u.host, (u.host and not u.default_port) and u.port or nil, opts, function(ns)
    if u.protocol == "PYRONAME" then
      local ok, r = pcall(ns.lookup, ns, u.object)
      if not ok then
        if errors.is(r) then r.ns_url, r.url = r.url, url end
        error(r, 0)
      end
      return r
    end
    local j = get_json()
    local cands = ns:list(j.null, j.null, j.array({ table.unpack(u.object) }))
    local urls = {}
    if type(cands) == "table" then
      for _, v in pairs(cands) do urls[#urls + 1] = v end
    end
    if #urls == 0 then
      local e = errors.new("remote", string.format(
        "no registrations available with desired metadata properties {%s}",
        table.concat(u.object, ", ")), { class = "Pyro4.errors.NamingError", url = url })
      error(e, 0)
    end
    table.sort(urls)
    return urls[math.random(#urls)]
  end)
  local s, bad = M.to_url(result)
  if not s then
    error(errors.new("protocol", string.format("the name server answered %s for '%s': %s",
      tostring(result), url, bad), { url = url }), 0)
  end
  return s
end

-- naming.lookup(name [, opts]) -> URI string of name (PYRO:...), asking the
-- name server given by opts (ns_host, ns_port, timeout).
function M.lookup(name, opts)
  check_name(name, "naming.lookup")
  local r = with_ns(nil, nil, opts, function(ns) return ns:lookup(name) end)
  local s, bad = M.to_url(r)
  if not s then error(errors.new("protocol", "lookup of '" .. name .. "': " .. bad), 0) end
  return s
end

local function metadata_list(meta, what)
  local j = get_json()
  if meta == nil then return j.null end
  if type(meta) ~= "table" then
    error(config_error(string.format("%s: metadata must be a list of strings, got %s", what, type(meta))), 3)
  end
  local out = {}
  if #meta > 0 or next(meta) == nil then
    for i, m in ipairs(meta) do
      if type(m) ~= "string" then
        error(config_error(string.format("%s: metadata[%d] must be a string, got %s", what, i, type(m))), 3)
      end
      out[#out + 1] = m
    end
  else
    for k, v in pairs(meta) do
      if type(k) == "string" and v then out[#out + 1] = k end
    end
    table.sort(out)
  end
  return j.array(out)
end

-- naming.register(name, uri [, opts]): registers name -> uri (a PYRO: string)
-- on the name server. opts: ns_host, ns_port, timeout, safe (true: fail with
-- NamingError "name already registered: X" when the name exists), metadata
-- (a list of strings, or a set {tag = true}).
function M.register(name, url, opts)
  check_name(name, "naming.register")
  opts = opts or {}
  local s, why = M.to_url(url)
  if not s then error(config_error("naming.register '" .. name .. "': " .. why), 2) end
  local meta = metadata_list(opts.metadata, "naming.register '" .. name .. "'")
  with_ns(nil, nil, opts, function(ns)
    ns:register(name, s, opts.safe and true or false, meta)
  end)
end

-- naming.remove(name [, opts]) -> number of names removed (0 or 1).
-- opts: ns_host, ns_port, timeout.
function M.remove(name, opts)
  check_name(name, "naming.remove")
  return with_ns(nil, nil, opts, function(ns) return ns:remove(name) end)
end

return M
