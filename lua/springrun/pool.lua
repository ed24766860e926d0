-- springrun.pool: PoolProxyFactory, one proxy over several copies of a
-- service (the seed's 7.4 "round-robin router" done as configuration).
--
--   local pool = springrun.pool { urls = { "PYRO:ServiceName@10.0.0.1:7000",
--                                          "PYRO:ServiceName@10.0.0.2:7000" },
--                                 idempotent = { "get_data" } }
--   pool:get_data("Hello")               -- called like a proxy
--
-- Properties (springrun.pool{...}, PoolProxyFactory{...}, a context's props;
-- set before the first call):
--   urls               members: PYRO:/PYROLOC:/PYRONAME: URLs, or "host:port"
--                      (then PYRO:<service_name>@host:port)
--   nameserver_prefix  members: every name of a Pyro4 name server starting
--                      with this prefix (ns_host, ns_port as for exporters;
--                      unset: PYRO_NS_HOST/PYRO_NS_PORT, else localhost:9090),
--                      listed at start, by refresh(), every refresh_interval
--                      seconds (default 30) at a call, and when no member is up
--   registry           "etcd://host:port/prefix": members are the PYRO: URLs
--                      under <prefix><service_name>/ (where exporters with
--                      the same registry register), listed at start and
--                      then followed by a watch (springrun.registry.source:
--                      etcd unreachable at start raises, or with urls set
--                      starts with those and keeps trying). Other schemes:
--                      a source plugged in under M.registries[scheme] (see
--                      "Member sources")
--   service_name       the object name for "host:port" members; also names the
--                      pool in errors and logs
--   strategy           "round_robin" (default), "random", "least_outstanding"
--                      (fewest calls in flight; ties in round-robin order)
--   retries            how many times one call may move to another member
--                      (default: each member at most once per call)
--   timeout            seconds bounding each member's connect and call
--   idempotent         methods that may run twice: retried elsewhere even when
--                      the request may have reached a member that then failed
--   probe_interval     seconds before a down member is first probed (default
--                      1); each failed probe doubles it, up to probe_max
--                      (default 30 s), each wait jittered by +-25 %
--   probe_timeout      seconds a probe may take (default timeout, at most 2)
--   serializer, handshake, ssl, ssl_cacerts, ssl_certfile, ssl_keyfile,
--   ssl_servername, ssl_verify   passed to every member's proxy
--
-- Members: pool:add(url), pool:remove(url), pool:members() -> list of
-- { url =, state = "up"|"down"|"probing", outstanding =, served =,
--   failures =, last_error = }, pool:refresh() (asks the sources again),
-- pool:close() (also destroy(): contexts close pools). A call takes a member
-- that is up, by the strategy. Each member keeps idle connections (proxies)
-- for reuse; concurrent calls from tasks each get one, so they run in
-- parallel and never block the Lua thread.
--
-- Failover: a member whose call fails with a communication error (refused,
-- unreachable, reset, timeout, protocol error, CONNECTFAIL) is marked down
-- and skipped; after its backoff it is probed with Pyro's wire PING (in the
-- background when the caller is a task or the process serves; inline,
-- bounded by probe_timeout, in a plain script) and rejoins when the daemon
-- answers. A member is never dropped for failing (only remove() or a
-- source drops it).
-- The retry rule: a failed call moves to another member only when it
-- cannot have run (e.sent == false: the connect or handshake failed, or
-- nothing of the request was written) or its method is listed in
-- idempotent; otherwise the member's error reaches the caller. An error the
-- service raised (kind "remote") is the call's result, never retried.
-- When no member is up, a call probes every member at once (so a pool
-- whose members all restarted recovers at once); when none answers it
-- raises (kind "connect", e.pool, e.members = { url -> last error }):
--   pool 'ServiceName': no member is up for get_data (PYRO:...: <error>; ...)
--
-- Member sources: static urls; the name server prefix (polled); and a
-- registry plugged in as M.registries[scheme] = function(pool, url, props)
-- -> source, where source = { close = function(source) end [, refresh =
-- function(source) end] [, live = true] } and the source calls
-- pool:add(url, tag) and pool:remove(url) as members come and go (a
-- watch); tag names the source. live: its changes arrive through luv's
-- loop (not polled every refresh_interval; a plain script's calls turn the
-- loop once without waiting, so they see them). etcd is M.registries.etcd.
local errors = require "springrun.errors"
local uri = require "springrun.uri"

