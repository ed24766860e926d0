-- springrun.pool with etcd as its member source (registry = "etcd://...")
-- against a real etcd (spec/helpers/etcd.lua) and real member processes
-- (spec/fixtures/pool_server.lua registering themselves under a lease).
local proc = require "helpers.proc"
local client = require "helpers.client"
local pyro4 = require "helpers.pyro4"
local etcd_server = require "helpers.etcd"
local springrun = require "springrun"
local etcd = require "springrun.etcd"
local log = require "springrun.log"
local runtime = require "springrun.runtime"
local uv = require "luv"

local FIXTURE = proc.root .. "/spec/fixtures/pool_server.lua"

-- A member process on a free port registering in etcd at reg (lease ttl s).
local function start_member(add, reg, port, ttl)
  port = port or proc.free_port()
  local p = proc.spawn({ proc.bin, FIXTURE, tostring(port) },
    { env = { POOL_REGISTRY = reg, POOL_REGISTRY_TTL = tostring(ttl or 2) } })
  add(function() proc.stop(p) end)
  pyro4.wait_output(p, "SERVING", 15, "pool_server.lua") -- printed once registered
  return p, port
end

local function url(port) return string.format("PYRO:Member@127.0.0.1:%d", port) end

-- The pool's member URLs, sorted.
local function urls_of(pool)
  local out = {}
  for i, m in ipairs(pool:members()) do out[i] = m.url end
  table.sort(out)
  return out
end

local function sorted_urls(ports)
  local out = {}
  for i, port in ipairs(ports) do out[i] = url(port) end
  table.sort(out)
  return out
end

-- Turns the loop (so the watch delivers) until pred() holds; returns pred().
local function run_until(pred, seconds)
  local deadline = client.now() + (seconds or 10)
  local t = uv.new_timer()
  t:start(20, 20, function() end)
  while not pred() and client.now() < deadline do uv.run("once") end
  t:stop()
  t:close()
  return pred()
end

