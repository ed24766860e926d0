-- Concurrency for client scripts (springrun.future, springrun.runtime.run,
-- the lanes of a shared proxy in springrun.session): calls to services that
-- wait 200 ms on a luv timer (or in time.sleep, in a Python Pyro4 daemon)
-- proceed side by side from a plain script, from spawned tasks, from inside
-- a service method and through a pool; futures cancel and time out; errors
-- say what happened (a call's timeout, a refused handshake, e.sent);
-- springrun.run and the CLI never end silently with tasks alive.
local springrun = require "springrun"
local errors = require "springrun.errors"
local proc = require "helpers.proc"
local client = require "helpers.client"
local pyro4 = require "helpers.pyro4"

-- A generous bound: ten 200 ms calls one after another take 2 s; side by
-- side they take about 0.2 s. This checks that they overlap, not speed.
local TOGETHER = 1.0

local function start_server(cleanup)
  local port, sport = proc.free_port(), proc.free_port()
  local p = proc.spawn({ proc.bin, client.fixtures .. "/concurrency_server.lua", tostring(port), tostring(sport) })
  cleanup(function() proc.stop(p) end)
  pyro4.wait_output(p, "SERVING", 15, "concurrency_server.lua")
  assert(proc.wait_port("127.0.0.1", port, 15, p))
  return p, port, sport
end

local function url(name, port) return string.format("PYRO:%s@127.0.0.1:%d", name, port) end

-- Runs the Lua code text with bin/springrun; returns exit status, stdout,
-- stderr (the process is stopped after timeout seconds).
local function run_script(cleanup, text, timeout)
  local path = proc.tmpfile(text)
  cleanup(function() os.remove(path) end)
  local p = proc.spawn({ proc.bin, path })
  cleanup(function() proc.stop(p) end)
  local code = proc.wait_exit(p, timeout or 30)
  return code, p:stdout(), p:stderr(), p
end

describe("concurrent calls #net", function()
  local cleanup

  it("ten calls through one shared proxy overlap: futures and gather from a plain script", function()
    cleanup = proc.cleanups(finally)
    local _, port = start_server(cleanup)
    local svc = springrun.proxy(url("ServiceName", port), { timeout = 10 })
    cleanup(function() svc:destroy() end)
    local took, results = client.timed(function()
      local futures = {}
      for i = 1, 10 do futures[i] = springrun.async(svc):slow(200, i) end
      return springrun.gather(futures)
    end)
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, n = 10 }, results)
    assert.is_true(took < TOGETHER, "took " .. took)
    -- the proxy still works as a plain blocking proxy afterwards
    assert.are.equal("You got remote data => x", svc:get_data("x"))
  end)

  it("ten spawned tasks, each with its own proxy, overlap under springrun.run", function()
    cleanup = proc.cleanups(finally)
    local _, port = start_server(cleanup)
    local got = {}
    local took, rc = client.timed(function()
      for i = 1, 10 do
        springrun.spawn(function()
          local svc = springrun.proxy(url("ServiceName", port), { timeout = 10 })
          got[i] = svc:slow(200, "t" .. i)
          svc:destroy()
        end)
      end
      return springrun.run()
    end)
    assert.are.equal(0, rc)
    for i = 1, 10 do assert.are.equal("t" .. i, got[i]) end
    assert.is_true(took < TOGETHER, "took " .. took)
  end)

  it("bounds the connections of a shared proxy by max_connections", function()
    cleanup = proc.cleanups(finally)
    local _, port = start_server(cleanup)
    local svc = springrun.proxy(url("ServiceName", port), { timeout = 10, max_connections = 2 })
    cleanup(function() svc:destroy() end)
    local before = springrun.proxy.stats().connections
    local futures = {}
    for i = 1, 4 do futures[i] = svc:async("slow", 200, i) end
    local took, results = client.timed(springrun.gather, futures)
    assert.are.same({ 1, 2, 3, 4, n = 4 }, results)
    assert.are.equal(2, springrun.proxy.stats().connections - before)
    -- two at a time: two rounds of 200 ms
    assert.is_true(took >= 0.38, "took " .. took)
    local e = client.error_of(function() svc.max_connections = 0 end)
    assert.are.equal("PyroProxyFactory.max_connections: expected an integer from 1 to 1024, got 0", e.message)
  end)

  it("a service method fans out ten calls through one proxy concurrently", function()
    cleanup = proc.cleanups(finally)
    local _, port = start_server(cleanup)
    local fan = springrun.proxy(url("Fan", port), { timeout = 10 })
    cleanup(function() fan:destroy() end)
    local r = fan:fan(url("ServiceName", port), 10, 200)
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, r[1])
    assert.is_true(r[2] < TOGETHER, "took " .. r[2])
  end)

  it("ten calls to a Python Pyro4 thread server through one proxy overlap", function()
    cleanup = proc.cleanups(finally)
    local py, pport = client.start_pyro(0, "ServiceName", { PYRO_SERVERTYPE = "thread" })
    cleanup(function() proc.stop(py) end)
    local svc = springrun.proxy(url("ServiceName", pport), { timeout = 10 })
    cleanup(function() svc:destroy() end)
    local took, results = client.timed(function()
      local futures = {}
      for i = 1, 10 do futures[i] = svc:async("sleep", 0.2) end
      return springrun.gather(futures)
    end)
    for i = 1, 10 do assert.are.equal(0.2, results[i]) end
    assert.is_true(took < TOGETHER, "took " .. took)
  end)

  it("calls to a Python Pyro4 multiplex server through one proxy each get their own reply", function()
    cleanup = proc.cleanups(finally)
    local py, pport = client.start_pyro(0, "ServiceName", { PYRO_SERVERTYPE = "multiplex" })
    cleanup(function() proc.stop(py) end)
    local svc = springrun.proxy(url("ServiceName", pport), { timeout = 10 })
    cleanup(function() svc:destroy() end)
    local futures = {}
    for i = 1, 6 do futures[i] = springrun.async(svc):echo_args(i, "x" .. i) end
    local results = springrun.gather(futures)
    for i = 1, 6 do assert.are.same({ i, "x" .. i }, results[i]) end
  end)

  it("ten calls through a pool overlap", function()
    cleanup = proc.cleanups(finally)
    local _, port = start_server(cleanup)
    local _, port2 = start_server(cleanup)
    local pool = springrun.pool { urls = { url("ServiceName", port), url("ServiceName", port2) }, timeout = 10 }
    cleanup(function() pool:close() end)
    local took, results = client.timed(function()
      local futures = {}
      for i = 1, 10 do futures[i] = springrun.async(pool):slow(200, i) end
      return springrun.gather(futures)
    end)
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, n = 10 }, results)
    assert.is_true(took < TOGETHER, "took " .. took)
  end)
