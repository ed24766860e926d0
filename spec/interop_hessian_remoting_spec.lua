-- Hessian remoting against real Java (Caucho Hessian 4.0.38): the Lua
-- HessianProxyFactory calls the Java server (spec/java/HessianTestServer,
-- HessianSkeleton under com.sun.net.httpserver), Caucho's own
-- HessianProxyFactory (spec/java/HessianLuaClient, Hessian 1 and Hessian 2
-- calls) calls a springrun HessianServiceExporter in a springrun process;
-- every type crosses both ways, beans with back-references, faults both
-- ways. Then the exporter's HTTP side: refusals answered by the daemon
-- thread (400, 404, 405, 413, 431, a fault for a body that is not Hessian),
-- the deadlines of slow and stalled clients, keep-alive and pipelining --
-- each followed by a normal call; https with the Pyro exporter's TLS
-- properties (the Lua proxy and Caucho's Java client through a keytool
-- truststore; wrong CA and plain http refused), and the exporter's logger.
local springrun = require "springrun"
local hessian = require "springrun.hessian"
local errors = require "springrun.errors"
local java = require "helpers.java"
local proc = require "helpers.proc"
local uv = require "luv"

local HOST = "127.0.0.1"

-- Connects to port, writes each string of `sends` (a number waits that many
-- ms first), reads until the peer closes or `timeout` s pass. Returns what
-- was read and whether the peer closed.
local function raw(port, sends, timeout)
  local tcp = uv.new_tcp()
  local chunks, closed, done = {}, false, false
  local i = 0
  local timer = uv.new_timer()
  local function next_send()
    i = i + 1
    local s = sends[i]
    if s == nil then return end
    if type(s) == "number" then
      timer:start(s, 0, next_send)
    else
      tcp:write(s, function() next_send() end)
    end
  end
  tcp:connect(HOST, port, function(err)
    assert(not err, err)
    tcp:read_start(function(rerr, data)
      if rerr or not data then
        closed, done = true, true
      else
        chunks[#chunks + 1] = data
      end
    end)
    next_send()
  end)
  local deadline = uv.now() + (timeout or 5) * 1000
  while not done and uv.now() < deadline do
    uv.run("once")
    uv.update_time()
  end
  timer:close()
  if not tcp:is_closing() then tcp:close() end
  uv.run("nowait")
  return table.concat(chunks), closed
end

-- The status codes of every response in s, in order.
local function statuses(s)
  local out = {}
  for code in s:gmatch("HTTP/1%.1 (%d%d%d) ") do out[#out + 1] = tonumber(code) end
  return out
end

local function post(path, body, extra)
  return "POST " .. path .. " HTTP/1.1\r\nHost: x\r\nContent-Type: x-application/hessian\r\n"
    .. (extra or "") .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
end

describe("Hessian remoting against Caucho Hessian 4.0.38 #interop", function()
  setup(function() java.compile() end)

  it("the Lua proxy calls the Java server: every type both ways, beans, faults", function()
    local port, server = java.start_server()
    finally(function() proc.stop(server) end)
    local svc = springrun.hessian_proxy("http://" .. HOST .. ":" .. port .. "/test", { timeout = 20 })
    assert.equal(5, svc:add(2, 3))
    for _, v in ipairs({ 0, -16, 47, 2047, 262144, 2147483647, -2147483648, 2147483648,
      math.maxinteger, math.mininteger, 0.0, 1.5, 0.1, -2.25, 1e300, true, false, "",
      "h\u{e9}llo \u{20ac} \u{1F600}", string.rep("\u{1F600}", 20000), string.rep("y", 70000) }) do
      local back = svc:echo(v)
      assert.equal(math.type(v), math.type(back))
      assert.equal(v, back)
    end
    assert.is_nil(svc:echo(nil))
    assert.equal(2 ^ 40 | 0, svc:echoLong(hessian.long(2 ^ 40 | 0)))
    assert.equal("java.lang.Long", svc:describe(hessian.long(1)))
    assert.equal("java.lang.Integer", svc:describe(1))
    local data = string.rep("\0\1\255", 70000)
    assert.equal(data, svc:echo(hessian.binary(data)).data)
    assert.equal("[B", svc:describe(hessian.binary("x")))
    assert.equal(1577836800001, svc:echo(hessian.date(1577836800001)).ms)
    assert.equal("java.util.Date", svc:describe(hessian.date(0)))
    assert.same({ 1, "two", 3.5, hessian.null, true }, svc:echo({ 1, "two", 3.5, hessian.null, true }))
    assert.equal("java.util.ArrayList", svc:describe({ 1 }))
    assert.equal("[I", svc:describe(hessian.list({ 1, 2 }, "[int")))
    assert.equal("[int", hessian.type_of(svc:echo(hessian.list({ 1, 2 }, "[int"))))
    assert.same({ a = 1, b = { 1, 2 } }, svc:echo({ a = 1, b = { 1, 2 } }))
    assert.equal("java.util.HashMap", svc:describe({ a = 1 }))
    assert.equal("java.util.TreeMap", hessian.type_of(svc:echo(hessian.map({ k = "v" }, "java.util.TreeMap"))))
    -- a Lua table as a typed bean with back-references, and back
    local bean = hessian.object("HessianTestServer$Bean", { name = "lua", count = 3 })
    bean.self = bean
    bean.items = { bean, "y" }
    assert.equal("HessianTestServer$Bean(lua,3,true)", svc:describe(bean))
    local back = svc:echo(bean)
    assert.equal("HessianTestServer$Bean", hessian.type_of(back))
    assert.equal(back, back.self)
    assert.equal(back, back.items[1])
    -- Java's bean with back-references
    local b = svc:makeBean("java", 7)
    assert.equal("HessianTestServer$Bean", hessian.type_of(b))
    assert.same({ "java", 7, true, true, "x" }, { b.name, b.count, b.self == b, b.items[1] == b, b.items[2] })
    -- faults: springrun.errors objects with the code, message and Java class
    local ok, e = pcall(svc.fail, svc, "boom")
    assert.is_false(ok)
    assert.is_true(errors.is(e, "remote"))
    assert.equal("java.lang.IllegalStateException", e.class)
    assert.equal("java.lang.IllegalStateException", e.exception)
    assert.equal("ServiceException", e.code)
    assert.equal("boom", e.message)
    assert.equal("fail", e.method)
    assert.equal("java.lang.IllegalStateException: boom", tostring(e))
    ok, e = pcall(svc.nope, svc)
    assert.is_false(ok)
    assert.equal("NoSuchMethodException", e.code)
    assert.equal("com.caucho.hessian.client.HessianServiceException", e.class)
    assert.equal("The service has no method named: nope", e.message)
    -- the proxy still works after faults
    assert.equal(9, svc:add(4, 5))
  end)

  it("a context builds the seed's springpython.remoting.hessian.HessianProxyFactory", function()
    local cleanup = proc.cleanups(finally)
    local port, server = java.start_server()
    cleanup(function() proc.stop(server) end)
    local ctx = springrun.context {
      service = { class = "springpython.remoting.hessian.HessianProxyFactory",
                  props = { service_url = "http://" .. HOST .. ":" .. port .. "/test", timeout = 20 } },
    }
    cleanup(function() ctx:close() end)
    assert.equal(7, ctx:get_object("service"):add(3, 4))
    -- the seed's own XML, its URL pointed at the Java server
    local f = assert(io.open(proc.root .. "/spec/fixtures/xml/hessian.xml"))
    local xml = f:read("a"):gsub("http://localhost:8080/", "http://" .. HOST .. ":" .. port .. "/test")
    f:close()
    local path = proc.tmpfile(xml, ".xml")
    cleanup(function() os.remove(path) end)
    local xctx = springrun.context_from_xml(path)
    assert.equal(11, xctx:get_object("personService"):add(5, 6))
    xctx:close()
    local p = springrun.HessianProxyFactory { service_url = "http://" .. HOST .. ":" .. port .. "/test" }
    assert.equal(3, p:_hessian_call("add", 1, 2))
  end)

  it("reports transport failures and bad configuration as springrun.errors", function()
    local port = proc.free_port()
    local svc = springrun.hessian_proxy("http://" .. HOST .. ":" .. port .. "/test", { timeout = 5 })
    local ok, e = pcall(svc.add, svc, 1, 2)
    assert.is_false(ok)
    assert.equal("refused", e.kind)
    ok, e = pcall(function() return springrun.HessianProxyFactory({ service_url = "PYRO:x@h:1" }):add(1) end)
    assert.is_false(ok)
    assert.equal("config", e.kind)
    assert.matches("service_url must be an http:// or https:// URL", e.message, 1, true)
    ok, e = pcall(function() springrun.HessianProxyFactory({ servce_url = "http://x/" }) end)
    assert.is_false(ok)
    assert.matches("service_url", tostring(e), 1, true)
    ok, e = pcall(function() return springrun.hessian_proxy("http://127.0.0.1:1/x", { timeout = -1 }) end)
    assert.is_false(ok)
    assert.matches("timeout must be a positive number", e.message, 1, true)
  end)

  it("serves Caucho's Java client (Hessian 1 and 2 calls): every type, beans, faults", function()
    local port = proc.free_port()
    local server = proc.spawn({ proc.bin, proc.root .. "/spec/fixtures/hessian_service.lua", HOST,
      tostring(port) })
    finally(function() proc.stop(server) end)
    assert(proc.wait_port(HOST, port, 15, server))
    for _, h in ipairs({ "h1", "h2" }) do
      local p = proc.spawn({ "java", java.OPENS, "-cp", java.CP, "HessianLuaClient",
        "http://" .. HOST .. ":" .. port .. "/lua", h })
      assert.equal(0, proc.wait_exit(p, 60), p:stderr())
      local out = p:stdout()
      assert.not_matches("BAD", out, 1, true)
      local lines = {}
      for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal(42, #lines, out)
      assert.equal("add 5", lines[1])
      local expect = {
        "echo null ok null | nil",
        "echo true ok java.lang.Boolean | boolean",
        "echo int262143 ok java.lang.Integer | integer",
        "echo longmin ok java.lang.Long | integer",
        "echo double0.1 ok java.lang.Double | float",
        "echo utf8 ok java.lang.String | string 9",
        "echo emoji20000 ok java.lang.String | string 20000",
        "echo long70000 ok java.lang.String | string 70000",
        "echo binary200000 ok [B | table binary",
        "echo dateminute ok java.util.Date | table date",
        "echo arraylist ok java.util.ArrayList | table list",
        "echo intarray ok [I | table list [int",
        "echo stringarray ok [Ljava.lang.String; | table list [string",
        "echo linkedlist ok java.util.LinkedList | table list java.util.LinkedList",
        "echo hashmap ok java.util.HashMap | table map",
        "echo treemap ok java.util.TreeMap | table map java.util.TreeMap",
        "long 1099511627776 double 3.25 date 0 binary 2",
        -- Hessian 1 sends an object as a typed map, Hessian 2 as an instance
        h == "h1" and "echo bean java 3 true true | table map HessianTestServer$Bean"
          or "echo bean java 3 true true | HessianTestServer$Bean(java,3,true)",
        "echo shared true",
        "bean lua 7 true true x",
        "fault java.lang.IllegalStateException boom",
        "fault java.lang.RuntimeException plain",
        "nope com.caucho.hessian.io.HessianServiceException '/lua' object has no attribute 'nope'",
      }
      for _, want in ipairs(expect) do
        assert.truthy(out:find("\n" .. want .. "\n", 1, true), want .. "\nnot in:\n" .. out)
      end
    end
  end)
end)

describe("HessianServiceExporter over HTTP #net", function()
  local ex, port, svc

  before_each(function()
    ex = springrun.HessianServiceExporter {
      service = { add = function(_, a, b) return a + b end, echo = function(_, v) return v end },
      service_path = "/calc", service_host = HOST, service_port = 0,
      max_message_size = 4096, send_deadline = 0.3, handshake_timeout = 0.5,
    }
    ex:after_properties_set()
    port = ex:bound_port()
    svc = springrun.hessian_proxy(ex:service_url(), { timeout = 5 })
  end)

  after_each(function() ex:destroy() end)

  it("answers calls over one kept-alive connection, pipelined requests in order", function()
    local call = hessian.encode_call("add", 1, 2)
    local out, closed = raw(port, { post("/calc", call) .. post("/calc", hessian.encode_call("add", 3, 4))
      .. post("/calc", call, "Connection: close\r\n") })
    assert.is_true(closed)
    assert.same({ 200, 200, 200 }, statuses(out))
    local bodies = {}
    for body in out:gmatch("Content%-Length: %d+\r\n\r\n(H\2\0R[^H]*)") do bodies[#bodies + 1] = body end
    assert.same({ true, 3, 2 }, { hessian.decode_reply(bodies[1]) })
    assert.same({ true, 7, 2 }, { hessian.decode_reply(bodies[2]) })
    assert.equal(3, svc:add(1, 2))
  end)

  it("refuses bad requests with the HTTP status naming the limit, and keeps serving", function()
    -- not HTTP: 400 and the connection closes
    local out, closed = raw(port, { "HELLO\r\n\r\n" })
    assert.same({ 400 }, statuses(out))
    assert.matches("malformed HTTP request", out, 1, true)
    assert.is_true(closed)
    -- a head over 16 KiB: 431 before it is kept
    out, closed = raw(port, { "POST /calc HTTP/1.1\r\nX-Big: " .. string.rep("a", 20000) .. "\r\n\r\n" })
    assert.same({ 431 }, statuses(out))
    assert.matches("max_header_size", out, 1, true)
    assert.is_true(closed)
    -- a body over max_message_size: 413 from its Content-Length alone
    out, closed = raw(port, { "POST /calc HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" })
    assert.same({ 413 }, statuses(out))
    assert.matches("request body of 100000 bytes is larger than 4096 (max_message_size)", out, 1, true)
    assert.is_true(closed)
    -- chunked past the limit too
    out = raw(port, { "POST /calc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n"
      .. string.rep("z", 0x2000) .. "\r\n0\r\n\r\n" })
    assert.same({ 413 }, statuses(out))
    -- wrong path and method: 404 and 405, the connection stays for the next request
    out, closed = raw(port, { post("/other", "x") .. "GET /calc HTTP/1.1\r\nHost: x\r\n\r\n"
      .. post("/calc", hessian.encode_call("add", 2, 2), "Connection: close\r\n") })
    assert.same({ 404, 405, 200 }, statuses(out))
    assert.matches("no service at /other", out, 1, true)
    assert.matches("Hessian requires POST, got GET", out, 1, true)
    -- a body that is not a Hessian call: a fault (ProtocolException)
    out = raw(port, { post("/calc", "not hessian", "Connection: close\r\n") })
    assert.same({ 200 }, statuses(out))
    local ok, f = hessian.decode_reply(out:match("\r\n\r\n(.*)$"))
    assert.is_false(ok)
    assert.equal("ProtocolException", f.code)
    assert.matches("cannot decode the request", f.message, 1, true)
    assert.equal(5, svc:add(2, 3))
  end)

  it("closes slow and stalled clients at the Pyro deadlines, and keeps serving", function()
    -- a request started and not finished within send_deadline (0.3 s)
    local t0 = uv.hrtime()
    local out, closed = raw(port, { "POST /calc HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc" }, 5)
    assert.equal("", out)
    assert.is_true(closed)
    assert.is_true((uv.hrtime() - t0) / 1e9 < 4)
    -- a connection that never completes a request within handshake_timeout (0.5 s)
    out, closed = raw(port, {}, 5)
    assert.equal("", out)
    assert.is_true(closed)
    assert.equal(5, svc:add(2, 3))
  end)

  it("turns Lua errors into faults the Lua proxy reads back", function()
    local ok, e = pcall(svc.add, svc, 1, nil)
    assert.is_false(ok)
    assert.equal("ServiceException", e.code)
    assert.equal("java.lang.RuntimeException", e.exception)
    assert.matches("attempt to perform arithmetic on a nil value", e.message, 1, true)
    ok, e = pcall(svc.mul, svc, 1, 2)
    assert.is_false(ok)
    assert.equal("NoSuchMethodException", e.code)
    assert.same({ 1, "a" }, svc:echo({ 1, "a" }))
  end)

  it("rejects bad configuration naming the property", function()
    local ok, e = pcall(function()
      springrun.HessianServiceExporter { service = {}, service_port = 0 }:after_properties_set()
    end)
    assert.is_false(ok)
    assert.matches("service_path must be a path", tostring(e), 1, true)
    ok, e = pcall(function() springrun.HessianServiceExporter { service_pth = "/x" } end)
    assert.is_false(ok)
    assert.matches("service_path", tostring(e), 1, true)
    ok, e = pcall(function()
      springrun.HessianServiceExporter { service = { f = function() end }, service_path = "/calc",
        service_host = HOST, service_port = port }:after_properties_set()
    end)
    assert.is_false(ok)
    assert.matches("already exported", tostring(e), 1, true)
  end)
end)

describe("HessianServiceExporter over https #net", function()
  local certs = require "helpers.certs"
  local log = require "springrun.log"
  local c, ex, lines, restore_out

  local SERVICE = {
    add = function(_, a, b) return a + b end,
    boom = function() error("kaputt") end,
  }

  setup(function() c = certs.make() end)
  teardown(function() certs.remove(c) end)

  before_each(function()
    lines = {}
    restore_out = log.set_output(function(line) lines[#lines + 1] = line end)
  end)
  after_each(function()
    if ex then ex:destroy() end
    ex = nil
    log.set_output(restore_out)
  end)

  local function export(extra)
    local opts = { service = SERVICE, service_path = "/calc", service_host = HOST, service_port = 0,
      ssl = true, ssl_certfile = c.server_cert, ssl_keyfile = c.server_key }
    for k, v in pairs(extra or {}) do opts[k] = v end
    ex = springrun.HessianServiceExporter(opts)
    ex:after_properties_set()
    return ex:service_url()
  end

  local function logged(pattern)
    for _, l in ipairs(lines) do
      if l:find(pattern, 1, true) then return l end
    end
    return nil
  end

  it("serves the Lua proxy that trusts its CA; wrong CA and plain http fail clearly, it keeps serving", function()
    local url = export()
    assert.matches("^https://127%.0%.0%.1:%d+/calc$", url)
    local svc = springrun.hessian_proxy(url, { ssl_cacerts = c.ca, timeout = 10 })
    assert.equal(5, svc:add(2, 3))
    local ok, e = pcall(svc.boom, svc)
    assert.is_false(ok)
    assert.equal("ServiceException", e.code)
    assert.matches("kaputt", e.message, 1, true)
    -- a client trusting another CA: the handshake fails on both sides
    local stranger = springrun.hessian_proxy(url, { ssl_cacerts = c.other_ca, timeout = 10 })
    ok, e = pcall(stranger.add, stranger, 1, 1)
    assert.is_false(ok)
    assert.matches("certificate", e.message, 1, true)
    -- plain http to the https port: a 400 saying so
    local plain = springrun.hessian_proxy((url:gsub("^https:", "http:")), { timeout = 10 })
    ok, e = pcall(plain.add, plain, 1, 1)
    assert.is_false(ok)
    assert.equal("protocol", e.kind)
    assert.matches("HTTP 400 from the server: this server requires TLS: use an https:// URL", e.message, 1, true)
    local out, closed = raw(ex:bound_port(), { post("/calc", hessian.encode_call("add", 1, 1)) })
    assert.same({ 400 }, statuses(out))
    assert.is_true(closed)
    assert.equal(7, svc:add(3, 4))
    assert.truthy(logged("springrun.remoting.hessian.HessianServiceExporter - WARNING - TLS with "))
    assert.truthy(logged("unknown ca"))
    assert.truthy(logged("springrun.remoting.hessian.HessianServiceExporter - WARNING - HTTP request from "))
    assert.is_nil(logged("springrun.remoting.pyro"), table.concat(lines, "\n"))
  end)

  it("requires a client certificate signed by ssl_cacerts with ssl_require_client_cert", function()
    local url = export({ ssl_cacerts = c.ca, ssl_require_client_cert = true })
    local svc = springrun.hessian_proxy(url, { ssl_cacerts = c.ca, ssl_certfile = c.client_cert,
      ssl_keyfile = c.client_key, timeout = 10 })
    assert.equal(5, svc:add(2, 3))
    local anon = springrun.hessian_proxy(url, { ssl_cacerts = c.ca, timeout = 10 })
    local ok = pcall(anon.add, anon, 1, 1)
    assert.is_false(ok)
    assert.equal(9, svc:add(4, 5))
  end)

  it("checks the TLS properties as PyroServiceExporter does", function()
    local ok, e = pcall(export, { ssl_certfile = false })
    assert.is_false(ok)
    assert.matches("ssl_certfile must be a file name", tostring(e), 1, true)
    ok, e = pcall(function()
      springrun.HessianServiceExporter { service = SERVICE, service_path = "/x", service_port = 0,
        ssl = true }:after_properties_set()
    end)
    assert.is_false(ok)
    assert.matches("HessianServiceExporter '/x': ssl = true needs ssl_certfile", tostring(e), 1, true)
    ok, e = pcall(export, { ssl_certfile = "/nonexistent/server.crt" })
    assert.is_false(ok)
    assert.matches("/nonexistent/server.crt", tostring(e), 1, true)
    -- a second path on the same port must agree on TLS
    export()
    ok, e = pcall(function()
      springrun.HessianServiceExporter { service = SERVICE, service_path = "/other", service_host = HOST,
        service_port = ex:bound_port() }:after_properties_set()
    end)
    assert.is_false(ok)
    assert.matches("TLS settings", tostring(e), 1, true)
  end)

  it("serves Caucho's Java client through a keytool truststore of the test CA", function()
    java.compile()
    local cleanup = proc.cleanups(finally)
    local store = proc.tmppath(cleanup) .. ".p12"
    cleanup(function() os.remove(store) end)
    local _, kok = proc.run(string.format("keytool -importcert -noprompt -alias springrun-ca -file %s"
      .. " -keystore %s -storetype PKCS12 -storepass changeit 2>&1", proc.shquote(c.ca), proc.shquote(store)))
    assert.is_true(kok, "keytool failed")
    local port = proc.free_port()
    local server = proc.spawn({ proc.bin, proc.root .. "/spec/fixtures/hessian_service.lua", HOST,
      tostring(port), c.server_cert, c.server_key })
    cleanup(function() proc.stop(server) end)
    assert(proc.wait_port(HOST, port, 15, server))
    local url = "https://" .. HOST .. ":" .. port .. "/lua"
    local client = proc.spawn({ "java", "-Djavax.net.ssl.trustStore=" .. store,
      "-Djavax.net.ssl.trustStorePassword=changeit", java.OPENS, "-cp", java.CP, "HessianLuaClient", url, "h2" })
    assert.equal(0, proc.wait_exit(client, 60), client:stderr())
    local out = client:stdout()
    assert.not_matches("BAD", out, 1, true)
    assert.truthy(out:find("^add 5\n"), out)
    assert.truthy(out:find("\nbean lua 7 true true x\n", 1, true), out)
    assert.truthy(out:find("\nfault java.lang.IllegalStateException boom\n", 1, true), out)
    -- without the truststore the JDK refuses the certificate; the server serves on
    client = proc.spawn({ "java", java.OPENS, "-cp", java.CP, "HessianLuaClient", url, "h2" })
    assert.is_not.equal(0, proc.wait_exit(client, 60))
    assert.matches("PKIX path building failed", client:stderr(), 1, true)
    local svc = springrun.hessian_proxy(url, { ssl_cacerts = c.ca, timeout = 10 })
    assert.equal(5, svc:add(2, 3))
  end)
end)

describe("HessianServiceExporter log lines #net", function()
  local log = require "springrun.log"

  it("logs failing calls and its listener's lines under springrun.remoting.hessian.HessianServiceExporter", function()
    -- max_connections at this process's open-files limit cannot be reached
    -- (the daemon keeps 32 descriptors for itself), which the daemon says;
    -- with no limit (ulimit -n unlimited) there is nothing to say
    local nofile = tonumber(proc.run("sh -c 'ulimit -n'"):match("^%d+"))
    local lines = {}
    local restore = log.set_output(function(line) lines[#lines + 1] = line end)
    local ex = springrun.HessianServiceExporter {
      service = { boom = function() error("kaputt") end, add = function(_, a, b) return a + b end },
      service_path = "/calc", service_host = HOST, service_port = 0, max_connections = nofile or 1000000,
    }
    local ok, err = pcall(function()
      ex:after_properties_set()
      local svc = springrun.hessian_proxy(ex:service_url(), { timeout = 10 })
      assert.is_false(pcall(svc.boom, svc))
      assert.equal(3, svc:add(1, 2))
    end)
    ex:destroy()
    log.set_output(restore)
    assert(ok, err)
    local text = table.concat(lines, "\n")
    assert.matches("springrun%.remoting%.hessian%.HessianServiceExporter %- WARNING %- [^\n]*call /calc%.boom from "
      .. "127%.0%.0%.1:%d+ failed: RuntimeError: [^\n]*kaputt", text)
    if nofile then
      -- the daemon's warning about the listener, from the daemon thread
      assert.matches("springrun%.remoting%.hessian%.HessianServiceExporter %- WARNING %- listening on 127%.0%.0%.1:%d+: "
        .. "max_connections " .. nofile .. " cannot be reached", text)
    else
      assert.not_matches("cannot be reached", text, 1, true)
    end
    assert.not_matches("springrun.remoting.pyro", text, 1, true)
  end)

  it("warns about a non-loopback address without TLS, as the Pyro exporter does", function()
    local c = require("helpers.certs").make()
    local lines = {}
    local restore = log.set_output(function(line) lines[#lines + 1] = line end)
    local svc = { add = function(_, a, b) return a + b end }
    local ok, err = pcall(function()
      local quiet = springrun.HessianServiceExporter { service = svc, service_path = "/quiet",
        service_host = HOST, service_port = 0 }
      quiet:after_properties_set()
      quiet:destroy()
      local open = springrun.HessianServiceExporter { service = svc, service_path = "/open",
        service_host = "0.0.0.0", service_port = 0 }
      open:after_properties_set()
      local port = open.service_port
      open:destroy()
      local safe = springrun.HessianServiceExporter { service = svc, service_path = "/safe",
        service_host = "0.0.0.0", service_port = 0, ssl = true, ssl_certfile = c.server_cert,
        ssl_keyfile = c.server_key }
      safe:after_properties_set()
      safe:destroy()
      return port
    end)
    log.set_output(restore)
    require("helpers.certs").remove(c)
    assert(ok, err)
    local port = err
    local warned = {}
    for _, l in ipairs(lines) do
      if l:find("without TLS", 1, true) then warned[#warned + 1] = l end
    end
    assert.equal(1, #warned, table.concat(lines, "\n"))
    assert.truthy(warned[1]:find("springrun.remoting.hessian.HessianServiceExporter - WARNING - /open is exported on 0.0.0.0:"
      .. port .. " without TLS", 1, true), warned[1])
  end)
end)

describe("README: Hessian between Lua and Java #interop", function()
  local readme = require "helpers.readme"

  -- The shell lines of a README block, each as argv with `repl` applied
  -- (plain text -> value), a trailing " &" dropped, relative paths of the
  -- checkout made absolute.
  local function shell_lines(heading, repl)
    local out = {}
    for line in readme.block(heading, "sh"):gmatch("[^\n]+") do
      for k, v in pairs(repl) do line = line:gsub(k:gsub("%p", "%%%0"), (v:gsub("%%", "%%%%"))) end
      line = line:gsub("%s*&$", "")
      local argv = {}
      for w in line:gmatch("%S+") do
        -- bin/springrun is the CLI under test (bin/springrun-san under
        -- make test SANITIZE=1, where bin/springrun is not built)
        if w == "bin/springrun" then
          w = proc.bin
        elseif w:match("^spec/") then
          w = proc.root .. "/" .. w
        end
        argv[#argv + 1] = w
      end
      out[#out + 1] = argv
    end
    return out
  end

  it("runs the commands and the Lua code of both sections", function()
    local cleanup = proc.cleanups(finally)
    local dir = assert(io.popen("mktemp -d /tmp/springrun-readme-java.XXXXXX")):read("l")
    cleanup(function() os.execute("rm -rf " .. proc.shquote(dir)) end)
    local jport, sport = proc.free_port(), proc.free_port()
    -- Lua -> Java
    local lines = shell_lines("### Calling a Java service from Lua (`HessianProxyFactory`)",
      { ["/tmp/hessian-classes"] = dir, ["8080"] = tostring(jport) })
    assert.equal(2, #lines)
    local javac = proc.spawn(lines[1])
    assert.equal(0, proc.wait_exit(javac, 120), javac:stderr())
    local server = proc.spawn(lines[2])
    cleanup(function() proc.stop(server) end)
    assert(proc.wait_port(HOST, jport, 30, server))
    local code = readme.block("### Calling a Java service from Lua (`HessianProxyFactory`)", "lua")
    local st, out, err = readme.run_lua(code, { ["8080"] = jport })
    assert.equal(0, st, err)
    assert.equal("5\nHessianTestServer$Bean\tjava\ttrue\n"
      .. "false\tjava.lang.IllegalStateException\tServiceException\tboom\n", out)
    -- Java -> Lua
    lines = shell_lines("### Serving Lua to Java (`HessianServiceExporter`)",
      { ["/tmp/hessian-classes"] = dir, ["8081"] = tostring(sport) })
    assert.equal(2, #lines)
    local lua_server = proc.spawn(lines[1])
    cleanup(function() proc.stop(lua_server) end)
    assert(proc.wait_port(HOST, sport, 15, lua_server))
    local client = proc.spawn(lines[2])
    assert.equal(0, proc.wait_exit(client, 60), client:stderr())
    assert.truthy(client:stdout():find("add 5\n", 1, true))
    assert.truthy(client:stdout():find("\nbean lua 7 true true x\n", 1, true))
    assert.not_matches("BAD", client:stdout(), 1, true)
  end)

  it("runs the Lua code and the commands of Hessian over https", function()
    local certs = require "helpers.certs"
    local cleanup = proc.cleanups(finally)
    local c = certs.make()
    cleanup(function() certs.remove(c) end)
    java.compile()
    local heading = "### Hessian over https"
    local files = { ["server.crt"] = c.server_cert, ["server.key"] = c.server_key, ["ca.crt"] = c.ca }
    local st, out, err = readme.run_lua(readme.block(heading, "lua"), files)
    assert.equal(0, st, err)
    assert.equal("true\t5\n", out)
    local port = proc.free_port()
    local repl = { ["/tmp/truststore.p12"] = c.dir .. "/truststore.p12", ["8443"] = tostring(port),
      ["/tmp/hessian-classes"] = java.CP:match("^[^:]+") }
    for k, v in pairs(files) do repl[k] = v end
    local lines = shell_lines(heading, repl)
    assert.equal(3, #lines)
    local keytool = proc.spawn(lines[1])
    assert.equal(0, proc.wait_exit(keytool, 60), keytool:stderr())
    local server = proc.spawn(lines[2])
    cleanup(function() proc.stop(server) end)
    assert(proc.wait_port(HOST, port, 15, server))
    local client = proc.spawn(lines[3])
    assert.equal(0, proc.wait_exit(client, 60), client:stderr())
    assert.truthy(client:stdout():find("add 5\n", 1, true))
    assert.not_matches("BAD", client:stdout(), 1, true)
  end)
end)
