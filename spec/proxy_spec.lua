-- springrun.proxy: PyroProxyFactory against real peers: a Python Pyro4 daemon
-- (python3-pyro4, JSON only), a hand-driven Pyro4 daemon that reports what it
-- received, and a TCP server that never answers.
local springrun = require "springrun"
local errors = require "springrun.errors"
local json = require "springrun.json"
local proc = require "helpers.proc"
local client = require "helpers.client"

local function url_of(port, name) return string.format("PYRO:%s@127.0.0.1:%d", name or "ServiceName", port) end

-- A springrun exporter over TLS (helpers.secure, its own process) with fresh
-- certificates; cleanup stops it and removes them. Returns its port and the
-- certificates (certs.ca for the proxy's ssl_cacerts).
local function tls_service(cleanup)
  local secure = require "helpers.secure"
  local certs_mod = require "helpers.certs"
  local certs = certs_mod.make()
  cleanup(function() certs_mod.remove(certs) end)
  local _, port = secure.start_sr(cleanup, { SR_SSL_CERT = certs.server_cert, SR_SSL_KEY = certs.server_key })
  return port, certs
end

describe("springrun.proxy #unit", function()
  it("is the PyroProxyFactory of the facade and of the class string's module", function()
    assert.are.equal(require("springrun.proxy").PyroProxyFactory, springrun.PyroProxyFactory)
    assert.are.equal(springrun.PyroProxyFactory, require("springrun.remoting.pyro").PyroProxyFactory)
    -- springrun.proxy: the constructor, callable, with the module's helpers
    assert.are.equal(require("springrun.proxy").stats, springrun.proxy.stats)
    assert.is_true(require("springrun.proxy").is_proxy(springrun.proxy("PYRO:x@127.0.0.1:1")))
  end)

  it("takes service_url and timeout by constructor, field and setter, keeping them local", function()
    local a = springrun.PyroProxyFactory { service_url = "PYRO:s@127.0.0.1:7000", timeout = 2 }
    assert.are.equal("PYRO:s@127.0.0.1:7000", a.service_url)
    assert.are.equal(2, a.timeout)
    local b = springrun.PyroProxyFactory()
    b.service_url = "PYROLOC://127.0.0.1:7000/ServiceName"
    b:set_timeout(1.5)
    assert.are.equal("PYROLOC://127.0.0.1:7000/ServiceName", b.service_url)
    assert.are.equal(1.5, b.timeout)
    local c = springrun.PyroProxyFactory.new()
    c:set_service_url("PYRO:x@h:1")
    assert.are.equal("PYRO:x@h:1", c.service_url)
    assert.is_true(c._disposable)
    assert.are.equal("PyroProxyFactory(PYRO:x@h:1)", tostring(c))
    b.timeout = nil
    assert.is_nil(b.timeout)
  end)

  it("rejects a bad URL when it is set, naming the URL", function()
    local e = client.error_of(function() springrun.PyroProxyFactory { service_url = "PYRO:nohost" } end)
    assert.is_true(errors.is(e, "config"))
    assert.are.equal("PyroProxyFactory.service_url: invalid Pyro URL 'PYRO:nohost': no location "
      .. "(expected PYRO:name@host:port)", e.message)
    e = client.error_of(springrun.proxy, "PYROLOC://127.0.0.1:70000/ServiceName")
    assert.are.equal("PyroProxyFactory.service_url: invalid Pyro URL 'PYROLOC://127.0.0.1:70000/ServiceName': "
      .. "invalid port '70000' (1..65535)", e.message)
    assert.are.equal("PYROLOC://127.0.0.1:70000/ServiceName", e.url)
  end)

  it("rejects unknown properties, bad timeouts and field assignments", function()
    local e = client.error_of(springrun.PyroProxyFactory, { service_ulr = "PYRO:x@h:1" })
    assert.are.equal("unknown property 'service_ulr' of PyroProxyFactory (did you mean 'service_url'?)", e.message)
    e = client.error_of(springrun.PyroProxyFactory, { timeout = -1 })
    assert.truthy(e.message:find("PyroProxyFactory.timeout: expected seconds", 1, true))
    local p = springrun.PyroProxyFactory()
    e = client.error_of(function() p.get_data = 1 end)
    assert.are.equal("unknown property 'get_data' of PyroProxyFactory (properties: service_url, timeout, serializer, handshake, ssl, ssl_cacerts, ssl_certfile, ssl_keyfile, ssl_servername, ssl_verify, max_connections)", e.message)
  end)

  it("needs a service_url before after_properties_set or a call", function()
    local p = springrun.PyroProxyFactory()
    local e = client.error_of(p.after_properties_set, p)
    assert.are.equal("PyroProxyFactory: service_url is not set", e.message)
    e = client.error_of(p.get_data, p, "x")
    assert.is_true(errors.is(e, "config"))
    assert.truthy(e.message:find("service_url is not set", 1, true))
  end)

  it("returns nil for names starting with '_' and insists on ':' for remote calls", function()
    local p = springrun.proxy "PYRO:s@127.0.0.1:7000"
    assert.is_nil(p._private)
    assert.is_nil(p.__index)
    local e = client.error_of(p.get_data, "Hello")
    assert.are.equal("PyroProxyFactory: call remote methods with ':' (proxy:get_data(...))", e.message)
  end)
end)

describe("springrun.proxy against Python Pyro4 #net #interop", function()
  local server, port, svc

  setup(function()
    server, port = client.start_pyro()
  end)

  teardown(function()
    if svc then svc:destroy() end
    proc.stop(server)
  end)

  before_each(function()
    svc = springrun.proxy(url_of(port), { timeout = 10 })
  end)

  after_each(function()
    svc:destroy()
  end)

  it("calls the seed's get_data", function()
    assert.are.equal("You got remote data => Hello", svc:get_data("Hello"))
  end)

  it("round-trips values and Python sees the intended types", function()
    local cases = {
      { true, "bool" }, { false, "bool" }, { 0, "int" }, { -7, "int" },
      { math.maxinteger, "int" }, { math.mininteger, "int" }, { 2 ^ 53 + 1 | 0, "int" },
      { 0.1, "float" }, { 1.0, "float" }, { -2.5e-300, "float" }, { 1e300, "float" },
      { "", "str" }, { "héllo wörld ✓ \u{1F600}", "str" }, { "tab\tnl\n\"q\"\\", "str" },
      { { 1, 2, 3 }, "list" }, { json.array {}, "list" }, { {}, "dict" },
      { { a = 1, b = { c = { 1.5, "x", true } } }, "dict" },
    }
    for _, case in ipairs(cases) do
      local v, pytype = case[1], case[2]
      assert.are.equal(pytype, svc:describe(v), tostring(v))
      local back = svc:echo(v)
      assert.are.same(v, back)
      if type(v) == "number" then assert.are.equal(math.type(v), math.type(back), tostring(v)) end
    end
    assert.are.equal("NoneType", svc:describe(nil))
    assert.is_nil(svc:echo(nil))
    assert.is_nil(svc:nothing())
    assert.are.equal(3, svc:add(1, 2))
    assert.are.equal("integer", math.type(svc:add(1, 2)))
    assert.are.equal(1.5, svc:add(0.5, 1))
    assert.are.equal("ab", svc:add("a", "b"))
  end)

  it("keeps an empty list a list and nested nulls as springrun.null", function()
    local back = svc:echo(json.array {})
    assert.are.equal(0, #back)
    assert.are.equal("[]", json.encode(back))
    local l = svc:echo({ a = json.null, b = { 1, json.null, 3 } })
    assert.are.equal(json.null, l.a)
    assert.are.equal(json.null, l.b[2])
  end)

  it("sends positional arguments with nil holes kept", function()
    local got = svc:echo_args(nil, 2, nil)
    assert.are.equal(3, #got)
    assert.are.equal(json.null, got[1])
    assert.are.equal(2, got[2])
    assert.are.equal(json.null, got[3])
    assert.are.equal(0, #svc:echo_args())
    assert.are.equal("[1, \"x\", null, null]", json.encode(svc:echo_args(1, "x", nil, nil)))
  end)

  it("raises a remote exception with class, message, args and remote traceback", function()
    local e = client.error_of(svc.fail, svc, "boom")
    assert.is_true(errors.is(e, "remote"))
    assert.are.equal("builtins.ValueError", e.class)
    assert.are.equal("boom", e.message)
    assert.are.equal("boom", e.args[1])
    assert.are.equal("fail", e.method)
    assert.truthy(e.remote_traceback:find("Traceback (most recent call last):", 1, true))
    assert.truthy(e.remote_traceback:find("in fail", 1, true))
    assert.truthy(e.remote_traceback:find("ValueError: boom\n$"))
    local s = tostring(e)
    assert.are.equal(1, (s:find("builtins.ValueError: boom\n", 1, true)))
    assert.truthy(s:find(" | ValueError: boom", 1, true))
    -- the connection is still good
    assert.are.equal("You got remote data => after", svc:get_data("after"))
  end)

  it("refuses a method the server does not expose, locally and with Pyro4's text", function()
    assert.are.equal("You got remote data => x", svc:get_data("x"))
    local e = client.error_of(svc.no_such_method, svc, 1)
    assert.is_true(errors.is(e, "attribute"))
    assert.are.equal("remote object '" .. url_of(port) .. "' has no exposed attribute or method 'no_such_method'",
      e.message)
    e = client.error_of(svc.counter, svc)
    assert.is_true(errors.is(e, "attribute"))
    assert.truthy(e.message:find("'counter' on remote object", 1, true))
    local meta = svc:_pyro_metadata()
    assert.is_true(meta.methods.get_data)
    assert.is_true(meta.oneway.log_event)
    assert.is_true(meta.attrs.counter)
    assert.is_nil(meta.methods.no_such_method)
  end)

  it("sends oneway methods without waiting for the server", function()
    local marker = "event-" .. tostring(client.now())
    local took, r = client.timed(function() return table.pack(svc:log_event(marker, 1.5)) end)
    assert.are.equal(0, r.n)
    assert.is_true(took < 1.0, "a oneway call waited " .. took .. " s")
    local deadline = client.now() + 10
    local seen = false
    repeat
      for _, ev in ipairs(svc:events()) do
        if ev == marker then seen = true end
      end
      if not seen then proc.poll_step(50) end
    until seen or client.now() > deadline
    assert.is_true(seen, "the oneway call never ran")
  end)

  it("fails an argument that cannot be sent before sending, keeping the connection", function()
    local e = client.error_of(svc.echo, svc, function() end)
    assert.is_true(errors.is(e, "serialize"))
    assert.truthy(e.message:find("cannot send the arguments of echo", 1, true))
    assert.are.equal(5, svc:echo(5))
  end)

  it("reports an unknown object as a rejected connection", function()
    local p = springrun.proxy(url_of(port, "NoSuchObject"))
    local e = client.error_of(p.get_data, p, "x")
    assert.is_true(errors.is(e, "rejected"))
    assert.is_true(errors.is(e, "communication"))
    assert.are.equal("connection to " .. url_of(port, "NoSuchObject") .. " rejected: unknown object", e.message)
  end)

  it("reaches the same service through the seed's PYROLOC URL", function()
    local p = springrun.proxy(string.format("PYROLOC://127.0.0.1:%d/ServiceName", port))
    assert.are.equal("You got remote data => loc", p:get_data("loc"))
    p:destroy()
  end)

  it("bounds a slow call by timeout, then discards the connection and recovers", function()
    local p = springrun.proxy(url_of(port), { timeout = 0.3 })
    local took, e = client.timed(client.error_of, p.sleep, p, 2)
    assert.is_true(errors.is(e, "timeout"))
    assert.truthy(e.message:find(url_of(port), 1, true))
    assert.truthy(e.message:find("timed out after 0.3 s", 1, true))
    assert.is_true(took >= 0.25 and took < 1.5, "took " .. took)
    -- a new connection: the late reply of sleep() cannot be mistaken for this one
    assert.are.equal("You got remote data => next", p:get_data("next"))
    p:destroy()
  end)

  it("bounds a call by a timeout set after a connection made without one", function()
    local p = springrun.proxy(url_of(port))
    assert.are.equal("You got remote data => first", p:get_data("first")) -- connected, no timeout
    p.timeout = 0.3
    local took, e = client.timed(client.error_of, p.sleep, p, 2)
    assert.is_true(errors.is(e, "timeout"), tostring(e))
    assert.is_true(took >= 0.25 and took < 1.5, "took " .. took)
    p:destroy()
  end)

  it("works when Pyro4 proxies and springrun proxies share the daemon", function()
    local other = springrun.proxy(url_of(port))
    assert.are.equal(7, other:add(3, 4))
    assert.are.equal(9, svc:add(4, 5))
    other:destroy()
  end)
end)

describe("springrun.proxy connection handling #net", function()
  it("names the URL when the connection is refused", function()
    local port = proc.free_port()
    local url = string.format("PYROLOC://127.0.0.1:%d/ServiceName", port)
    local p = springrun.proxy(url, { timeout = 5 })
    local e = client.error_of(p.get_data, p, "x")
    assert.is_true(errors.is(e, "refused"))
    assert.are.equal(url, e.url)
    assert.are.equal(string.format("cannot connect to %s: connection refused by 127.0.0.1:%d", url, port), e.message)
    assert.are.equal("ECONNREFUSED", e.code)
  end)

  it("times out against a server that accepts but never answers, and again on the next call", function()
    local server, port = client.start_python("silent_server.py")
    finally(function() proc.stop(server) end)
    local p = springrun.proxy(url_of(port), { timeout = 0.4 })
    for _ = 1, 2 do
      local took, e = client.timed(client.error_of, p.get_data, p, "x")
      assert.is_true(errors.is(e, "timeout"), tostring(e))
      assert.truthy(e.message:find("handshake with " .. url_of(port) .. " timed out after 0.4 s", 1, true), e.message)
      assert.is_true(took >= 0.35 and took < 2, "took " .. took)
    end
  end)

  it("bounds the connect itself by timeout (a listener whose accept queue is full)", function()
    local server, port = client.start_python("full_backlog_server.py")
    finally(function() proc.stop(server) end)
    local p = springrun.proxy(url_of(port), { timeout = 0.4 })
    local took, e = client.timed(client.error_of, p.get_data, p, "x")
    assert.is_true(errors.is(e, "timeout"), tostring(e))
    assert.are.equal("connecting to " .. url_of(port) .. " timed out after 0.4 s", e.message)
    assert.is_true(took >= 0.35 and took < 2, "took " .. took)
    local ok, e2 = client.in_task(function() return p:get_data("x") end)
    assert.is_false(ok)
    assert.is_true(errors.is(e2, "timeout"), tostring(e2))
    assert.are.equal("connecting to " .. url_of(port) .. " timed out after 0.4 s", e2.message)
  end)

  it("reconnects transparently after the server restarted", function()
    local server, port = client.start_pyro()
    finally(function() proc.stop(server) end)
    local p = springrun.proxy(url_of(port), { timeout = 10 })
    assert.are.equal("You got remote data => 1", p:get_data("1"))
    proc.stop(server)
    assert(proc.wait_port_closed("127.0.0.1", port, 10))
    server = client.start_pyro(port)
    assert.are.equal("You got remote data => 2", p:get_data("2"))
  end)

  it("numbers INVOKEs from 1 as Pyro4 does and sends params/kwargs/object as it does", function()
    local server, port = client.start_python("raw_pyro_server.py", { "record" })
    finally(function() proc.stop(server) end)
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    local r1 = p:seq(1, nil, "x")
    assert.are.equal(1, r1[1])
    assert.are.equal(0, r1[2])
    assert.are.equal('[1, null, "x"]', json.encode(r1[3]))
    assert.are.equal("{}", json.encode(r1[4]))
    assert.are.equal("Obj", r1[5])
    assert.are.equal(2, p:seq()[1])
    assert.are.equal(3, p:last()[1])
    assert.are.equal(3, p._pyro_seq)
    -- wraps at 65536, as a uint16
    p._pyro_seq = 65534
    assert.are.equal(65535, p:seq()[1])
    assert.are.equal(0, p:seq()[1])
    assert.are.equal(1, p:seq()[1])
    local ok, v = client.in_task(function() return p:seq()[1] end)
    assert.is_true(ok, tostring(v))
    assert.are.equal(2, v)
  end)

  it("asks Pyro.Daemon for metadata when CONNECTOK carries none", function()
    local server, port = client.start_python("raw_pyro_server.py", { "nometa" })
    finally(function() proc.stop(server) end)
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    -- get_metadata took seq 1
    assert.are.equal(2, p:seq()[1])
    local e = client.error_of(p.other, p)
    assert.is_true(errors.is(e, "attribute"))
  end)

  it("rejects a reply whose sequence number does not match", function()
    local server, port = client.start_python("raw_pyro_server.py", { "badseq" })
    finally(function() proc.stop(server) end)
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    local e = client.error_of(p.seq, p)
    assert.is_true(errors.is(e, "protocol"))
    assert.truthy(e.message:find("invoke: reply sequence out of sync (sent 1, got 2)", 1, true), e.message)
  end)
end)

describe("springrun.proxy inside springrun tasks #net #interop", function()
  local runtime = require "springrun.runtime"
  local uv = require "luv"
  local server, port

  setup(function()
    server, port = client.start_pyro()
  end)

  teardown(function()
    proc.stop(server)
  end)

  it("knows it runs in a task and calls Python Pyro4 through luv", function()
    local p = springrun.proxy(url_of(port), { timeout = 10 })
    finally(function() p:destroy() end)
    local ok, a, b, c, d = client.in_task(function()
      assert(runtime.current(), "not in a task")
      return p:get_data("task"), p:add(2, 3), p:echo_args(nil, 2, nil), p:nothing()
    end)
    assert.is_true(ok, tostring(a))
    assert.are.equal("You got remote data => task", a)
    assert.are.equal(5, b)
    assert.are.equal("[null, 2, null]", json.encode(c))
    assert.is_nil(d)
  end)

  it("resolves host names in a task (localhost) and names an unknown host", function()
    local p = springrun.proxy(string.format("PYRO:ServiceName@localhost:%d", port), { timeout = 10 })
    finally(function() p:destroy() end)
    assert.are.same({ true, "You got remote data => lh" }, { client.in_task(function() return p:get_data("lh") end) })
    local q = springrun.proxy("PYRO:ServiceName@no-such-host.invalid:7000", { timeout = 10 })
    local ok, e = client.in_task(function() return q:get_data("x") end)
    assert.is_false(ok)
    assert.is_true(errors.is(e, "connect"), tostring(e))
    assert.truthy(e.message:find("cannot resolve host 'no-such-host.invalid'", 1, true), e.message)
    local e2 = client.error_of(q.get_data, q, "x")
    assert.is_true(errors.is(e2, "connect"), tostring(e2))
    assert.truthy(e2.message:find("cannot resolve host 'no-such-host.invalid'", 1, true), e2.message)
  end)

  it("yields to the loop while it waits: timers keep firing during a slow call", function()
    local p = springrun.proxy(url_of(port), { timeout = 10 })
    finally(function() p:destroy() end)
    local ticks = 0
    local timer = uv.new_timer()
    timer:start(20, 20, function() ticks = ticks + 1 end)
    local ok, v = client.in_task(function() return p:sleep(0.5) end)
    timer:stop()
    timer:close()
    assert.is_true(ok, tostring(v))
    assert.are.equal(0.5, v)
    assert.is_true(ticks >= 3, "only " .. ticks .. " timer ticks during a 0.5 s call (a blocking call gives 0)")
  end)

  it("raises remote exceptions, unknown-method and serialize errors in a task too", function()
    local p = springrun.proxy(url_of(port), { timeout = 10 })
    finally(function() p:destroy() end)
    local ok, e = client.in_task(function() return p:fail("in task") end)
    assert.is_false(ok)
    assert.is_true(errors.is(e, "builtins.ValueError"))
    assert.truthy(e.remote_traceback:find("ValueError: in task", 1, true))
    ok, e = client.in_task(function() return p:nope() end)
    assert.is_true(errors.is(e, "attribute"))
    ok, e = client.in_task(function() return p:echo(print) end)
    assert.is_true(errors.is(e, "serialize"))
    local ok2, v = client.in_task(function() return p:echo("still fine") end)
    assert.is_true(ok2)
    assert.are.equal("still fine", v)
  end)

  it("queues calls from several tasks on a proxy with max_connections = 1, each its own reply", function()
    local p = springrun.proxy(url_of(port), { timeout = 10, max_connections = 1 })
    finally(function() p:destroy() end)
    local results, done = {}, 0
    local t0 = client.now()
    for i = 1, 4 do
      runtime.spawn(function()
        local ok, v = pcall(function() return p:echo_args(i, p:sleep(0.1)) end)
        results[i] = ok and v or tostring(v)
        done = done + 1
      end)
    end
    local guard, expired = uv.new_timer(), false
    guard:start(20000, 0, function() expired = true end)
    while done < 4 and not expired do uv.run("once") end
    guard:stop()
    guard:close()
    local took = client.now() - t0
    for i = 1, 4 do
      assert.are.equal(string.format("[%d, 0.1]", i), json.encode(results[i]))
    end
    -- one connection, one request at a time: four 0.1 s sleeps in a row
    assert.is_true(took >= 0.38, "took " .. took)
  end)

  it("sends oneway calls from a task without waiting", function()
    local p = springrun.proxy(url_of(port), { timeout = 10 })
    finally(function() p:destroy() end)
    local marker = "task-event-" .. tostring(client.now())
    local ok, took = client.in_task(function()
      local t0 = client.now()
      p:log_event(marker, 2.0) -- the server takes 2 s over it
      return client.now() - t0
    end)
    assert.is_true(ok)
    assert.is_true(took < 1.5, "took " .. tostring(took))
    local deadline, seen = client.now() + 10, false
    repeat
      for _, ev in ipairs(p:events()) do if ev == marker then seen = true end end
      if not seen then proc.poll_step(50) end
    until seen or client.now() > deadline
    assert.is_true(seen)
  end)

  it("bounds a call by timeout in a task against a server that never answers", function()
    local silent, sport = client.start_python("silent_server.py")
    finally(function() proc.stop(silent) end)
    local p = springrun.proxy(url_of(sport), { timeout = 0.3 })
    local took, ok, e = client.timed(client.in_task, function() return p:get_data("x") end)
    assert.is_false(ok)
    assert.is_true(errors.is(e, "timeout"), tostring(e))
    assert.truthy(e.message:find(url_of(sport), 1, true))
    assert.is_true(took >= 0.25 and took < 2, "took " .. took)
  end)

  it("names the URL when refused in a task, and reconnects after a restart", function()
    local cleanup = proc.cleanups(finally)
    local fport = proc.free_port()
    local p = springrun.proxy(url_of(fport), { timeout = 5 })
    local ok, e = client.in_task(function() return p:get_data("x") end)
    assert.is_false(ok)
    assert.is_true(errors.is(e, "refused"))
    assert.truthy(e.message:find(url_of(fport), 1, true))

    local s2, port2 = client.start_pyro()
    cleanup(function() proc.stop(s2) end)
    local q = springrun.proxy(url_of(port2), { timeout = 10 })
    cleanup(function() q:destroy() end)
    assert.are.same({ true, "You got remote data => 1" }, { client.in_task(function() return q:get_data("1") end) })
    proc.stop(s2)
    assert(proc.wait_port_closed("127.0.0.1", port2, 10))
    s2 = client.start_pyro(port2)
    assert.are.same({ true, "You got remote data => 2" }, { client.in_task(function() return q:get_data("2") end) })
  end)

  it("switches between blocking and task use of one proxy", function()
    local p = springrun.proxy(url_of(port), { timeout = 10 })
    finally(function() p:destroy() end)
    assert.are.equal("You got remote data => a", p:get_data("a"))
    assert.are.same({ true, "You got remote data => b" }, { client.in_task(function() return p:get_data("b") end) })
    assert.are.equal("You got remote data => c", p:get_data("c"))
  end)
end)

describe("springrun.proxy with services exported by this process #net", function()
  local runtime = require "springrun.runtime"
  local Service = { get_data = function(_, param) return "You got remote data => " .. tostring(param) end }

  local function export(name, service)
    local ex = springrun.PyroServiceExporter { service_name = name, service = service,
      service_host = "127.0.0.1", service_port = 0 }
    ex:after_properties_set()
    return ex, ex.service_port
  end

  it("calls a service exported by the same script without deadlocking", function()
    local cleanup = proc.cleanups(finally)
    local ex, sport = export("ServiceName", Service)
    cleanup(function() ex:destroy() end)
    assert.is_true(runtime.has_exports())
    local p = springrun.proxy(url_of(sport), { timeout = 10 })
    cleanup(function() p:destroy() end)
    assert.are.equal("You got remote data => Hello", p:get_data("Hello"))
    assert.are.equal("You got remote data => again", p:get_data("again"))
  end)

  it("lets a service method call another service of the same process", function()
    local cleanup = proc.cleanups(finally)
    local exb, portb = export("Back", Service)
    cleanup(function() exb:destroy() end)
    local back = springrun.proxy(url_of(portb, "Back"), { timeout = 10 })
    cleanup(function() back:destroy() end)
    local Front = {}
    function Front.relay(_, x)
      assert(runtime.current(), "a service method runs in a task")
      return "front(" .. back:get_data(x) .. ")"
    end
    local exa, porta = export("Front", Front)
    cleanup(function() exa:destroy() end)
    local front = springrun.proxy(url_of(porta, "Front"), { timeout = 10 })
    cleanup(function() front:destroy() end)
    assert.are.equal("front(You got remote data => Hi)", front:relay("Hi"))
  end)

  it("hands keyword arguments made with springrun.kwargs to a Lua service as one trailing table", function()
    local cleanup = proc.cleanups(finally)
    local ex, port = export("Greeter", {
      greet = function(_, name, kw)
        return (kw and kw.greeting or "Hello") .. " " .. name .. (kw and kw.times and (" x" .. kw.times) or "")
      end,
      count = function(_, ...) return select("#", ...) end,
    })
    cleanup(function() ex:destroy() end)
    local p = springrun.proxy(url_of(port, "Greeter"), { timeout = 10 })
    cleanup(function() p:destroy() end)
    assert.are.equal("Hello Bob", p:greet("Bob"))
    assert.are.equal("Hi Bob x2", p:greet("Bob", springrun.kwargs { greeting = "Hi", times = 2 }))
    assert.are.equal(1, p:count("Bob", springrun.kwargs {})) -- no keywords: nothing extra
    assert.are.equal(2, p:count("Bob", { greeting = "Hi" })) -- a plain table is an argument
    local kw = { greeting = "Yo" }
    local marked = springrun.kwargs(kw)
    assert.is_nil(getmetatable(kw)) -- the caller's table is left alone
    assert.are.equal("Yo Ann", p:greet("Ann", marked))
    local e = tostring(client.error_of(springrun.kwargs, { "positional" }))
    assert.truthy(e:find("springrun.kwargs: keyword names must be strings, got number 1", 1, true), e)
    e = tostring(client.error_of(springrun.kwargs, "x"))
    assert.truthy(e:find("springrun.kwargs: expected a table of keyword arguments, got string", 1, true), e)
  end)

  it("keeps its calls' tasks to itself when another state of the process (a luv thread) loads springrun", function()
    local cleanup = proc.cleanups(finally)
    local uv = require "luv"
    local parked
    local ex, port = export("Parking", {
      park = function() parked = runtime.current(); coroutine.yield() end,
      who = function() return runtime.current() ~= nil end,
    })
    cleanup(function() ex:destroy() end)
    local p = springrun.PyroProxyFactory { service_url = url_of(port, "Parking"), timeout = 10 }
    cleanup(function() p:destroy() end)
    assert.is_true(p:who())
    -- a call that stays alive in its task (parked until resumed below)
    local q = springrun.proxy(url_of(port, "Parking"), { timeout = 10 })
    cleanup(function() q:destroy() end)
    local done = false
    runtime.spawn(function() q:park() done = true end)
    local deadline = client.now() + 10
    while parked == nil and client.now() < deadline do proc.poll_step(5) end
    assert.is_not_nil(parked)
    assert.are.equal(2, runtime.tasks()) -- the caller's task and the parked call's
    -- another Lua state loads springrun.runtime and counts its own tasks: none
    local seen
    local async = uv.new_async(function(n) seen = n end)
    cleanup(function() async:close() end)
    local thread = uv.new_thread(function(path, cpath, a)
      package.path, package.cpath = path, cpath
      a:send(require("springrun.runtime").tasks())
    end, package.path, package.cpath, async)
    thread:join()
    deadline = client.now() + 10
    while seen == nil and client.now() < deadline do proc.poll_step(5) end
    assert.are.equal(0, seen)
    assert.are.equal(2, runtime.tasks())
    runtime.resume(parked)
    deadline = client.now() + 10
    while not done and client.now() < deadline do proc.poll_step(5) end
    assert.is_true(done)
    assert.are.equal(0, runtime.tasks())
    assert.is_true(p:who())
  end)

  it("runs each call in a task the daemon binding starts, reuses its coroutine, reports one that fails", function()
    local cleanup = proc.cleanups(finally)
    local uv = require "luv"
    local log = require "springrun.log"
    local seen = {}
    local Tasks = {
      who = function() seen[#seen + 1] = runtime.current() end,
      -- waits for a timer: ends through runtime.resume, not in its first resume
      nap = function()
        local co = runtime.current()
        seen[#seen + 1] = co
        local t = uv.new_timer()
        t:start(20, 0, function() t:close() runtime.resume(co, "rested") end)
        return coroutine.yield()
      end,
    }
    local ex, port = export("Tasks", Tasks)
    cleanup(function() ex:destroy() end)
    local p = springrun.proxy(url_of(port, "Tasks"), { timeout = 10 })
    cleanup(function() p:destroy() end)
    p:who()
    p:who()
    assert.is_not_nil(seen[1])
    assert.are.equal(seen[1], seen[2]) -- the first call's coroutine, pooled
    assert.are.equal(0, runtime.tasks())
    assert.are.equal("rested", p:nap())
    assert.are.equal(0, runtime.tasks())
    p:who() -- nap's coroutine, handed back by runtime.resume
    assert.are.equal(seen[3], seen[4])
    -- a task whose function fails: reported, forgotten (incoming calls and
    -- runtime.spawn share the one task pool)
    local lines = {}
    local prev = log.set_output(function(l) lines[#lines + 1] = l end)
    cleanup(function() log.set_output(prev) end)
    runtime.spawn(function() error("task kaboom") end)
    assert.truthy(table.concat(lines, "\n"):find("task failed: .*task kaboom"), table.concat(lines, "\n"))
    assert.are.equal(0, runtime.tasks())
    p:who() -- the pool still serves
    assert.is_not_nil(seen[5])
    assert.are.equal(0, runtime.tasks())
  end)

  it("uses the springrun daemon's metadata: oneway without waiting, unknown names refused locally", function()
    local cleanup = proc.cleanups(finally)
    local seen = {}
    local svc = {
      note = function(_, x) seen[#seen + 1] = x end,
      count = function() return #seen end,
      _hidden = function() return "no" end,
    }
    local ex = springrun.PyroServiceExporter { service_name = "Notes", service = svc,
      service_host = "127.0.0.1", service_port = 0, oneway = { "note" } }
    ex:after_properties_set()
    cleanup(function() ex:destroy() end)
    local p = springrun.proxy(url_of(ex.service_port, "Notes"), { timeout = 10 })
    cleanup(function() p:destroy() end)
    local meta = p:_pyro_metadata()
    assert.is_true(meta.oneway.note)
    assert.is_true(meta.methods.count)
    assert.is_nil(meta.methods._hidden)
    assert.are.equal(0, select("#", p:note("a")))
    local deadline = client.now() + 10
    while #seen == 0 and client.now() < deadline do proc.poll_step(5) end
    assert.are.same({ "a" }, seen)
    assert.are.equal(1, p:count())
    local e = client.error_of(p.nope, p)
    assert.are.equal("remote object '" .. url_of(ex.service_port, "Notes") .. "' has no exposed attribute or method 'nope'",
      e.message)
  end)

  it("carries a Lua error of the service as a remote exception with the Lua traceback", function()
    local cleanup = proc.cleanups(finally)
    local ex, sport = export("Failing", { boom = function() error("kaboom") end })
    cleanup(function() ex:destroy() end)
    local p = springrun.proxy(url_of(sport, "Failing"), { timeout = 10 })
    cleanup(function() p:destroy() end)
    local e = client.error_of(p.boom, p)
    assert.is_true(errors.is(e, "remote"))
    assert.truthy(e.message:find("kaboom", 1, true))
    assert.truthy(e.remote_traceback:find("proxy_spec.lua:%d+: in function"), e.remote_traceback)
  end)
end)

describe("springrun.proxy and Pyro4 settings #net #interop", function()
  it("inflates compressed replies (PYRO_COMPRESSION) in blocking and task calls", function()
    local cleanup = proc.cleanups(finally)
    local server, port = client.start_pyro(nil, nil, { PYRO_COMPRESSION = "true" })
    cleanup(function() proc.stop(server) end)
    local p = springrun.proxy(url_of(port), { timeout = 10 })
    cleanup(function() p:destroy() end)
    local big = string.rep("springrun ", 2000)
    assert.are.equal(big, p:echo(big))
    local ok, v = client.in_task(function() return p:echo(big .. "!") end)
    assert.is_true(ok, tostring(v))
    assert.are.equal(big .. "!", v)
  end)

  it("speaks serpent when asked to", function()
    local cleanup = proc.cleanups(finally)
    local server, port = client.start_pyro(nil, nil, { PYRO_SERIALIZERS_ACCEPTED = "serpent" })
    cleanup(function() proc.stop(server) end)
    local p = springrun.proxy(url_of(port), { timeout = 10, serializer = "serpent" })
    cleanup(function() p:destroy() end)
    assert.are.equal("You got remote data => serpent", p:get_data("serpent"))
    assert.are.equal(5, p:add(2, 3))
    local e = client.error_of(p.fail, p, "boom")
    assert.are.equal("builtins.ValueError", e.class)
    assert.are.equal("boom", e.message)
    -- a second proxy pipelines its first call, in serpent too
    local before = require("springrun.proxy").stats().pipelined
    local q = springrun.proxy(url_of(port), { timeout = 10, serializer = "serpent" })
    cleanup(function() q:destroy() end)
    assert.are.equal(7, q:add(3, 4))
    assert.are.equal(before + 1, require("springrun.proxy").stats().pipelined)
  end)

  it("reports a daemon that refuses the serializer (marshal CONNECTFAIL) as rejected", function()
    local server, port = client.start_pyro(nil, nil, { PYRO_SERIALIZERS_ACCEPTED = "serpent" })
    finally(function() proc.stop(server) end)
    local p = springrun.proxy(url_of(port), { timeout = 10 })
    local e = client.error_of(p.get_data, p, "x")
    assert.is_true(errors.is(e, "rejected"))
    assert.are.equal("connection to " .. url_of(port) .. " rejected: message used serializer that is not accepted: 2",
      e.message)
  end)
end)

describe("springrun.proxy and broken peers #net", function()
  it("reports bytes that are not a Pyro message as a protocol error", function()
    local server, port = client.start_python("raw_pyro_server.py", { "garbage" })
    finally(function() proc.stop(server) end)
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    local e = client.error_of(p.seq, p)
    assert.is_true(errors.is(e, "protocol"), tostring(e))
    assert.truthy(e.message:find("handshake with " .. url_of(port, "Obj") .. " failed: ", 1, true), e.message)
    assert.truthy(e.message:find("magic", 1, true), e.message)
    local ok, e2 = client.in_task(function() return p:seq() end)
    assert.is_false(ok)
    assert.is_true(errors.is(e2, "protocol"), tostring(e2))
  end)

  it("raises closed, without resending, when the server hangs up on a sent request", function()
    local server, port = client.start_python("raw_pyro_server.py", { "hangup" })
    finally(function() proc.stop(server) end)
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    local e = client.error_of(p.seq, p)
    assert.is_true(errors.is(e, "closed"), tostring(e))
    assert.are.equal(string.format("call seq to %s failed: connection closed by the server", url_of(port, "Obj")),
      e.message)
    local ok, e2 = client.in_task(function() return p:seq() end)
    assert.is_false(ok)
    assert.is_true(errors.is(e2, "closed"), tostring(e2))
  end)
end)

describe("springrun.proxy pipelines the first call with the handshake #net", function()
  local proxy_mod = require "springrun.proxy"
  local names = 0

  -- A pipeline_pyro_server.py serving a fresh object name (so no metadata of
  -- an earlier test is cached for it); returns its URL and a function that
  -- reads the server's log of connections.
  local function start()
    names = names + 1
    local name = string.format("Pipe%d_%d", names, os.time())
    local server, port = client.start_python("pipeline_pyro_server.py", { name })
    finally(function() proc.stop(server) end)
    local function log()
      local ctl = springrun.proxy(url_of(port, "Ctl"), { timeout = 10 })
      local entries = ctl:log()
      ctl:destroy()
      return entries
    end
    return url_of(port, name), log, name, port
  end

  -- one proxy, one call, closed: the server serves one connection at a time
  local function once(url, opts, method, ...)
    local p = springrun.proxy(url, opts or { timeout = 10 })
    local res = table.pack(pcall(p[method], p, ...))
    p:destroy()
    if not res[1] then error(res[2], 0) end
    return table.unpack(res, 2, res.n)
  end

  it("handshakes first on the first connection, then sends CONNECT and the first call in one write", function()
    local url = start()
    local s0 = proxy_mod.stats()
    local r = once(url, nil, "probe", "a")
    assert.are.same({ false, 1, "a" }, r) -- INVOKE came after the CONNECTOK
    local s1 = proxy_mod.stats()
    assert.are.equal(s0.pipelined, s1.pipelined)
    assert.are.equal(s0.connections + 1, s1.connections)
    for i = 1, 3 do
      r = once(url, nil, "probe", "b" .. i)
      assert.are.same({ true, 1, "b" .. i }, r) -- INVOKE was there with the CONNECT
    end
    assert.are.equal(s1.pipelined + 3, proxy_mod.stats().pipelined)
    -- later calls use the connection as usual
    local p = springrun.proxy(url, { timeout = 10 })
    assert.are.same({ true, 1, "c" }, p:probe("c"))
    assert.are.same({ true, 2, "d" }, p:probe("d"))
    assert.are.equal(2, p._pyro_seq)
    assert.is_true(p:_pyro_metadata().oneway.ping)
    p:destroy()
    -- a oneway first call (oneway in the cached metadata) goes out with the
    -- CONNECT too, returning nothing; the connection stays usable
    p = springrun.proxy(url, { timeout = 10 })
    local before = proxy_mod.stats().pipelined
    assert.are.equal(0, select("#", p:ping()))
    assert.are.equal(before + 1, proxy_mod.stats().pipelined)
    assert.are.same({ true, 2, "e" }, p:probe("e"))
    p:destroy()
  end)

  it("pipelines inside a springrun task too (the luv connection)", function()
    local url = start()
    local ok, v = client.in_task(function()
      local got = {}
      for i = 1, 3 do
        local p = springrun.proxy(url, { timeout = 10 })
        got[i] = p:probe(i)
        if i == 3 then
          assert(p:ping() == nil)
          got[4] = p:probe(4)
        end
        p:destroy()
      end
      local p = springrun.proxy(url, { timeout = 10 })
      p:ping() -- a oneway first call
      got[5] = p:probe(5)
      p:destroy()
      return got
    end)
    assert.is_true(ok, tostring(v))
    assert.are.same({ { false, 1, 1 }, { true, 1, 2 }, { true, 1, 3 }, { true, 3, 4 }, { true, 2, 5 } }, v)
  end)

  it("replaces the cached metadata with what a later handshake says", function()
    local url = start()
    once(url, nil, "probe", "fill the cache")
    local e = client.error_of(once, url, nil, "extra")
    assert.is_true(errors.is(e, "attribute")) -- not exposed yet: refused locally
    once(url, nil, "grow")
    local before = proxy_mod.stats().pipelined
    -- pipelined on the old metadata; the CONNECTOK brings the new one
    local p = springrun.proxy(url, { timeout = 10 })
    assert.are.same({ true, 1, "x" }, p:probe("x"))
    assert.is_true(p:_pyro_metadata().methods.extra)
    assert.are.equal("extra", p:extra())
    p:destroy()
    -- the next connection can pipeline the new method
    assert.are.equal("extra", once(url, nil, "extra"))
    assert.are.equal(before + 2, proxy_mod.stats().pipelined)
  end)

  it("refuses a method missing from the cached metadata locally, after a plain handshake", function()
    local url, log = start()
    once(url, nil, "probe", "fill the cache")
    local before = proxy_mod.stats()
    local p = springrun.proxy(url, { timeout = 10 })
    local e = client.error_of(p.nosuch, p, 1)
    p:destroy()
    assert.is_true(errors.is(e, "attribute"))
    assert.are.equal(string.format("remote object '%s' has no exposed attribute or method 'nosuch'", url), e.message)
    local after = proxy_mod.stats()
    assert.are.equal(before.pipelined, after.pipelined)
    assert.are.equal(before.connections + 1, after.connections)
    local entries = log()
    -- the refused call's connection: CONNECT alone
    assert.are.same(false, entries[#entries - 1][2])
  end)

  it("reports a rejected handshake secret on a cached service exactly as on a first connection", function()
    local url, log, name = start()
    local wrong = { timeout = 10, handshake = "wrong" }
    local first = client.error_of(once, url, wrong, "probe", "x") -- nothing cached: CONNECT alone
    once(url, nil, "probe", "fill the cache")
    local before = proxy_mod.stats().pipelined
    local cached = client.error_of(once, url, wrong, "probe", "x") -- INVOKE sent along
    assert.is_true(errors.is(first, "rejected"))
    assert.are.equal(first.kind, cached.kind)
    assert.are.equal(first.message, cached.message)
    assert.are.equal(first.reason, cached.reason)
    assert.are.equal(string.format("connection to %s rejected: handshake failure, reason: bad secret", url),
      cached.message)
    assert.are.equal(before + 1, proxy_mod.stats().pipelined) -- sent along, and only reported as rejected
    local entries = log()
    assert.are.same({ name, false, "handshake" }, entries[1])
    assert.are.same({ name, true, "handshake" }, entries[3])
    -- the rejection dropped the cached metadata: the next connection handshakes first
    assert.are.same({ false, 1, "y" }, once(url, nil, "probe", "y"))
  end)

  it("reports a wrong secret to a springrun exporter the same way whether the call was pipelined or not", function()
    local secure = require "helpers.secure"
    local cleanup = proc.cleanups(finally)
    local _, port = secure.start_sr(cleanup, { SR_SECRET = "s3cret" })
    local function wrong() return client.error_of(once, secure.url(port), { timeout = 10, handshake = "nope" }, "echo", "x") end
    local first = wrong() -- nothing cached for this service yet
    assert.are.equal("ok", once(secure.url(port), { timeout = 10, handshake = "s3cret" }, "echo", "ok"))
    local before = proxy_mod.stats().pipelined
    local cached = wrong()
    assert.are.equal(before + 1, proxy_mod.stats().pipelined)
    assert.is_true(errors.is(first, "rejected"), tostring(first))
    assert.are.equal(first.kind, cached.kind)
    assert.are.equal(first.message, cached.message)
    assert.are.equal(first.reason, cached.reason)
    -- the exporter keeps serving
    assert.are.equal("still", once(secure.url(port), { timeout = 10, handshake = "s3cret" }, "echo", "still"))
  end)

  it("pipelines over TLS too, blocking and in a task", function()
    local secure = require "helpers.secure"
    local cleanup = proc.cleanups(finally)
    local port, certs = tls_service(cleanup)
    local tls = { timeout = 10, ssl = true, ssl_cacerts = certs.ca }
    assert.are.equal(0, once(secure.url(port), tls, "echo", 0))
    local before = proxy_mod.stats().pipelined
    assert.are.equal(1, once(secure.url(port), tls, "echo", 1))
    local ok, v = client.in_task(function() return once(secure.url(port), tls, "echo", 2) end)
    assert.is_true(ok, tostring(v))
    assert.are.equal(2, v)
    assert.are.equal(before + 2, proxy_mod.stats().pipelined)
  end)

  it("reports an object unexported since the metadata was cached as a first connection would", function()
    local url, log, name, port = start()
    once(url, nil, "probe", "fill the cache")
    once(url, nil, "unexport")
    local cached = client.error_of(once, url, nil, "probe", "x")
    local never = client.error_of(once, url_of(port, "Never"), nil, "probe", "x")
    assert.is_true(errors.is(cached, "rejected"))
    assert.are.equal(string.format("connection to %s rejected: unknown object ID: %s", url, name), cached.message)
    assert.are.equal(never.message:gsub("Never", name), cached.message)
    assert.are.equal(never.kind, cached.kind)
    local entries = log()
    assert.are.same({ name, true, "unknown" }, entries[3])
    assert.are.same({ "Never", false, "unknown" }, entries[4])
  end)
end)

describe("springrun.proxy's calls, however they travel #net", function()
  local proxy_mod = require "springrun.proxy"
  local server, port

  setup(function()
    server, port = client.start_python("fast_pyro_server.py")
    -- the service's metadata remembered: a new connection's first call
    -- goes with the CONNECT from here on
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    assert(p:reply("ok", "warm") == "warm")
    p:destroy()
  end)

  teardown(function()
    proc.stop(server)
  end)

  local function fast_count() return proxy_mod.stats().fast end

  -- What a call returns or raises, comparable across the ways it travels
  -- (sequence numbers in messages masked: the first call of a connection
  -- and a later one use different ones).
  local function outcome(p, method, ...)
    local r = table.pack(pcall(p[method], p, ...))
    if r[1] then return { ok = true, n = r.n - 1, value = r[2] } end
    local e = r[2]
    if not errors.is(e) then return { ok = false, raw = tostring(e) } end
    return { ok = false, kind = e.kind, message = (e.message:gsub("sent %d+, got %d+", "sent N, got N")),
      class = e.class, args = e.args, tb = e.remote_traceback and e.remote_traceback:match("[^\n]*\n$"),
      method = e.method, code = e.code }
  end

  -- The call method(...) as the first call of a new connection (sent with
  -- the CONNECT) and as a later call on an idle one, each outside a task
  -- (the blocking C connection) and inside one (the luv connection).
  -- Checks that all four end alike (seq_at: where an echoed sequence number
  -- sits in the value, masked) and returns the outcome.
  local function every_way(method, args, seq_at)
    local function two()
      local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
      local first = outcome(p, method, table.unpack(args, 1, args.n))
      p:destroy()
      p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
      assert.are.equal("warm", p:reply("ok", "warm"))
      local later = outcome(p, method, table.unpack(args, 1, args.n))
      p:destroy()
      return first, later
    end
    local first, later = two()
    local ok, task_first, task_later = client.in_task(two)
    assert.is_true(ok, tostring(task_first))
    local all = { first, later, task_first, task_later }
    for i, o in ipairs(all) do
      if seq_at and o.ok and type(o.value) == "table" then o.value[seq_at] = nil end
      assert.are.same(first, o, "way " .. i)
    end
    return first
  end

  it("takes one step for a plain call and counts it in stats().fast", function()
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    finally(function() p:destroy() end)
    assert.are.equal("a", p:reply("ok", "a"))
    local f0 = fast_count()
    for i = 1, 5 do assert.are.equal(i, p:reply("ok", i)) end
    assert.are.equal(f0 + 5, fast_count())
    assert.are.equal(6, p:_pyro_call("reply", "ok", 6))
    assert.are.equal(f0 + 6, fast_count())
    -- seq numbers go on: INVOKEs 1..7 above, this is 8
    assert.are.equal(8, p:echo()[4])
    assert.are.equal(8, p._pyro_seq)
    -- a oneway call is one C step too (conn:invoke_oneway); calls in a task are not
    f0 = fast_count()
    assert.are.equal(0, select("#", p:ping()))
    assert.are.equal(f0 + 1, fast_count())
    -- ... sent as the general path would: arguments, kwargs, FLAGS_ONEWAY (4), seq 10
    assert.are.equal(0, select("#", p:ping(1, "x", springrun.kwargs { k = true })))
    assert.are.same({ { 1, "x" }, { k = true }, "Obj", 10, 4 }, p:pinged())
    f0 = fast_count()
    f0 = fast_count()
    local ok, v = client.in_task(function() return p:reply("ok", "task") end)
    assert.is_true(ok, tostring(v))
    assert.are.equal("task", v)
    assert.are.equal(f0, fast_count())
    p:destroy()
  end)

  it("sends any arguments alike, however the call travels", function()
    local deep = {}
    local cases = {
      table.pack(), table.pack(nil), table.pack(nil, 2, nil), table.pack(1, "x", nil, nil),
      table.pack("héllo \"q\"\n", 1.5, -7, math.maxinteger, true, false),
      table.pack({ a = 1, b = { c = { 1.5, "x", true } } }, json.array {}, {}, json.null),
      table.pack({ 1, { 2, { 3 } } }, deep, deep),
      table.pack(1, springrun.kwargs { a = 1, b = { "x" } }),
      table.pack(springrun.kwargs {}),
    }
    local expected = {
      { {}, {} }, { { json.null }, {} }, { { json.null, 2, json.null }, {} },
      { { 1, "x", json.null, json.null }, {} },
      { { "héllo \"q\"\n", 1.5, -7, math.maxinteger, true, false }, {} },
      { { { a = 1, b = { c = { 1.5, "x", true } } }, {}, {}, json.null }, {} },
      { { { 1, { 2, { 3 } } }, {}, {} }, {} },
      { { 1 }, { a = 1, b = { "x" } } },
      { {}, {} },
    }
    for i, args in ipairs(cases) do
      local o = every_way("echo", args, 4)
      assert.is_true(o.ok, tostring(o.message or o.raw))
      assert.are.same(expected[i], { o.value[1], o.value[2] }, "case " .. i)
      assert.are.same({ "Obj", 0 }, { o.value[3], o.value[5] }, "case " .. i)
    end
  end)

  it("refuses an argument that cannot be sent, naming where it is, keeping the connection", function()
    local texts = {
      "cannot encode a function value at params[2]",
      "invalid UTF-8 at byte 1 of the string at params[2]",
      "cannot encode a table key that is not a string (key of type boolean) at params[2]",
      "cannot encode a function value at kwargs.f",
    }
    for i, bad in ipairs({ function() end, "\255bytes", { [true] = 1 }, springrun.kwargs { f = print } }) do
      local o = every_way("echo", table.pack(1, bad))
      assert.are.equal("serialize", o.kind)
      assert.truthy(o.message:find("cannot send the arguments of echo to " .. url_of(port, "Obj") .. ": "
        .. texts[i], 1, true), o.message)
    end
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    assert.are.equal(1, p:echo()[4])
    local c0 = proxy_mod.stats().connections
    assert.are.equal("serialize", outcome(p, "echo", function() end).kind)
    -- same connection; the refused call took seq 2 (as Pyro4's does)
    assert.are.equal(3, p:echo()[4])
    assert.are.equal(c0, proxy_mod.stats().connections)
    p:destroy()
  end)

  it("refuses an argument nested too deep at the same depth, however the call travels", function()
    local function nest(d)
      local t = {}
      for _ = 2, d do t = { t } end
      return t
    end
    local seen = {}
    for d = 995, 1000 do
      local o = every_way("echo", table.pack(nest(d)), 4)
      if o.ok then
        seen.ok = true
      else
        assert.are.equal("serialize", o.kind)
        assert.truthy(o.message:find("nesting too deep", 1, true), o.message)
        seen.refused = true
      end
    end
    assert.is_true(seen.ok and seen.refused, "the depth limit is not between 995 and 1000")
  end)

  it("ends every unusual reply alike, however the call travels", function()
    local u = url_of(port, "Obj")
    local cases = {
      { "ok", "v", { ok = true, n = 1, value = "v" } },
      { "ok", { 1, json.null, 3 }, { ok = true, n = 1, value = { 1, json.null, 3 } } },
      { "null", nil, { ok = true, n = 1 } },
      { "badseq", 1, { kind = "protocol", message = u .. ": invoke: reply sequence out of sync (sent N, got N)" } },
      { "badtype", 1, { kind = "protocol", message = u .. ": invalid reply to reply (message type 2)" } },
      { "serpent", "from serpent", { kind = "protocol", message = u .. ": reply used serializer 1, request used 2" } },
      { "stream", 1, { kind = "protocol",
        message = u .. ": reply returned an item stream without a stream id (STRM)" } },
      { "exception", "boom", { kind = "remote", class = "builtins.ValueError" } },
      { "badjson", nil, { kind = "protocol" } },
      { "compressed", { x = string.rep("z", 200) }, { ok = true, n = 1, value = { x = string.rep("z", 200) } } },
      { "hangup", nil, { kind = "closed", message = "call reply to " .. u .. " failed: connection closed by the server" } },
      { "closeafter", "bye", { ok = true, n = 1, value = "bye" } },
    }
    for _, c in ipairs(cases) do
      local o = every_way("reply", table.pack(c[1], c[2]))
      for k, v in pairs(c[3]) do assert.are.same(v, o[k], c[1] .. "." .. k) end
      if not c[3].ok then assert.is_false(o.ok, c[1]) end
    end
    local e = every_way("reply", table.pack("exception", "boom"))
    assert.truthy(e.tb:find("ValueError: boom", 1, true), e.tb)
  end)


  it("raises closed without resending when the server hangs up on the request", function()
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    local h0 = p:count("hangup")
    local f0 = fast_count()
    local e = outcome(p, "reply", "hangup")
    assert.are.equal(f0 + 1, fast_count())
    assert.are.equal("closed", e.kind)
    assert.are.equal(string.format("call reply to %s failed: connection closed by the server", url_of(port, "Obj")),
      e.message)
    assert.are.equal(h0 + 1, p:count("hangup")) -- sent once, and a new connection afterwards
    p:destroy()
  end)

  it("reconnects when the server closed the idle connection", function()
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    local q = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    finally(function() p:destroy(); q:destroy() end)
    local closed = q:count("closed")
    assert.are.equal("bye", p:reply("closeafter", "bye"))
    -- the server closed p's connection once count("closed") went up
    local deadline = client.now() + 10
    while q:count("closed") == closed and client.now() < deadline do proc.poll_step(10) end
    assert.are.equal(closed + 1, q:count("closed"))
    local s0 = proxy_mod.stats()
    assert.are.equal("again", p:reply("ok", "again"))
    local s1 = proxy_mod.stats()
    assert.are.equal(s0.connections + 1, s1.connections)
    -- the call went out with the new connection's CONNECT, not on the dead one
    assert.are.equal(s0.pipelined + 1, s1.pipelined)
    assert.are.equal(s0.fast + 1, s1.fast)
    assert.are.equal("more", p:reply("ok", "more"))
    assert.are.equal(s1.fast + 1, fast_count())
  end)

  it("takes one step for the first call of a new connection, with the handshake, once it knows the service", function()
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    assert.are.equal("warm", p:reply("ok", "warm")) -- metadata cached (or already)
    p:destroy()
    local s0 = proxy_mod.stats()
    for i = 1, 3 do
      p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
      assert.are.same({ { i }, {}, "Obj", 1, 0 }, p:echo(i))
      assert.are.equal(1, p._pyro_seq)
      assert.are.equal(i + 1, p:reply("ok", i + 1)) -- the connection goes on
      assert.are.equal(2, p._pyro_seq)
      p:destroy()
    end
    local s1 = proxy_mod.stats()
    assert.are.equal(s0.connections + 3, s1.connections)
    assert.are.equal(s0.pipelined + 3, s1.pipelined)
    assert.are.equal(s0.fast + 6, s1.fast)
    -- a oneway first call, a call in a task, a proxy with its own handshake
    -- value: pipelined, but not in one C step
    p = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
    assert.are.equal(0, select("#", p:ping()))
    p:destroy()
    local ok, v = client.in_task(function()
      local q = springrun.proxy(url_of(port, "Obj"), { timeout = 10 })
      local r = q:reply("ok", "task")
      q:destroy()
      return r
    end)
    assert.is_true(ok, tostring(v))
    assert.are.equal("task", v)
    p = springrun.proxy(url_of(port, "Obj"), { timeout = 10, handshake = "hello" })
    assert.are.equal("own", p:reply("ok", "own"))
    p:destroy()
    assert.are.equal(s1.fast, proxy_mod.stats().fast)
  end)

  it("takes one step over TLS too", function()
    local secure = require "helpers.secure"
    local cleanup = proc.cleanups(finally)
    local sport, certs = tls_service(cleanup)
    local p = springrun.proxy(secure.url(sport), { timeout = 10, ssl = true, ssl_cacerts = certs.ca })
    cleanup(function() p:destroy() end)
    assert.are.equal(0, p:echo(0))
    local f0 = fast_count()
    for i = 1, 3 do assert.are.same({ i, "x" }, p:echo({ i, "x" })) end
    assert.are.equal(f0 + 3, fast_count())
  end)

  it("bounds the call by the timeout, discards the connection and recovers", function()
    local p = springrun.proxy(url_of(port, "Obj"), { timeout = 0.3 })
    assert.are.equal(0, p:reply("ok", 0))
    local took, e = client.timed(outcome, p, "reply", "sleep", 1)
    assert.are.equal("timeout", e.kind)
    assert.are.equal(string.format("call reply to %s timed out after 0.3 s", url_of(port, "Obj")), e.message)
    assert.is_true(took >= 0.25 and took < 1.5, "took " .. took)
    p.timeout = 10
    assert.are.equal("next", p:reply("ok", "next"))
    p:destroy()
  end)
end)

describe("springrun.proxy timeouts after the process blocked #net", function()
  -- luv's loop time is cached; a task's connect or call timer started from
  -- it after a blocking spell longer than the timeout used to fire at once
  it("a task's call is timed from when it starts, not from the last loop turn", function()
    local uv = require "luv"
    local runtime = require "springrun.runtime"
    local e = springrun.PyroServiceExporter { service_name = "Late", service_host = "127.0.0.1",
      service_port = 0, service = { echo = function(_, v) return v end } }
    e:after_properties_set()
    finally(function() e:destroy() end)
    uv.run("nowait")
    uv.sleep(1500) -- blocks the process without turning the loop
    local got, err
    runtime.spawn(function()
      local ok, v = pcall(function()
        local p = springrun.proxy(url_of(e:bound_port(), "Late"), { timeout = 1 })
        return p:echo("on time")
      end)
      if ok then got = v else err = v end
    end)
    while got == nil and err == nil do uv.run("once") end
    assert.is_nil(err)
    assert.are.equal("on time", got)
  end)
end)