end)

describe("futures #net", function()
  local cleanup, port, svc

  local function setup()
    cleanup = proc.cleanups(finally)
    port = select(2, start_server(cleanup))
    svc = springrun.proxy(url("ServiceName", port), { timeout = 10, max_connections = 1 })
    cleanup(function() svc:destroy() end)
  end

  it("wait, done, result and on_done", function()
    setup()
    local f = svc:async("slow", 50, "a")
    local seen
    f:on_done(function(ff) seen = ff:result() end)
    assert.is_false(f:done())
    local e = client.error_of(f.result, f)
    assert.truthy(tostring(e):find("not finished yet", 1, true), tostring(e))
    assert.are.equal("a", f:wait())
    assert.is_true(f:done())
    assert.are.equal("a", f:result())
    assert.are.equal("a", seen)
    -- a remote error is the future's error
    local bad = svc:async("nope")
    assert.is_true(bad:done())
    local be = client.error_of(bad.wait, bad)
    assert.are.equal("attribute", be.kind)
  end)

  it("cancel drops the late reply and the connection stays usable", function()
    setup()
    -- (a task connection from the start: a first blocking call would make
    -- a connection of the other kind)
    assert.are.equal("warm", svc:async("slow", 1, "warm"):wait())
    local before = springrun.proxy.stats().connections
    local f = svc:async("slow", 200, "late")
    assert.is_true(f:cancel())
    assert.is_false(f:cancel())
    assert.is_true(f:done())
    local e = client.error_of(f.wait, f)
    assert.are.equal("cancelled", e.kind)
    assert.are.equal("call slow to " .. url("ServiceName", port) .. " was cancelled", e.message)
    -- the next call waits for the lane (max_connections = 1), whose late
    -- reply is read and dropped, then gets its own reply on the same connection
    assert.are.equal("next", svc:async("slow", 1, "next"):wait())
    assert.are.equal("blocking", svc:slow(1, "blocking"))
    assert.are.equal(before, springrun.proxy.stats().connections)
  end)

  it("a per-call deadline times out as a call; wait(timeout) leaves the future going", function()
    setup()
    local f = springrun.async(svc, { timeout = 0.1 }):slow(500, "x")
    local e = client.error_of(f.wait, f)
    assert.are.equal("timeout", e.kind)
    assert.are.equal("call slow to " .. url("ServiceName", port) .. " timed out after 0.1 s", e.message)
    assert.is_true(e.sent)
    assert.are.equal("y", svc:slow(1, "y"))
    local g = svc:async("slow", 300, "z")
    local we = client.error_of(g.wait, g, 0.05)
    assert.are.equal("timeout", we.kind)
    assert.truthy(we.message:find("it goes on", 1, true), we.message)
    assert.are.equal("z", g:wait())
    local a = client.error_of(springrun.async, svc, { timeout = -1 })
    assert.truthy(tostring(a):find("timeout must be a positive number", 1, true), tostring(a))
  end)

  it("gather raises the first error, or returns all errors with all_errors", function()
    setup()
    local wide = springrun.proxy(url("ServiceName", port), { timeout = 10 })
    cleanup(function() wide:destroy() end)
    local fs = { wide:async("slow", 300, 1), wide:async("slow", 20, 2), wide:async("nope") }
    local took, e = client.timed(client.error_of, springrun.gather, fs)
    assert.are.equal("attribute", e.kind)
    assert.is_true(took < 0.25, "gather waited for the others: " .. took) -- raised as soon as it failed
    assert.is_false(fs[1]:done())
    fs = { wide:async("slow", 100, 1), wide:async("nope"), wide:async("slow", 50, 3) }
    local results, errs = springrun.gather(fs, { all_errors = true })
    assert.are.equal(1, results[1])
    assert.is_nil(results[2])
    assert.are.equal(3, results[3])
    assert.are.equal("attribute", errs[2].kind)
    assert.is_nil(errs[1])
    local i, v = springrun.first { wide:async("slow", 400, "slow"), wide:async("slow", 20, "quick") }
    assert.are.equal(2, i)
    assert.are.equal("quick", v)
    springrun.run() -- the slow one finishes
  end)

  it("waiting inside a task yields: two tasks wait for their futures side by side", function()
    setup()
    local wide = springrun.proxy(url("ServiceName", port), { timeout = 10 })
    cleanup(function() wide:destroy() end)
    local t1 = springrun.spawn(function() return wide:async("slow", 200, "one"):wait() end)
    local t2 = springrun.spawn(function()
      springrun.sleep(0.05)
      return wide:async("slow", 200, "two"):wait()
    end)
    local took, r = client.timed(springrun.gather, { t1, t2 })
    assert.are.same({ "one", "two", n = 2 }, r)
    assert.is_true(took < 0.4, "took " .. took)
  end)
end)