local M = {}

local LOGGER_NAME = "springrun.remoting.pool.PoolProxyFactory"

local uv, runtime_mod, proxy_mod, logger

local function now()
  uv = uv or require "luv"
  return uv.hrtime() / 1e9
end

local function runtime()
  runtime_mod = runtime_mod or require "springrun.runtime"
  return runtime_mod
end

local function proxies()
  proxy_mod = proxy_mod or require "springrun.proxy"
  return proxy_mod
end

local function log()
  if logger == nil then logger = require("springrun.log").get(LOGGER_NAME) end
  return logger
end

-- Registry sources by URL scheme ("etcd" -> function(pool, url, props) -> source).
M.registries = {
  etcd = function(pool, url, props) return require("springrun.registry").source(pool, url, props) end,
}

local STRATEGIES = { round_robin = true, random = true, least_outstanding = true }
local PROXY_PROPS = { "serializer", "handshake", "ssl", "ssl_cacerts", "ssl_certfile", "ssl_keyfile",
  "ssl_servername", "ssl_verify" }
local PROPS = { urls = true, nameserver_prefix = true, ns_host = true, ns_port = true, registry = true,
  service_name = true, strategy = true, retries = true, timeout = true, idempotent = true,
  probe_interval = true, probe_max = true, probe_timeout = true, refresh_interval = true }
for _, k in ipairs(PROXY_PROPS) do PROPS[k] = true end
local PROP_LIST = "urls, nameserver_prefix, ns_host, ns_port, registry, service_name, strategy, retries, "
  .. "timeout, idempotent, probe_interval, probe_max, probe_timeout, refresh_interval, "
  .. table.concat(PROXY_PROPS, ", ")
local IDLE_MAX = 32 -- idle connections kept per member

local STATE = setmetatable({}, { __mode = "k" }) -- pool object -> state

local function config_error(fmt, ...)
  error(errors.new("config", "PoolProxyFactory" .. string.format(fmt, ...)), 3)
end

local function first_line(e)
  local s = tostring(e)
  return (s:match("^[^\n]*"))
end

-- ---- properties ----------------------------------------------------------------

local function positive(name, v, integer)
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= v or v == math.huge or v < 0 or (integer and math.type(v) ~= "integer")
      or (not integer and v == 0) then
    config_error(".%s: expected %s, got %s", name, integer and "an integer >= 0" or "seconds (a number > 0)",
      tostring(v))
  end
  return v
end

-- Checks the properties and fills st's settings; raises naming the property.
local function check(st)
  local p = st.props
  if p.urls ~= nil and type(p.urls) ~= "table" then config_error(".urls: expected a list of URLs, got %s", type(p.urls)) end
  local np = p.nameserver_prefix
  if np ~= nil and (type(np) ~= "string" or np == "") then
    config_error(".nameserver_prefix: expected a non-empty string, got %s", tostring(np))
  end
  if p.registry ~= nil then
    local scheme = type(p.registry) == "string" and p.registry:match("^(%a[%w+.-]*)://")
    if not scheme then config_error(".registry: expected scheme://..., got %s", tostring(p.registry)) end
    if not M.registries[scheme] then
      config_error(".registry: no member source for '%s://' is available in this build", scheme)
    end
  end
  if p.urls == nil and np == nil and p.registry == nil then
    config_error(": set urls, nameserver_prefix or registry (where the members are)")
  end
  local sn = p.service_name
  if sn ~= nil and (type(sn) ~= "string" or sn == "") then
    config_error(".service_name: expected a non-empty string, got %s", tostring(sn))
  end
  local strategy = p.strategy or "round_robin"
  if not STRATEGIES[strategy] then
    config_error(".strategy: expected \"round_robin\", \"random\" or \"least_outstanding\", got %s",
      tostring(strategy))
  end
  st.strategy = strategy
  st.retries = positive("retries", p.retries, true)
  st.timeout = positive("timeout", p.timeout)
  st.probe_interval = positive("probe_interval", p.probe_interval) or 1
  st.probe_max = math.max(positive("probe_max", p.probe_max) or 30, st.probe_interval)
  st.probe_timeout = positive("probe_timeout", p.probe_timeout) or math.min(st.timeout or 2, 2)
  st.refresh_interval = positive("refresh_interval", p.refresh_interval) or 30
  local idem = {}
  if p.idempotent ~= nil then
    if type(p.idempotent) ~= "table" then
      config_error(".idempotent: expected a list of method names, got %s", type(p.idempotent))
    end
    for i, m in ipairs(p.idempotent) do
      if type(m) ~= "string" then config_error(".idempotent[%d]: expected a method name, got %s", i, type(m)) end
      idem[m] = true
    end
  end
  st.idempotent = idem
  local opts = { timeout = st.timeout }
  for _, k in ipairs(PROXY_PROPS) do opts[k] = p[k] end
  st.proxy_opts = opts
  st.name = sn or np or "pool"
