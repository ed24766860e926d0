-- springrun.cmd.client: `springrun call`, `springrun inspect` and
-- `springrun ping`, the shell's way to reach a running service (springrun's
-- or a Python Pyro4 daemon's, PYRO:, PYROLOC: or PYRONAME: URLs).
--
--   springrun call [options] URL METHOD [ARGS...]   prints the result as JSON
--   springrun inspect [options] [--stats] URL       methods, oneway, attributes
--                                                   (--stats: and the server's
--                                                   call statistics of the object)
--   springrun ping [options] URL                    connect + handshake
--
-- Each ARG is read as JSON when it parses as JSON (42, 1.5, true, null,
-- "text", [1,2], {"a":1}), else taken as a string (hello). Options:
-- --kwargs JSON (an object: keyword arguments), --timeout S (default 10,
-- 0: none), --serializer json|serpent (default json), --handshake TEXT.
--
-- Exit status: 0 done; 1 the remote side raised (or has no such method):
-- "class: message" on stderr; 2 usage; 3 cannot connect (refused, unknown
-- host, rejected handshake, unknown object, timeout, name server not found).
local M = {}

M.DEFAULT_TIMEOUT = 10

local USAGE = {
  call = "usage: springrun call [--timeout S] [--serializer json|serpent] [--kwargs JSON] [--handshake TEXT] URL METHOD [ARGS...]\n",
  inspect = "usage: springrun inspect [--timeout S] [--serializer json|serpent] [--handshake TEXT] [--stats] URL\n",
  ping = "usage: springrun ping [--timeout S] [--serializer json|serpent] [--handshake TEXT] URL\n",
}

local HELP = [==[

URL: PYRO:name@host:port, PYROLOC://host:port/name or PYRONAME:name[@nshost[:nsport]].
ARGS are read as JSON when they parse as JSON, else as strings.

options:
  --timeout S          seconds for the connect and the call (default 10; 0: none)
  --serializer NAME    json (default) or serpent
  --kwargs JSON        keyword arguments, a JSON object (call only)
  --stats              the object's call statistics too (inspect only; a
                       springrun server: asked of its Pyro.Daemon object)
  --handshake TEXT     the handshake value (an exporter's handshake_secret)
  -h, --help           this text

exit status: 0 ok, 1 remote error, 2 usage, 3 cannot connect
]==]

-- The error kinds that mean "could not reach the object" (exit 3).
local UNREACHABLE = { refused = true, connect = true, rejected = true, timeout = true,
  closed = true, protocol = true }

local function usage_error(cmd, fmt, ...)
  io.stderr:write("springrun ", cmd, ": ", string.format(fmt, ...), "\n", USAGE[cmd])
  return 2
end