describe("errors say what happened #net", function()
  local cleanup

  for _, where in ipairs({ "blocking", "task" }) do
    it("a slow call on a pipelined first connection times out as a call (" .. where .. ")", function()
      cleanup = proc.cleanups(finally)
      local _, port = start_server(cleanup)
      local u = url("ServiceName", port)
      local warm = springrun.proxy(u, { timeout = 5 })
      assert.are.equal("w", warm:slow(1, "w")) -- the metadata is remembered: pipelining from now on
      warm:destroy()
      local p = springrun.proxy(u, { timeout = 0.1 })
      cleanup(function() p:destroy() end)
      local before = springrun.proxy.stats().pipelined
      local e
      if where == "blocking" then
        e = client.error_of(p.slow, p, 400, "x")
      else
        e = client.error_of(function() return p:async("slow", 400, "x"):wait() end)
      end
      assert.are.equal(before + 1, springrun.proxy.stats().pipelined)
      assert.are.equal("timeout", e.kind)
      assert.are.equal("call slow to " .. u .. " timed out after 0.1 s", e.message)
      assert.is_true(e.sent)
    end)

    it("a refused handshake on a pipelined first connection is a handshake error (" .. where .. ")", function()
      cleanup = proc.cleanups(finally)
      local _, _, sport = start_server(cleanup)
      local u = url("Secret", sport)
      local good = springrun.proxy(u, { timeout = 5, handshake = "s3cret" })
      assert.are.equal("You got remote data => 1", good:get_data(1))
      good:destroy()
      local bad = springrun.proxy(u, { timeout = 5, handshake = "wrong" })
      cleanup(function() bad:destroy() end)
      local e
      if where == "blocking" then
        e = client.error_of(bad.get_data, bad, 2)
      else
        e = client.error_of(function() return bad:async("get_data", 2):wait() end)
      end
      assert.are.equal("rejected", e.kind)
      assert.are.equal("connection to " .. u .. " rejected: authentication failed: wrong or missing handshake secret",
        e.message)
      assert.is_false(e.sent)
    end)
  end

  it("every communication error carries e.sent", function()
    cleanup = proc.cleanups(finally)
    local port = proc.free_port()
    local p = springrun.proxy(url("ServiceName", port), { timeout = 2 })
    local e = client.error_of(p.get_data, p, 1)
    assert.are.equal("refused", e.kind)
    assert.is_false(e.sent)
    for _, k in ipairs({ "refused", "connect", "rejected", "timeout", "closed", "protocol" }) do
      assert.are.equal("boolean", type(errors.new(k, "m").sent), k)
    end
    assert.is_nil(errors.new("remote", "m").sent)
  end)

  it("restart-the-server: a client sees closed, then refused, then reconnects by itself", function()
    cleanup = proc.cleanups(finally)
    local port, sport = proc.free_port(), proc.free_port()
    local function start()
      local p = proc.spawn({ proc.bin, client.fixtures .. "/concurrency_server.lua", tostring(port), tostring(sport) })
      cleanup(function() proc.stop(p) end)
      pyro4.wait_output(p, "SERVING", 15, "concurrency_server.lua")
      return p
    end
    local server = start()
    local svc = springrun.proxy(url("ServiceName", port), { timeout = 5 })
    cleanup(function() svc:destroy() end)
    assert.are.equal(1, svc:slow(1, 1))
    -- the server dies while a call is out: that call may have run
    local f = svc:async("slow", 2000, 2)
    springrun.sleep(0.2)
    proc.kill(server, "sigkill")
    local closed = client.error_of(f.wait, f)
    assert.are.equal("closed", closed.kind)
    assert.is_true(closed.sent)
    -- down: nothing reached it
    proc.wait_exit(server, 10)
    local refused = client.error_of(svc.slow, svc, 1, 3)
    assert.are.equal("refused", refused.kind)
    assert.is_false(refused.sent)
    -- back up: the same proxy connects again by itself
    start()
    assert.are.equal(4, svc:slow(1, 4))
  end)
end)