local function capture_log(cleanup)
  local lines = {}
  log.set_output(function(line) lines[#lines + 1] = line end)
  cleanup(function() log.set_output(nil) end)
  return lines
end

describe("springrun.pool with etcd #net", function()
  it("lists the members at start, adds one that registers, removes one killed when its lease expires",
    function()
      local cleanup = proc.cleanups(finally)
      local e = etcd_server.start(cleanup)
      local reg = "etcd://127.0.0.1:" .. e.port .. "/services"
      local procs, ports = {}, {}
      for i = 1, 2 do procs[i], ports[i] = start_member(cleanup, reg) end
      local pool = springrun.pool { registry = reg, service_name = "Member", idempotent = { "who" },
        timeout = 5, probe_interval = 0.05, probe_max = 0.2 }
      cleanup(function() pool:close() end)
      assert.same(sorted_urls(ports), urls_of(pool)) -- the initial get
      local counts = {}
      for i = 1, 20 do
        local r = pool:who(i)
        assert.equal(i, r.i)
        counts[r.port] = (counts[r.port] or 0) + 1
      end
      assert.equal(10, counts[ports[1]])
      assert.equal(10, counts[ports[2]])
      -- a third registers: the watch adds it, and it gets calls
      procs[3], ports[3] = start_member(cleanup, reg)
      assert.is_true(run_until(function() return #pool:members() == 3 end))
      assert.same(sorted_urls(ports), urls_of(pool))
      counts = {}
      for i = 1, 30 do
        local port = pool:who(i).port
        counts[port] = (counts[port] or 0) + 1
      end
      for k = 1, 3 do assert.equal(10, counts[ports[k]]) end
      -- kill -9 the first mid-stream: no idempotent call lost; once its 2 s
      -- lease expires it is no member any more
      proc.kill(procs[1], "sigkill")
      assert(proc.wait_exit(procs[1], 10))
      local i = 0
      assert.is_true(run_until(function()
        i = i + 1
        assert.equal(i, pool:who(i).i)
        return #pool:members() == 2
      end, 20))
      assert.same(sorted_urls({ ports[2], ports[3] }), urls_of(pool))
      -- a clean stop revokes its lease: removed at once (well before a TTL)
      proc.kill(procs[2], "sigterm")
      assert.equal(0, proc.wait_exit(procs[2], 10))
      assert.is_true(run_until(function() return #pool:members() == 1 end, 1.5))
      assert.same({ url(ports[3]) }, urls_of(pool))
      assert.equal(ports[3], pool:who(1).port)
    end)

  it("a plain script's calls take the watch's changes without turning the loop itself", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local reg = "etcd://127.0.0.1:" .. e.port .. "/services"
    local _, p1 = start_member(cleanup, reg)
    local pool = springrun.pool { registry = reg, service_name = "Member", timeout = 5 }
    cleanup(function() pool:close() end)
    local _, p2 = start_member(cleanup, reg)
    -- only calls, as a script would make them (no uv.run here)
    local seen, deadline = {}, client.now() + 10
    while not seen[p2] and client.now() < deadline do
      seen[pool:who(0).port] = true
      uv.sleep(20)
    end
    assert.is_true(seen[p1] and seen[p2])
  end)

  it("skips a garbage value under the prefix with a warning naming the key", function()
    local cleanup = proc.cleanups(finally)
    local lines = capture_log(cleanup)
    local e = etcd_server.start(cleanup)
    local reg = "etcd://127.0.0.1:" .. e.port .. "/services"
    local c = etcd.client(e.url)
    c:put("/services/Member/junk", "\0garbage\255")
    c:put("/services/Member/badport", "PYRO:Member@127.0.0.1:99999")
    local _, port = start_member(cleanup, reg)
    local pool = springrun.pool { registry = reg, service_name = "Member", timeout = 5 }
    cleanup(function() pool:close() end)
    assert.same({ url(port) }, urls_of(pool))
    local text = table.concat(lines, "\n")
    assert.matches("WARNING - pool 'Member': skipping \"/services/Member/junk\" in " .. reg
      .. ": not a PYRO: URL", text, 1, true)
    assert.matches("skipping \"/services/Member/badport\" in " .. reg .. ": invalid Pyro URL", text, 1, true)
    -- a put under the watch: skipped too; a key whose value turns to
    -- garbage stops naming a member
    local other = proc.free_port()
    c:put("/services/Member/y", url(other))
    assert.is_true(run_until(function() return #pool:members() == 2 end), table.concat(lines, "\n"))
    c:put("/services/Member/y", "nonsense")
    assert.is_true(run_until(function() return #pool:members() == 1 end))
    assert.matches("skipping \"/services/Member/y\" in " .. reg .. ": not a PYRO: URL", table.concat(lines, "\n"),
      1, true)
    assert.same({ url(port) }, urls_of(pool))
    assert.equal(port, pool:who(1).port)
  end)

  it("etcd unreachable at start: an error naming the registry, or the static urls and retries", function()
    local cleanup = proc.cleanups(finally)
    local lines = capture_log(cleanup)
    local e = etcd_server.new(cleanup) -- its ports, not started yet
    local reg = "etcd://127.0.0.1:" .. e.port .. "/services"
    local err = client.error_of(springrun.pool, { registry = reg, service_name = "Member" })
    assert.equal("connect", err.kind)
    assert.matches("pool 'Member': cannot list members in " .. reg .. ": ", err.message, 1, true)
    assert.matches("connection refused", err.message, 1, true)
    err = client.error_of(springrun.pool, { registry = reg })
    assert.equal("config", err.kind)
    assert.matches("registry " .. reg .. " needs service_name", err.message, 1, true)
    -- with static urls: starts with them and keeps trying etcd
    local static_p, static = start_member(cleanup, nil)
    local pool = springrun.pool { registry = reg, service_name = "Member", urls = { "127.0.0.1:" .. static },
      timeout = 5 }
    cleanup(function() pool:close() end)
    assert.same({ url(static) }, urls_of(pool))
    assert.equal(static, pool:who(1).port)
    assert.matches("cannot list members in " .. reg .. " %(.*%); starting with its 1 static urls and retrying",
      table.concat(lines, "\n"))
    etcd_server.restart(e)
    local _, port = start_member(cleanup, reg)
    assert.is_true(run_until(function() return #pool:members() == 2 end, 15))
    assert.same(sorted_urls({ static, port }), urls_of(pool))
    -- the static member is the pool's own: a key naming it that goes away
    -- does not remove it
    local c = etcd.client(e.url)
    c:put("/services/Member/alias", url(static))
    c:delete("/services/Member/alias")
    c:put("/services/Member/marker", url(port))
    c:delete("/services/Member/marker")
    run_until(function() return false end, 0.5)
    assert.same(sorted_urls({ static, port }), urls_of(pool))
    proc.stop(static_p)
  end)

  it("etcd stopped mid-run: keeps its members, logs, resumes the watch from the right revision", function()
    local cleanup = proc.cleanups(finally)
    local lines = capture_log(cleanup)
    local e = etcd_server.start(cleanup)
    local reg = "etcd://127.0.0.1:" .. e.port .. "/services"
    local procs, ports = {}, {}
    -- a lease long enough to outlive etcd's restart
    for i = 1, 2 do procs[i], ports[i] = start_member(cleanup, reg, nil, 30) end
    local pool = springrun.pool { registry = reg, service_name = "Member", idempotent = { "who" }, timeout = 5 }
    cleanup(function() pool:close() end)
    assert.same(sorted_urls(ports), urls_of(pool))
    etcd_server.stop(e)
    assert.is_true(run_until(function()
      return table.concat(lines, "\n"):find("pool 'Member': the watch on " .. reg .. " broke off", 1, true) ~= nil
    end))
    assert.matches("keeping 2 known members", table.concat(lines, "\n"), 1, true)
    -- calls go on to the members it knows
    local counts = {}
    for i = 1, 20 do
      local port = pool:who(i).port
      counts[port] = (counts[port] or 0) + 1
    end
    assert.equal(10, counts[ports[1]])
    assert.equal(10, counts[ports[2]])
    -- back: a member registers and another leaves cleanly at once, while
    -- the watch may still be waiting to reconnect; it resumes from the
    -- revision it last saw, so it sees both
    etcd_server.restart(e)
    procs[3], ports[3] = start_member(cleanup, reg, nil, 30)
    proc.kill(procs[1], "sigterm")
    assert.equal(0, proc.wait_exit(procs[1], 10))
    assert.is_true(run_until(function()
      local u = urls_of(pool)
      return #u == 2 and u[1] == sorted_urls({ ports[2], ports[3] })[1] and u[2] == sorted_urls({ ports[2], ports[3] })[2]
    end, 20), table.concat(urls_of(pool), " "))
    assert.matches("interrupted", table.concat(lines, "\n"), 1, true)
  end)

  it("is a context class; calls from tasks yield while the watch runs", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local reg = "etcd://127.0.0.1:" .. e.port .. "/services"
    local ports = {}
    for i = 1, 3 do _, ports[i] = start_member(cleanup, reg) end
    local ctx = springrun.context {
      service = { class = "springrun.remoting.pool.PoolProxyFactory",
        props = { registry = reg, service_name = "Member", strategy = "least_outstanding",
          idempotent = { "who", "slow" }, timeout = 5 } },
    }
    cleanup(function() ctx:close() end)
    local pool = ctx:get_object("service")
    local done, counts = 0, {}
    for t = 1, 6 do
      runtime.spawn(function()
        local port = pool:slow(300)
        counts[port] = (counts[port] or 0) + 1
        done = done + 1
      end)
    end
    local t0 = client.now()
    assert.is_true(run_until(function() return done == 6 end, 20))
    -- six calls of 300 ms at once (two per member): far below 1.8 s in a row
    assert.is_true(client.now() - t0 < 1.2, tostring(client.now() - t0))
    for k = 1, 3 do assert.equal(2, counts[ports[k]]) end
    ctx:close()
    assert.matches("is closed", client.error_of(pool.who, pool, 1).message, 1, true)
  end)
end)