end

-- The member URL for u (a URL, or "host:port" with service_name); raises.
local function member_url(st, u)
  if type(u) ~= "string" or u == "" then
    config_error(" '%s': a member URL must be a non-empty string, got %s", st.name, tostring(u))
  end
  if not u:match("^%a+:") or u:match("^[^:/]+:%d+$") or u:match("^%[.*%]:%d+$") then
    local host, port = u:match("^%[?([^%]]*)%]?:(%d+)$")
    if not host then config_error(" '%s': bad member '%s' (a Pyro URL or host:port)", st.name, u) end
    if not st.props.service_name then
      config_error(" '%s': member '%s' is host:port, which needs service_name", st.name, u)
    end
    if host:find(":", 1, true) then host = "[" .. host .. "]" end
    u = string.format("PYRO:%s@%s:%s", st.props.service_name, host, port)
  end
  if not u:upper():match("^PYRONAME:") and not u:upper():match("^PYROMETA:") then
    local parsed, why = uri.parse(u)
    if not parsed then config_error(" '%s': bad member URL: %s", st.name, why) end
  end
  return u
end

-- ---- members -------------------------------------------------------------------

local function close_idle(m)
  local idle = m.idle
  m.idle = {}
  for i = 1, #idle do idle[i]:destroy() end
end