describe("springrun.run and the CLI never end silently with tasks alive #net", function()
  local cleanup

  it("the CLI waits for the script's tasks, then exits 0", function()
    cleanup = proc.cleanups(finally)
    local code, out = run_script(cleanup, [[
local springrun = require "springrun"
springrun.spawn(function() springrun.sleep(0.2) print("task done") end)
print("script done")
]])
    assert.are.equal(0, code)
    assert.are.equal("script done\ntask done\n", out)
  end)

  it("the CLI stopped by SIGINT with a task alive says so and exits 1", function()
    cleanup = proc.cleanups(finally)
    local path = proc.tmpfile([[
local springrun = require "springrun"
springrun.spawn(function() springrun.sleep(60) end)
print("READY")
io.stdout:flush()
]])
    cleanup(function() os.remove(path) end)
    local p = proc.spawn({ proc.bin, path })
    cleanup(function() proc.stop(p) end)
    pyro4.wait_output(p, "READY", 15, "the script")
    -- the loop's signal handler is installed once the script returned
    local deadline = client.now() + 10
    local code
    repeat
      proc.kill(p, "sigint")
      code = proc.wait_exit(p, 0.5)
    until code ~= nil or client.now() > deadline
    assert.are.equal(1, code)
    assert.truthy(p:stderr():find("springrun: stopped by SIGINT with 1 task still alive (task ", 1, true), p:stderr())
  end)

  it("run{timeout} returns 1 and names the tasks alive; fail_on_error reports a failed task once", function()
    cleanup = proc.cleanups(finally)
    local code, out, err = run_script(cleanup, [[
local springrun = require "springrun"
springrun.spawn(function() springrun.sleep(0.05) error("boom") end)
print("plain", springrun.run())
springrun.spawn(function() springrun.sleep(0.05) error("bang") end)
print("fail_on_error", springrun.run{ fail_on_error = true })
local forever = springrun.spawn(function() springrun.sleep(60) end)
print("timeout", springrun.run{ timeout = 0.2 })
forever:cancel()
print("cancelled", springrun.run())
]])
    assert.are.equal(0, code, err)
    assert.are.equal("plain\t0\nfail_on_error\t1\ntimeout\t1\ncancelled\t0\n", out)
    local _, booms = err:gsub("boom", "")
    assert.are.equal(1, booms, err)
    local _, bangs = err:gsub("bang", "")
    assert.are.equal(1, bangs, err)
    assert.truthy(err:find("stack traceback", 1, true), err)
    assert.truthy(err:find("springrun.run: 1 task failed (fail_on_error)", 1, true), err)
    assert.truthy(err:find("springrun.run: stopped after its timeout of 0.2 s with 1 task still alive (task ", 1, true),
      err)
  end)

  it("run returns 1 at once when tasks wait for something nothing on the loop can bring", function()
    cleanup = proc.cleanups(finally)
    local code, out, err = run_script(cleanup, [[
local springrun = require "springrun"
springrun.spawn(function() coroutine.yield() end) -- nobody will resume it
print(springrun.run())
]], 10)
    assert.are.equal(1, code, err) -- the CLI's own run after the script says the same
    assert.are.equal("1\n", out)
    assert.truthy(err:find("springrun.run: stopped waiting for nothing (no I/O or timer left that could resume them) "
      .. "with 1 task still alive", 1, true), err)
  end)

  it("run refuses unknown options and runs nothing from inside a task", function()
    cleanup = proc.cleanups(finally)
    local e = client.error_of(springrun.run, { fail_on_eror = true })
    assert.truthy(tostring(e):find("unknown option 'fail_on_eror'", 1, true), tostring(e))
    local _, inner = client.in_task(function() return client.error_of(springrun.run) end)
    assert.truthy(tostring(inner):find("cannot run the loop from inside a task", 1, true), tostring(inner))
  end)
end)

