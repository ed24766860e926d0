-- springrun.etcd against a real etcd (spec/helpers/etcd.lua starts it on
-- free loopback ports with a temporary data directory).
local proc = require "helpers.proc"
local etcd_server = require "helpers.etcd"
local readme = require "helpers.readme"
local etcd = require "springrun.etcd"
local log = require "springrun.log"
local runtime = require "springrun.runtime"
local uv = require "luv"

-- Turns the loop until pred() holds (at most `seconds`); returns pred().
local function run_until(pred, seconds)
  local deadline = uv.hrtime() + (seconds or 10) * 1e9
  local t = uv.new_timer()
  t:start(50, 50, function() end)
  while not pred() and uv.hrtime() < deadline do uv.run("once") end
  t:stop()
  t:close()
  return pred()
end

-- Turns the loop for `seconds` (other tasks run meanwhile).
local function run_for(seconds)
  local deadline = uv.hrtime() + seconds * 1e9
  run_until(function() return uv.hrtime() >= deadline end, seconds + 1)
end

local function capture_log(cleanup)
  local lines = {}
  log.set_output(function(line) lines[#lines + 1] = line end)
  cleanup(function() log.set_output(nil) end)
  return lines
end

describe("springrun.etcd #net", function()
  it("puts, gets, ranges by prefix and deletes (binary values included)", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local c = etcd.client(e.url)
    local r1 = c:put("/t/a", "1")
    local r2 = c:put("/t/b", "2")
    c:put("/u/c", "3")
    assert.is_true(r2 > r1)
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    c:put("/t/bin", table.concat(bytes))
    local v, kv = c:get("/t/a")
    assert.equal("1", v)
    assert.equal("/t/a", kv.key)
    assert.equal(r1, kv.mod_revision)
    assert.is_nil(c:get("/t/missing"))
    assert.equal(table.concat(bytes), (c:get("/t/bin")))
    local kvs = c:range("/t/")
    local keys = {}
    for i, x in ipairs(kvs) do keys[i] = x.key .. "=" .. (x.key == "/t/bin" and "bin" or x.value) end
    assert.same({ "/t/a=1", "/t/b=2", "/t/bin=bin" }, keys)
    assert.equal(1, c:delete("/t/a"))
    assert.equal(0, c:delete("/t/a"))
    assert.equal(2, c:delete("/t/", { prefix = true }))
    assert.same({}, c:range("/t/"))
    assert.equal("3", (c:get("/u/c")))
  end)

  it("a key put under a lease disappears when the lease expires", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local c = etcd.client(e.url)
    local id, ttl = c:grant(2)
    assert.is_true(math.type(id) == "integer" and id > 0)
    assert.equal(2, ttl)
    c:put("/svc/x", "PYRO:x@127.0.0.1:1", { lease = id })
    assert.equal("PYRO:x@127.0.0.1:1", (c:get("/svc/x")))
    assert.is_true(run_until(function() return c:get("/svc/x") == nil end, 15))
    assert.equal(0, c:keepalive_once(id))
  end)

  it("keepalive holds a lease past its TTL; revoke removes its keys at once", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local c = etcd.client(e.url)
    local id = c:grant(2)
    c:put("/svc/y", "v", { lease = id })
    local k = c:keepalive(id, 2)
    cleanup(function() k:stop() end)
    run_for(4.5)
    assert.equal("v", (c:get("/svc/y")))
    k:stop()
    c:revoke(id)
    assert.is_nil(c:get("/svc/y"))
    local ok, err = pcall(c.revoke, c, id)
    assert.is_false(ok)
    assert.equal("remote", err.kind)
    assert.matches("lease not found", err.message)
  end)

  it("reports etcd being unreachable as kind refused naming the URL", function()
    local url = "http://127.0.0.1:" .. proc.free_port()
    local ok, err = pcall(etcd.client(url).get, etcd.client(url), "/x")
    assert.is_false(ok)
    assert.equal("refused", err.kind)
    assert.matches(url .. "/v3/kv/range", err.message, 1, true)
  end)

  it("a watch on a prefix sees puts and deletes in order, and only under the prefix", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local c = etcd.client(e.url)
    c:put("/w/before", "old") -- before the watch: not an event
    local seen = {}
    local w = c:watch("/w/", { on_event = function(ev)
      seen[#seen + 1] = ev.type .. " " .. ev.key .. (ev.value and ("=" .. ev.value) or "")
    end })
    cleanup(function() w:cancel() end)
    assert.is_true(run_until(function() return w.revision ~= nil end))
    c:put("/w/a", "1")
    c:put("/other", "x")
    c:put("/w/a", "2")
    c:delete("/w/a")
    assert.is_true(run_until(function() return #seen == 3 end))
    assert.same({ "put /w/a=1", "put /w/a=2", "delete /w/a" }, seen)
    w:cancel()
    c:put("/w/b", "after cancel")
    run_for(0.3)
    assert.equal(3, #seen)
  end)

  it("a watch from a past revision delivers the events since then, not only those after its start", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local c = etcd.client(e.url)
    local r1 = c:put("/p/a", "1")
    c:put("/p/b", "2")
    c:delete("/p/a")
    local seen = {}
    local w = c:watch("/p/", { start_revision = r1, on_event = function(ev)
      seen[#seen + 1] = ev.type .. " " .. ev.key
    end })
    cleanup(function() w:cancel() end)
    assert.is_true(run_until(function() return #seen == 3 end))
    assert.same({ "put /p/a", "put /p/b", "delete /p/a" }, seen)
    c:put("/p/c", "3")
    assert.is_true(run_until(function() return #seen == 4 end))
    assert.equal("put /p/c", seen[4])
  end)

  it("a watch from inside a task: the task's etcd calls yield too", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local c = etcd.client(e.url)
    local seen, w = {}, nil
    local done = false
    runtime.spawn(function()
      -- the watch is set up by etcd while the puts run: starting it from
      -- the revision after a marker keeps the puts from racing past it
      local rev = c:put("/tw-mark", "m")
      w = c:watch("/tw/", { start_revision = rev + 1,
        on_event = function(ev) seen[#seen + 1] = ev.key end })
      c:put("/tw/1", "a")
      c:put("/tw/2", "b")
      done = true
    end)
    cleanup(function() if w then w:cancel() end end)
    assert.is_true(run_until(function() return done and #seen == 2 end))
    table.sort(seen)
    assert.same({ "/tw/1", "/tw/2" }, seen)
  end)

  it("resumes a watch from its last revision when etcd stops and comes back", function()
    local cleanup = proc.cleanups(finally)
    local lines = capture_log(cleanup)
    local e = etcd_server.start(cleanup)
    local c = etcd.client(e.url, { timeout = 3 })
    local seen, errs = {}, {}
    local w = c:watch("/r/", { retry_interval = 1, max_retry_interval = 1,
      on_event = function(ev) seen[#seen + 1] = ev.key .. "=" .. tostring(ev.value) end,
      on_error = function(err) errs[#errs + 1] = err end })
    cleanup(function() w:cancel() end)
    assert.is_true(run_until(function() return w.revision ~= nil end))
    c:put("/r/1", "a")
    assert.is_true(run_until(function() return #seen == 1 end))
    etcd_server.stop(e)
    assert.is_true(run_until(function() return #errs > 0 end)) -- the break is reported
    etcd_server.restart(e)
    -- put at once: the watcher is still waiting to reconnect, and gets these
    -- from its resume revision
    c:put("/r/2", "b")
    c:put("/r/3", "c")
    assert.is_true(run_until(function() return #seen == 3 end, 20))
    assert.same({ "/r/1=a", "/r/2=b", "/r/3=c" }, seen)
    assert.is_true(w.reconnects >= 1)
    local text = table.concat(lines, "\n")
    assert.matches("watch on \"/r/\" at " .. e.url .. "/v3/watch interrupted", text, 1, true)
    -- no event repeated: a later put arrives alone
    c:put("/r/4", "d")
    assert.is_true(run_until(function() return #seen == 4 end))
    run_for(0.3)
    assert.same({ "/r/1=a", "/r/2=b", "/r/3=c", "/r/4=d" }, seen)
  end)

  it("reports a value its decoder rejects, naming the key, and delivers the rest", function()
    local cleanup = proc.cleanups(finally)
    local lines = capture_log(cleanup)
    local e = etcd_server.start(cleanup)
    local c = etcd.client(e.url)
    local seen, errs = {}, {}
    local w = c:watch("/g/", {
      decode = function(v)
        if v:match("^PYRO:") then return v end
        return nil, "not a PYRO URL"
      end,
      on_event = function(ev) seen[#seen + 1] = ev.key end,
      on_error = function(err) errs[#errs + 1] = err end })
    cleanup(function() w:cancel() end)
    assert.is_true(run_until(function() return w.revision ~= nil end))
    c:put("/g/bad", "\0garbage\255")
    c:put("/g/good", "PYRO:svc@127.0.0.1:7000")
    assert.is_true(run_until(function() return #seen == 1 end))
    assert.same({ "/g/good" }, seen)
    assert.equal(1, #errs)
    assert.matches("skipping the value of \"/g/bad\"", errs[1].message, 1, true)
    assert.matches("not a PYRO URL", errs[1].message, 1, true)
    assert.matches("WARNING - skipping the value of \"/g/bad\"", table.concat(lines, "\n"), 1, true)
  end)

  it("runs the README's snippet as shown (against a real etcd)", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local code = readme.block("## etcd (springrun.etcd) and registration", "lua")
    local st, out, err = readme.run_lua(code, { ["127.0.0.1:2379"] = "127.0.0.1:" .. e.port })
    assert.equal(0, st, err)
    local url = "PYRO:ServiceName@127.0.0.1:7000"
    local key = "/services/ServiceName/127.0.0.1:7000"
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    table.sort(lines) -- the put event may come before or after get's line
    assert.same({ url, "delete\t" .. key .. "\tnil", "put\t" .. key .. "\t" .. url }, lines)
  end)
end)