local function add_member(st, url, tag)
  if st.by_url[url] then return false end
  local m = { url = url, state = "up", outstanding = 0, served = 0, failures = 0, last_error = nil,
    next_probe = 0, idle = {}, tag = tag or "manual" }
  st.members[#st.members + 1] = m
  st.by_url[url] = m
  log():info("pool '%s': member %s added (%s)", st.name, url, m.tag)
  return true
end

local function remove_member(st, url)
  local m = st.by_url[url]
  if not m then return false end
  st.by_url[url] = nil
  m.removed = true
  for i, x in ipairs(st.members) do
    if x == m then
      table.remove(st.members, i)
      if st.cursor > i then st.cursor = st.cursor - 1 end
      break
    end
  end
  if st.cursor > #st.members then st.cursor = 1 end
  close_idle(m)
  log():info("pool '%s': member %s removed", st.name, url)
  return true
end

local function checkout(st, m)
  local idle = m.idle
  local n = #idle
  if n > 0 then
    local p = idle[n]
    idle[n] = nil
    return p
  end
  return proxies().proxy(m.url, st.proxy_opts)
end

local function checkin(st, m, p)
  if m.removed or st.closed or m.state ~= "up" or #m.idle >= IDLE_MAX then
    p:destroy()
  else
    m.idle[#m.idle + 1] = p
  end
end

-- The wait before the next probe of m: probe_interval doubled per failure
-- since it went down, capped at probe_max, times a jitter in [0.75, 1.25)
-- so that many clients do not probe a restarted server in step.
local function backoff(st, m)
  local d = st.probe_interval * 2 ^ math.max(0, m.failures - 1)
  if d > st.probe_max then d = st.probe_max end
  return d * (0.75 + 0.5 * math.random())
end

local function mark_down(st, m, e)
  m.last_error = first_line(e)
  if m.state == "up" then
    m.failures = m.failures + 1
    m.state = "down"
    m.next_probe = now() + backoff(st, m)
    close_idle(m)
    log():warning("pool '%s': member %s is down (%s)", st.name, m.url, m.last_error)
  end
end

-- Probes m with a wire PING in the caller's mode (yields in a task).
-- Returns true when m answered (it is up again).
local function probe(st, m)
  m.state = "probing"
  local p = m.prober
  m.prober = nil
  if p == nil then
    p = proxies().proxy(m.url, st.proxy_opts)
  end
  p.timeout = st.probe_timeout
  local ok, e = pcall(p._pyro_ping, p)
  if m.removed or st.closed then
    p:destroy()
    return false
  end
  if ok then
    m.state = "up"
    m.failures = 0
    p.timeout = st.timeout
    m.idle[#m.idle + 1] = p -- the probe's connection serves the next call
    log():info("pool '%s': member %s answered its probe and is up again", st.name, m.url)
    return true
  end
  p:_pyro_release()
  m.prober = p
  m.last_error = first_line(e)
  m.failures = m.failures + 1
  m.state = "down"
  m.next_probe = now() + backoff(st, m)
  log():debug("pool '%s': probe of %s failed (%s)", st.name, m.url, m.last_error)
  return false
end

local function probe_task(st, m)
  local ok, e = pcall(probe, st, m)
  if not ok then
    m.state = "down"
    log():error("pool '%s': probing %s failed: %s", st.name, m.url, tostring(e))
  end
end

-- Starts the probes that are due: as background tasks when the caller is a
-- task or the process serves (the loop turns), else inline.
local function due_probes(st, background)
  local t
  for _, m in ipairs(st.members) do
    if m.state == "down" then
      t = t or now()
      if m.next_probe <= t then
        if background then
          m.state = "probing"
          runtime().spawn(probe_task, st, m)
        else
          probe(st, m)
        end
      end
    end
  end
end

-- ---- sources -------------------------------------------------------------------

-- Makes the members tagged `tag` exactly `urls` (other members untouched).
local function sync(st, tag, urls)
  local want = {}
  for _, u in ipairs(urls) do want[u] = true end
  for _, m in ipairs({ table.unpack(st.members) }) do
    if m.tag == tag and not want[m.url] then remove_member(st, m.url) end
  end
  for _, u in ipairs(urls) do add_member(st, u, tag) end
end

local function nameserver_source(st)
  local prefix = st.props.nameserver_prefix
  local src = { tag = "nameserver" }
  function src.refresh()
    local naming = require "springrun.naming"
    local ns = naming.locate_ns(st.props.ns_host, st.props.ns_port, { timeout = st.timeout })
    local ok, listed = pcall(ns.list, ns, prefix)
    ns:destroy()
    if not ok then error(listed, 0) end
    local urls = {}
    for _, v in pairs(type(listed) == "table" and listed or {}) do
      local u = naming.to_url(v)
      if u then urls[#urls + 1] = u end
    end
    table.sort(urls)
    sync(st, "nameserver", urls)
  end
  function src.close() end
  return src
end

-- Asks every source that can be asked (polled: only those without a watch,
-- the refresh_interval poll); returns the errors (a list of text).
local function refresh_sources(st, polled)
  local failed = {}
  for _, s in ipairs(st.sources) do
    if s.refresh and not (polled and s.live) then
      local ok, e = pcall(s.refresh, s)
      if not ok then
        failed[#failed + 1] = first_line(e)
        log():warning("pool '%s': refreshing its members failed: %s", st.name, first_line(e))
      end
    end
  end
  st.refreshed = now()
  return failed
end

local function start(st)
  if st.started or st.starting then return end
  check(st)
  st.members, st.by_url, st.cursor, st.sources = {}, {}, 1, {}
  for _, u in ipairs(st.props.urls or {}) do add_member(st, member_url(st, u), "urls") end
  if st.props.nameserver_prefix then
    local src = nameserver_source(st)
    st.sources[#st.sources + 1] = src
    src.refresh() -- a name server that cannot be reached fails the start
  end
  if st.props.registry then
    local scheme = st.props.registry:match("^(%a[%w+.-]*)://")
    st.starting = true -- the source adds its members (pool:add) while it starts
    local ok, src = pcall(M.registries[scheme], st.pool, st.props.registry, st.props)
    st.starting = nil
    if not ok then error(src, 0) end
    st.sources[#st.sources + 1] = src
    st.live = st.live or src.live
  end
  st.refreshed = now()
  st.started = true
end

-- A source whose changes arrive through luv's loop (a watch: source.live)
-- needs the loop to turn; a plain script's calls block on their sockets
-- without turning it, so its calls take what arrived first (one
-- non-blocking turn; not from a task or a loop callback, where the loop
-- turns anyway).
local function pump(st)
  if not st.live or runtime().current() ~= nil then return end
  uv = uv or require "luv"
  if uv.loop_mode() == nil then uv.run("nowait") end
end

-- ---- calls ---------------------------------------------------------------------

-- The member for the next attempt: up and not tried in this call, by the
-- strategy; nil when there is none.
local function pick(st, tried)
  local members = st.members
  local n = #members
  if n == 0 then return nil end
  local strategy = st.strategy
  if strategy == "random" then
    local cands = {}
    for i = 1, n do
      local m = members[i]
      if m.state == "up" and not tried[m] then cands[#cands + 1] = m end
    end
    return cands[1] and cands[math.random(#cands)]
  end
  local best, best_i
  local c = st.cursor
  for k = 0, n - 1 do
    local i = (c - 1 + k) % n + 1
    local m = members[i]
    if m.state == "up" and not tried[m] then
      if strategy == "round_robin" then
        best, best_i = m, i
        break
      end
      if best == nil or m.outstanding < best.outstanding then best, best_i = m, i end
    end
  end
  if best then st.cursor = best_i % n + 1 end
  return best
end

-- No member is up (or all up ones failed this call): asks the sources again,
-- then probes every member not tried yet, now; returns one that answered.
local function last_resort(st, tried)
  if #st.sources > 0 then refresh_sources(st) end
  for _, m in ipairs({ table.unpack(st.members) }) do
    if not tried[m] and m.state ~= "up" and not m.removed then
      if probe(st, m) then return m end
      tried[m] = true
    end
  end
  return nil
end

local function all_down(st, name, sent, last)
  local parts, map = {}, {}
  for _, m in ipairs(st.members) do
    local why = m.last_error or m.state
    parts[#parts + 1] = m.url .. ": " .. why
    map[m.url] = why
  end
  local msg
  if #st.members == 0 then
    msg = string.format("pool '%s' has no members (call %s)", st.name, name)
  else
    msg = string.format("pool '%s': no member is up for %s (%s)", st.name, name, table.concat(parts, "; "))
  end
  return errors.new("connect", msg, { url = st.name, method = name, pool = st.name, members = map,
    sent = sent, code = last and last.code })
end

-- True when e says the member itself failed (it is marked down).
local function member_failed(e)
  return errors.is(e, "communication")
end

-- One call of name(...) through the pool (the arguments stay varargs: a
-- retry passes them again, and nothing is packed per call).
local function invoke(st, name, ...)
  if st.closed then
    error(errors.new("config", string.format("pool '%s' is closed (call %s)", st.name, name)), 0)
  end
  if not st.started then start(st) end
  pump(st)
  local rt = runtime()
  local background = rt.current() ~= nil or rt.has_exports()
  due_probes(st, background)
  if #st.sources > 0 and now() - st.refreshed > st.refresh_interval then refresh_sources(st, true) end
  local tried, moves, sent, last = {}, 0, false, nil
  while true do
    local m = pick(st, tried)
    if m == nil then
      m = last_resort(st, tried)
      if m == nil then error(all_down(st, name, sent, last), 0) end
    end
    tried[m] = true
    local p = checkout(st, m)
    m.outstanding = m.outstanding + 1
    local ok, r = pcall(p._pyro_call, p, name, ...)
    m.outstanding = m.outstanding - 1
    if ok then
      m.served = m.served + 1
      checkin(st, m, p)
      return r
    end
    if not member_failed(r) then
      checkin(st, m, p)
      error(r, 0)
    end
    p:destroy()
    mark_down(st, m, r)
    r.pool = st.name
    last = r
    local may_have_run = r.sent ~= false
    if may_have_run and not st.idempotent[name] then error(r, 0) end
    sent = sent or may_have_run
    moves = moves + 1
    if st.retries and moves > st.retries then error(r, 0) end
    log():info("pool '%s': %s on %s failed (%s); trying another member", st.name, name, m.url,
      m.last_error)
  end
end

-- ---- the PoolProxyFactory class ------------------------------------------------

local methods = {}

local function state_of(self, what)
  local st = STATE[self]
  if st == nil then error(string.format("PoolProxyFactory: %s needs a pool object (call it with ':')", what), 3) end
  return st
end

function methods.after_properties_set(self)
  local st = state_of(self, "after_properties_set")
  local ok, e = pcall(start, st)
  if not ok then error(e, 2) end
end

function methods.add(self, url, tag)
  local st = state_of(self, "add")
  if not st.started then start(st) end
  return add_member(st, member_url(st, url), tag)
end

function methods.remove(self, url)
  local st = state_of(self, "remove")
  if not st.started then return false end
  if not st.by_url[url] then
    local ok, u = pcall(member_url, st, url)
    if ok then url = u end
  end
  return remove_member(st, url)
end

function methods.members(self)
  local st = state_of(self, "members")
  if not st.started then start(st) end
  pump(st)
  local out = {}
  for i, m in ipairs(st.members) do
    out[i] = { url = m.url, state = m.state, outstanding = m.outstanding, served = m.served,
      failures = m.failures, last_error = m.last_error }
  end
  return out
end

function methods.refresh(self)
  local st = state_of(self, "refresh")
  if not st.started then start(st) return #st.members end
  local failed = refresh_sources(st)
  if #failed > 0 then
    error(errors.new("connect", string.format("pool '%s': refresh failed: %s", st.name,
      table.concat(failed, "; ")), { pool = st.name }), 2)
  end
  return #st.members
end

function methods.close(self)
  local st = state_of(self, "close")
  if st.closed then return end
  st.closed = true
  for _, s in ipairs(st.sources or {}) do pcall(s.close, s) end
  for _, m in ipairs(st.members or {}) do
    close_idle(m)
    if m.prober then m.prober:destroy() end
  end
end
methods.destroy = methods.close

function methods._pyro_call(self, name, ...)
  local st = state_of(self, "_pyro_call")
  if type(name) ~= "string" then
    error(errors.new("config", "PoolProxyFactory:_pyro_call: the method name must be a string"), 2)
  end
  return invoke(st, name, ...)
end

local Pool = { __name = "springrun.PoolProxyFactory" }

local callers = {}
local function caller(name)
  local f = function(me, ...)
    local st = STATE[me]
    if st == nil then
      error(errors.new("config", string.format(
        "PoolProxyFactory: call remote methods with ':' (pool:%s(...))", name)), 2)
    end
    return invoke(st, name, ...)
  end
  callers[name] = f
  return f
end

function Pool.__index(self, name)
  local f = callers[name]
  if f then return f end
  local m = methods[name]
  if m then return m end
  if PROPS[name] then return STATE[self].props[name] end
  if name == "_disposable" then return true end
  if type(name) ~= "string" or name:sub(1, 1) == "_" then return nil end
  return caller(name)
end

function Pool.__newindex(self, name, v)
  local st = STATE[self]
  if not PROPS[name] then
    error(errors.new("config", string.format("PoolProxyFactory: unknown property '%s' (properties: %s)",
      tostring(name), PROP_LIST)), 2)
  end
  if st.started then
    error(errors.new("config", string.format(
      "PoolProxyFactory '%s': set %s before the first call (members change with add/remove)",
      st.name, name)), 2)
  end
  st.props[name] = v
end

function Pool.__tostring(self)
  local st = STATE[self]
  return string.format("PoolProxyFactory(%s, %d members)", st.name or st.props.service_name or "?",
    st.members and #st.members or 0)
end

Pool.__close = function(self)
  if STATE[self] then methods.close(self) end
end
Pool.__gc = Pool.__close

local PoolProxyFactory = { __name = "springrun.PoolProxyFactory (class)" }

-- PoolProxyFactory([props]) -> a pool, started at after_properties_set or
-- its first call.
function PoolProxyFactory.new(props)
  local self = setmetatable({}, Pool)
  local st = { props = {}, started = false, closed = false, pool = self }
  STATE[self] = st
  if props ~= nil then
    if type(props) ~= "table" then
      error(errors.new("config", "PoolProxyFactory: expected a table of properties, got " .. type(props)), 2)
    end
    for k, v in pairs(props) do
      if not PROPS[k] then
        error(errors.new("config", string.format("PoolProxyFactory: unknown property '%s' (properties: %s)",
          tostring(k), PROP_LIST)), 2)
      end
      st.props[k] = v
    end
  end
  return self
end

setmetatable(PoolProxyFactory, { __call = function(_, props) return PoolProxyFactory.new(props) end })

M.PoolProxyFactory = PoolProxyFactory

-- springrun.pool{...} -> a started pool (members listed, properties checked).
function M.pool(props)
  if type(props) ~= "table" then
    error(errors.new("config", "springrun.pool: expected a table of properties, got " .. type(props)), 2)
  end
  local p = PoolProxyFactory.new(props)
  local ok, e = pcall(start, STATE[p])
  if not ok then error(e, 2) end
  return p
end

-- True when v is a pool made here.
function M.is_pool(v) return STATE[v] ~= nil end

return M