describe("the README's Concurrency section #net", function()
  local readme = require "helpers.readme"
  local cleanup

  -- The README's server (### A slow service) on a free port instead of 7000.
  local function start_readme_server(port)
    local code = readme.block("### A slow service", "lua"):gsub("7000", tostring(port))
    local path = proc.tmpfile(code)
    cleanup(function() os.remove(path) end)
    local p = proc.spawn({ proc.bin, path })
    cleanup(function() proc.stop(p) end)
    assert(proc.wait_port("127.0.0.1", port, 15, p))
    return p
  end

  local function run_block(heading, port)
    local code = readme.block(heading, "lua"):gsub("7000", tostring(port))
    return run_script(cleanup, code)
  end

  it("runs the ten-calls, tasks and futures snippets as shown", function()
    cleanup = proc.cleanups(finally)
    local port = proc.free_port()
    start_readme_server(port)
    local t0 = client.now()
    local code, out, err = run_block("### Ten calls at once", port)
    local took = client.now() - t0
    assert.are.equal(0, code, err)
    assert.are.equal("1 2 3 4 5 6 7 8 9 10\n", out)
    -- a whole process start included; ten calls in a row alone take 2 s
    assert.is_true(took < 1.8, "took " .. took)
    code, out, err = run_block("### Tasks", port)
    assert.are.equal(0, code, err)
    assert.are.equal("0\t10\n", out)
    code, out, err = run_block("### Futures", port)
    assert.are.equal(0, code, err)
    assert.are.equal("false\non_done\ta\na\ntrue\tcancelled\n2\tquick\n1\tattribute\n", out)
  end)

  it("runs the restart example: closed, then refused, then ok again", function()
    cleanup = proc.cleanups(finally)
    local port = proc.free_port()
    local server = start_readme_server(port)
    local path = proc.tmpfile((readme.block("### When a call fails: `e.sent`", "lua"):gsub("7000", tostring(port))))
    cleanup(function() os.remove(path) end)
    local c = proc.spawn({ proc.bin, path })
    cleanup(function() proc.stop(c) end)
    -- kill the server while a call is out: right after an "ok" line, with
    -- the next 500 ms call under way (checked: no new line meanwhile)
    local killed = false
    for _ = 1, 20 do
      local n = select(2, c:stdout():gsub("ok\t", ""))
      pyro4.wait_output(c, string.rep("ok\t%d+\n.-", n + 1), 15, "the restart example")
      local seen = c:stdout()
      proc.poll_step(150)
      if c:stdout() == seen then
        proc.kill(server, "sigkill")
        killed = true
        break
      end
    end
    assert.is_true(killed)
    proc.wait_exit(server, 10)
    pyro4.wait_output(c, "refused\tfalse\n", 15, "the restart example")
    start_readme_server(port)
    assert.are.equal(0, proc.wait_exit(c, 30), c:stderr())
    local out = c:stdout()
    assert.truthy(out:match("^ok\t1\n.-closed\ttrue\nrefused\tfalse\n.-ok\t%d+\n$"), out)
    assert.is_nil(out:match("closed\ttrue\n.-closed"), out)
  end)
end)