-- Parses the words after the command: returns opts, positional list, or
-- nil and the exit status.
local function parse(cmd, args)
  local opts = { timeout = M.DEFAULT_TIMEOUT, serializer = "json" }
  local pos = {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if cmd == "call" and #pos >= 2 then
      -- after URL METHOD everything is an argument (even "-1")
      pos[#pos + 1] = a
    elseif a == "-h" or a == "--help" then
      io.write(USAGE[cmd], HELP)
      return nil, 0
    elseif a == "--stats" and cmd == "inspect" then
      opts.stats = true
    elseif a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    elseif a:sub(1, 2) == "--" then
      local key, val = a:match("^%-%-([%w-]+)=(.*)$")
      key = key or a:sub(3)
      if key ~= "timeout" and key ~= "serializer" and key ~= "handshake"
          and not (key == "kwargs" and cmd == "call") then
        return nil, usage_error(cmd, "unknown option '--%s'", key)
      end
      if val == nil then
        i = i + 1
        val = args[i]
        if val == nil then return nil, usage_error(cmd, "--%s needs a value", key) end
      end
      if key == "timeout" then
        local t = tonumber(val)
        if not t or t < 0 or t ~= t then
          return nil, usage_error(cmd, "--timeout must be a number of seconds >= 0, got '%s'", val)
        end
        opts.timeout = t
      elseif key == "serializer" then
        if val ~= "json" and val ~= "serpent" then
          return nil, usage_error(cmd, "--serializer must be json or serpent, got '%s'", val)
        end
        opts.serializer = val
      elseif key == "handshake" then
        opts.handshake = val
      else
        local ok, kw = pcall(require("springrun.json").decode, val)
        if not ok or type(kw) ~= "table" or (next(kw) ~= nil and kw[1] ~= nil) then
          return nil, usage_error(cmd, "--kwargs must be a JSON object, got '%s'", val)
        end
        opts.kwargs = kw
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

-- A proxy for url with opts; raises (config errors) on a bad URL.
local function make_proxy(url, opts)
  local popts = { serializer = opts.serializer, handshake = opts.handshake }
  if opts.timeout > 0 then popts.timeout = opts.timeout end
  return require("springrun.proxy").proxy(url, popts)
end

-- Runs fn(); maps a raised error to the exit status, writing it on stderr.
local function guarded(cmd, fn)
  local errors = require "springrun.errors"
  local ok, rc = pcall(fn)
  if ok then return rc or 0 end
  local e = rc
  if errors.is(e) then
    io.stderr:write("springrun ", cmd, ": ", tostring(e.class), ": ", tostring(e.message), "\n")
    if e.kind == "config" or e.kind == "serialize" then return 2 end
    if UNREACHABLE[e.kind] then return 3 end
    -- a name server that cannot be found or does not know the name
    if e.class == "Pyro4.errors.NamingError" then return 3 end
    return 1
  end
  io.stderr:write("springrun ", cmd, ": ", tostring(e), "\n")
  return 1
end

-- One command-line word as a value: JSON when it parses, else the string.
function M.value(word)
  local ok, v = pcall(require("springrun.json").decode, word)
  if ok then return v end
  return word
end

function M.call(args)
  local opts, pos = parse("call", args)
  if not opts then return pos end
  if #pos < 2 then return usage_error("call", "needs a URL and a METHOD") end
  local url, method = pos[1], pos[2]
  local json = require "springrun.json"
  local n = #pos - 2
  local callargs = { n = n }
  for k = 1, n do callargs[k] = M.value(pos[k + 2]) end
  if opts.kwargs then
    n = n + 1
    callargs[n], callargs.n = require("springrun.proxy").kwargs(opts.kwargs), n
  end
  return guarded("call", function()
    local p = make_proxy(url, opts)
    local res = table.pack(p:_pyro_call(method, table.unpack(callargs, 1, callargs.n)))
    local out
    if res.n <= 1 then out = res[1] else out = json.array(res) end
    io.write(json.encode(out), "\n")
    p:_pyro_release()
    return 0
  end)
end

local function sorted(set)
  local list = {}
  for k in pairs(set or {}) do list[#list + 1] = k end
  table.sort(list)
  return list
end

-- A duration in seconds as text with 3 significant digits: "52.1 us",
-- "3.20 ms", "1.50 s".
local function duration(s)
  local v, unit = s * 1e6, "us"
  if v >= 1e6 then
    v, unit = s, "s"
  elseif v >= 1e3 then
    v, unit = s * 1e3, "ms"
  end
  local digits = v >= 100 and 0 or v >= 10 and 1 or 2
  return string.format("%." .. digits .. "f %s", v, unit)
end

-- The call statistics of the object at url (a PYRO URL, resolved), asked of
-- the Pyro.Daemon object at its address with the same options.
local function remote_stats(u, opts)
  local shown = u.host:find(":", 1, true) and ("[" .. u.host .. "]") or u.host
  local d = make_proxy(string.format("PYRO:Pyro.Daemon@%s:%d", shown, u.port), opts)
  local ok, st = pcall(d._pyro_call, d, "get_stats", u.object)
  d:_pyro_release()
  if not ok then
    if require("springrun.errors").is(st) and st.kind == "attribute" then
      st.message = "the daemon at " .. u.url .. " does not report call statistics"
        .. " (its Pyro.Daemon has no get_stats: not a springrun daemon?)"
    end
    error(st, 0)
  end
  return st
end

function M.inspect(args)
  local opts, pos = parse("inspect", args)
  if not opts then return pos end
  if #pos ~= 1 then return usage_error("inspect", "needs exactly one URL") end
  return guarded("inspect", function()
    local url = pos[1]
    if opts.stats then
      -- one resolution for both connections: the object's and its daemon's
      local u = require("springrun.uri").parse(url)
      if u and u.protocol ~= "PYRO" then
        url = require("springrun.naming").resolve(url, { timeout = opts.timeout > 0 and opts.timeout or nil })
      end
    end
    local p = make_proxy(url, opts)
    local meta = p:_pyro_metadata()
    p:_pyro_release()
    local st = opts.stats and remote_stats(require("springrun.uri").parse(url), opts)
    local function line(label, set)
      local list = sorted(set)
      io.write(label, ": ", #list > 0 and table.concat(list, ", ") or "-", "\n")
    end
    io.write(pos[1], "\n")
    line("methods", meta.methods)
    line("oneway", meta.oneway)
    line("attributes", meta.attrs)
    if st then
      local lat = st.latency
      io.write(string.format("calls: %d (errors: %d, in flight: %d)\n", st.calls, st.errors, st.in_flight))
      io.write(string.format("latency: p50 %s, p90 %s, p99 %s, p99.9 %s, max %s, mean %s\n",
        duration(lat.p50), duration(lat.p90), duration(lat.p99), duration(lat.p999), duration(lat.max),
        duration(lat.mean)))
    end
    return 0
  end)
end

function M.ping(args)
  local opts, pos = parse("ping", args)
  if not opts then return pos end
  if #pos ~= 1 then return usage_error("ping", "needs exactly one URL") end
  return guarded("ping", function()
    local uv = require "luv"
    local p = make_proxy(pos[1], opts)
    local t0 = uv.hrtime()
    p:_pyro_bind()
    local ms = (uv.hrtime() - t0) / 1e6
    p:_pyro_release()
    io.write(string.format("%s: alive (connect + handshake %.1f ms)\n", pos[1], ms))
    return 0
  end)
end

return M
