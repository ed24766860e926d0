-- TLS for the Pyro transport (src/tls.c and its users: the daemon thread,
-- the blocking C client, the luv task path), against real peers: a springrun
-- server process (spec/fixtures/secure_server.lua), a Python Pyro4 client
-- (spec/fixtures/secure_client.py, Pyro4's SSL settings) and a Python Pyro4
-- TLS daemon (spec/fixtures/secure_pyro.py). Certificates are made at run
-- time with the openssl command (spec/helpers/certs.lua).
local springrun = require "springrun"
local core = require "springrun.core"
local errors = require "springrun.errors"
local log = require "springrun.log"
local certs_mod = require "helpers.certs"
local client = require "helpers.client"
local proc = require "helpers.proc"
local secure = require "helpers.secure"

local certs

local url, start_sr, start_py, proxy, call_error =
  secure.url, secure.start_sr, secure.start_py, secure.proxy, secure.call_error
local py_client = secure.py_client -- (port, env, serializer, handshake)

-- secure_server.lua's environment for TLS with the test server certificate.
local function tls_env(extra)
  return secure.merged({ SR_SSL_CERT = certs.server_cert, SR_SSL_KEY = certs.server_key }, extra)
end

-- secure_pyro.py's Pyro4 settings for TLS with the test server certificate.
local function py_tls_server_env(extra)
  return secure.merged({ PYRO_SSL = "true", PYRO_SSL_SERVERCERT = certs.server_cert,
    PYRO_SSL_SERVERKEY = certs.server_key }, extra)
end

-- A proxy to port trusting the test CA (extra: more properties), destroyed
-- by cleanup.
local function tls_proxy(cleanup, port, extra)
  local p = proxy(port, secure.merged({ ssl = true, ssl_cacerts = certs.ca }, extra))
  cleanup(function() p:destroy() end)
  return p
end

-- Drives two in-memory sessions until neither has bytes to send.
local function pump(a, b)
  for _ = 1, 20 do
    local ab, ba = a:take(), b:take()
    if #ab == 0 and #ba == 0 then return end
    if #ab > 0 then
      local _, emsg = b:feed(ab)
      if emsg then return emsg end
    end
    if #ba > 0 then
      local _, emsg = a:feed(ba)
      if emsg then return emsg end
    end
  end
end

describe("springrun.tls #unit #net #interop", function()
  setup(function() certs = certs_mod.make() end)
  teardown(function() certs_mod.remove(certs) end)

  it("runs a handshake between two in-memory sessions and moves plaintext both ways", function()
    local sctx = assert(core.tls_context({ server = true, certfile = certs.server_cert,
      keyfile = certs.server_key }))
    local cctx = assert(core.tls_context({ cafile = certs.ca }))
    local s, c = sctx:session(), cctx:session("127.0.0.1")
    assert.is_false(c:handshake())
    assert.is_nil(pump(c, s))
    assert.is_true(c:established())
    assert.is_true(s:established())
    assert(c:write("PYRO request"))
    assert.are.equal("PYRO request", s:feed(c:take()))
    assert(s:write("PYRO reply"))
    assert.are.equal("PYRO reply", c:feed(s:take()))
    -- close_notify ends the session for the peer, after what came before
    assert(s:write("last"))
    s:close_notify()
    local plain, emsg, code = c:feed(s:take())
    assert.are.equal("last", plain)
    assert.are.equal("SR_ECLOSED", code)
    assert.truthy(emsg)
  end)

  it("refuses a server signed by a CA it does not trust, or not naming the host", function()
    local sctx = assert(core.tls_context({ server = true, certfile = certs.server_cert,
      keyfile = certs.server_key }))
    local other = assert(core.tls_context({ cafile = certs.other_ca }))
    local c = other:session("127.0.0.1")
    c:handshake()
    local emsg = pump(c, sctx:session())
    assert.truthy(emsg and emsg:find("TLS handshake failed: certificate verify failed", 1, true), emsg)
    assert.truthy(emsg:find("unable to get local issuer certificate", 1, true), emsg)
    local good = assert(core.tls_context({ cafile = certs.ca }))
    c = good:session("elsewhere.example")
    c:handshake()
    emsg = pump(c, sctx:session())
    assert.truthy(emsg and emsg:find("hostname mismatch", 1, true), emsg)
    c = good:session("localhost") -- the certificate names localhost too
    c:handshake()
    assert.is_nil(pump(c, sctx:session()))
    assert.is_true(c:established())
  end)

  it("reports missing files and impossible settings when a context is made", function()
    local ok, msg, code = core.tls_context({ server = true })
    assert.is_nil(ok)
    assert.are.equal("TLS server needs a certificate file", msg)
    assert.are.equal("SR_EINVAL", code)
    ok, msg = core.tls_context({ server = true, certfile = "/nonexistent/server.crt" })
    assert.are.equal("certificate file not found: /nonexistent/server.crt", msg)
    ok, msg = core.tls_context({ server = true, certfile = certs.server_cert, keyfile = certs.other_ca_key })
    assert.truthy(msg:find("private key", 1, true), msg)
    ok, msg = core.tls_context({ server = true, certfile = certs.server_cert, keyfile = certs.server_key,
      verify = true })
    assert.are.equal("requiring client certificates needs a CA file to verify them", msg)
    -- an encrypted key fails (never a password prompt on the terminal)
    local enc = certs.dir .. "/encrypted.key"
    assert(os.execute(string.format("openssl rsa -in %s -aes256 -passout pass:x -out %s 2>/dev/null",
      proc.shquote(certs.server_key), proc.shquote(enc))))
    ok, msg = core.tls_context({ server = true, certfile = certs.server_cert, keyfile = enc })
    assert.is_nil(ok)
    assert.truthy(msg:find("cannot load private key " .. enc .. " (encrypted keys are not supported)", 1, true), msg)
    -- the same, through exporter and proxy properties (configuration errors)
    local ex = springrun.PyroServiceExporter { service_name = "x", service = { f = function() end },
      service_port = 0, ssl = true }
    local e = client.error_of(ex.after_properties_set, ex)
    assert.truthy(tostring(e):find("ssl = true needs ssl_certfile", 1, true), tostring(e))
    ex = springrun.PyroServiceExporter { service_name = "x", service = { f = function() end },
      service_port = 0, ssl = true, ssl_certfile = "/nope.crt" }
    e = client.error_of(ex.after_properties_set, ex)
    assert.truthy(tostring(e):find("ssl: certificate file not found: /nope.crt", 1, true), tostring(e))
    ex = springrun.PyroServiceExporter { service_name = "x", service = { f = function() end },
      service_port = 0, ssl_cacerts = certs.ca }
    e = client.error_of(ex.after_properties_set, ex)
    assert.truthy(tostring(e):find("ssl_cacerts is set but ssl is not true", 1, true), tostring(e))
    e = client.error_of(springrun.proxy, "PYRO:x@127.0.0.1:1", { ssl = true, ssl_cacerts = "/nope/ca.crt" })
    assert.is_true(errors.is(e, "config"))
    assert.truthy(e.message:find("CA file not found: /nope/ca.crt", 1, true), e.message)
    e = client.error_of(springrun.proxy, "PYRO:x@127.0.0.1:1", { ssl = "yes" })
    assert.truthy(e.message:find("PyroProxyFactory.ssl: expected true or false", 1, true), e.message)
  end)

  it("serves a Python Pyro4 client over TLS with json and serpent", function()
    local cleanup = proc.cleanups(finally)
    local _, port = start_sr(cleanup, tls_env())
    for _, ser in ipairs({ "json", "serpent" }) do
      local r = py_client(port, { PYRO_SSL = "true", PYRO_SSL_CACERTS = certs.ca }, ser)
      assert.is_true(r.ok, r.error)
      assert.are.equal("ping", r.echo)
      assert.are.equal("hello py", r.hello)
    end
  end)

  it("a Python client that does not trust the server's CA fails; the server keeps serving", function()
    local cleanup = proc.cleanups(finally)
    local _, port = start_sr(cleanup, tls_env())
    local r = py_client(port, { PYRO_SSL = "true", PYRO_SSL_CACERTS = certs.other_ca })
    assert.is_false(r.ok)
    assert.truthy(r.error:find("CERTIFICATE_VERIFY_FAILED", 1, true), r.error)
    r = py_client(port, { PYRO_SSL = "true", PYRO_SSL_CACERTS = certs.ca })
    assert.is_true(r.ok, r.error)
  end)

  it("calls a springrun TLS server from a springrun proxy, blocking and in a task", function()
    local cleanup = proc.cleanups(finally)
    local _, port = start_sr(cleanup, tls_env())
    local p = tls_proxy(cleanup, port)
    assert.are.equal("a", p:echo("a"))
    assert.are.same({ 1, { k = "v" } }, p:echo({ 1, { k = "v" } }))
    local big = string.rep("0123456789", 100000) -- many TLS records each way
    assert.are.equal(big, p:echo(big))
    assert.are.equal("hello lua", p:hello("lua"))
    local q = tls_proxy(cleanup, port, { ssl_servername = "localhost" })
    local ok, v = client.in_task(function()
      local a = q:echo("in a task")
      return a .. "|" .. q:echo(big):sub(1, 10)
    end)
    assert.is_true(ok, tostring(v))
    assert.are.equal("in a task|0123456789", v)
  end)

  it("a proxy refuses a server signed by an unknown CA or not named as expected", function()
    local cleanup = proc.cleanups(finally)
    local _, port = start_sr(cleanup, tls_env())
    for _, task in ipairs({ false, true }) do
      local e = call_error(proxy(port, { ssl = true, ssl_cacerts = certs.other_ca }), task)
      assert.is_true(errors.is(e, "connect"), tostring(e))
      assert.truthy(e.message:find("TLS handshake failed: certificate verify failed", 1, true), e.message)
      assert.truthy(e.message:find("unable to get local issuer certificate", 1, true), e.message)
      e = call_error(proxy(port, { ssl = true, ssl_cacerts = certs.ca, ssl_servername = "elsewhere.example" }), task)
      assert.is_true(errors.is(e, "connect"), tostring(e))
      assert.truthy(e.message:find("hostname mismatch", 1, true), e.message)
    end
    -- verification off (tests only) connects to anything
    assert.are.equal("z", proxy(port, { ssl = true, ssl_verify = false }):echo("z"))
  end)

  it("a TLS proxy against a plain server, and a plain proxy against a TLS server, fail clearly", function()
    local cleanup = proc.cleanups(finally)
    local plain_srv, plain_port = start_sr(cleanup, {})
    local tls_srv, tls_port = start_sr(cleanup, tls_env())
    for _, task in ipairs({ false, true }) do
      local e = call_error(proxy(plain_port, { ssl = true, ssl_cacerts = certs.ca }), task)
      assert.is_true(errors.is(e, "connect"), tostring(e))
      assert.truthy(e.message:find("TLS handshake failed: wrong version number (does the peer use TLS?)", 1, true),
        e.message)
      e = call_error(proxy(tls_port), task)
      assert.is_true(errors.is(e, "rejected"), tostring(e))
      assert.are.equal(string.format("connection to %s rejected: this daemon requires TLS (SSL)", url(tls_port)),
        e.message)
    end
    local r = py_client(tls_port, {})
    assert.are.equal(string.format(
      "CommunicationError: connection to ('127.0.0.1', %d) rejected: this daemon requires TLS (SSL)", tls_port), r.error)
    assert.truthy(tls_srv:stderr():find("WARNING %- connection from 127%.0%.0%.1:%d+ on 127%.0%.0%.1:%d+ does not use TLS"),
      tls_srv:stderr())

    -- both still serve
    assert.are.equal(1, proxy(plain_port):echo(1))
    assert.are.equal(2, proxy(tls_port, { ssl = true, ssl_cacerts = certs.ca }):echo(2))
    assert.is_nil(plain_srv:status())
  end)

  it("closes a connection whose TLS handshake stalls, after send_deadline", function()
    local uv = require "luv"
    local cleanup = proc.cleanups(finally)
    local srv, port = start_sr(cleanup, tls_env({ SR_SEND_DEADLINE = "0.3" }))
    local tcp = uv.new_tcp()
    cleanup(function() if not tcp:is_closing() then tcp:close() end end)
    local connected, closed_at
    tcp:connect("127.0.0.1", port, function(err) connected = err or true end)
    while connected == nil do uv.run("once") end
    assert.is_true(connected)
    local t0 = client.now()
    -- the first bytes of a TLS record header (a ClientHello that never comes)
    tcp:write(string.char(0x16, 0x03, 0x01, 0x02, 0x00))
    tcp:read_start(function(err, data) if err or data == nil then closed_at = client.now() end end)
    while closed_at == nil and client.now() - t0 < 10 do proc.poll_step(10) end
    assert.truthy(closed_at, "the server did not close the stalled handshake")
    assert.is_true(closed_at - t0 >= 0.25, tostring(closed_at - t0))
    -- the daemon thread closes the connection and hands its log line to the
    -- Lua thread, which writes it a moment later: wait for it
    for _ = 1, 500 do
      if srv:stderr():find("send_deadline", 1, true) then break end
      proc.poll_step(10)
    end
    assert.truthy(srv:stderr():find("send_deadline", 1, true), srv:stderr())
    -- a real client is still served
    assert.are.equal("ok", proxy(port, { ssl = true, ssl_cacerts = certs.ca }):echo("ok"))
  end)

  it("calls a Python Pyro4 TLS daemon from a springrun proxy, blocking and in a task", function()
    local cleanup = proc.cleanups(finally)
    local _, port = start_py(cleanup, py_tls_server_env())
    local p = tls_proxy(cleanup, port)
    assert.are.equal("hello lua", p:hello("lua"))
    assert.are.equal("again", p:echo("again"))
    local q = tls_proxy(cleanup, port, { serializer = "serpent" })
    local ok, v = client.in_task(function() return q:hello("task") .. "|" .. q:echo("2") end)
    assert.is_true(ok, tostring(v))
    assert.are.equal("hello task|2", v)
    local e = call_error(proxy(port, { ssl = true, ssl_cacerts = certs.other_ca }))
    assert.truthy(e.message:find("certificate verify failed", 1, true), e.message)
  end)

  it("mutual TLS: a springrun server requiring client certificates", function()
    local cleanup = proc.cleanups(finally)
    local srv, port = start_sr(cleanup, tls_env({ SR_SSL_CA = certs.ca, SR_SSL_REQUIRE = "1" }))
    -- Python, with and without a client certificate
    local base = { PYRO_SSL = "true", PYRO_SSL_CACERTS = certs.ca }
    local with = { PYRO_SSL_CLIENTCERT = certs.client_cert, PYRO_SSL_CLIENTKEY = certs.client_key }
    for k, v in pairs(base) do with[k] = v end
    local r = py_client(port, with)
    assert.is_true(r.ok, r.error)
    assert.are.equal("ping", r.echo)
    r = py_client(port, base)
    assert.is_false(r.ok)
    -- springrun, both paths
    local p = tls_proxy(cleanup, port, { ssl_certfile = certs.client_cert,
      ssl_keyfile = certs.client_key })
    assert.are.equal("mtls", p:echo("mtls"))
    local ok, v = client.in_task(function() return p:echo("mtls task") end)
    assert.is_true(ok, tostring(v))
    assert.are.equal("mtls task", v)
    for _, task in ipairs({ false, true }) do
      local e = call_error(proxy(port, { ssl = true, ssl_cacerts = certs.ca }), task)
      assert.is_true(errors.is(e, "communication"), tostring(e))
      assert.truthy(e.message:find("certificate required", 1, true), e.message)
      e = call_error(proxy(port, { ssl = true, ssl_cacerts = certs.ca,
        ssl_certfile = certs.other_client_cert, ssl_keyfile = certs.other_client_key }), task)
      assert.is_true(errors.is(e, "communication"), tostring(e))
      assert.truthy(e.message:find("unknown ca", 1, true), e.message)
    end
    local err = srv:stderr()
    assert.truthy(err:find("peer did not return a certificate", 1, true), err)
    assert.truthy(err:find("certificate verify failed", 1, true), err)
    assert.are.equal("still", p:echo("still"))
  end)

  it("mutual TLS: a Python Pyro4 daemon requiring client certificates", function()
    local cleanup = proc.cleanups(finally)
    local _, port = start_py(cleanup, py_tls_server_env({ PYRO_SSL_REQUIRECLIENTCERT = "true",
      PYRO_SSL_CACERTS = certs.ca }))
    local p = tls_proxy(cleanup, port, { ssl_certfile = certs.client_cert,
      ssl_keyfile = certs.client_key })
    assert.are.equal("hello mtls", p:hello("mtls"))
    local ok, v = client.in_task(function() return p:echo(7) end)
    assert.is_true(ok, tostring(v))
    assert.are.equal(7, v)
    for _, task in ipairs({ false, true }) do
      local e = call_error(proxy(port, { ssl = true, ssl_cacerts = certs.ca }), task)
      assert.is_true(errors.is(e, "communication"), tostring(e))
      assert.truthy(e.message:find("certificate required", 1, true), e.message)
    end
  end)

  it("exports on localhost unless told otherwise, and warns about a non-loopback address without TLS", function()
    local lines = {}
    local prev = log.set_output(function(line) lines[#lines + 1] = line end)
    finally(function() log.set_output(prev) end)
    local svc = { f = function() return 1 end }
    local ex = springrun.PyroServiceExporter { service_name = "local.default", service = svc, service_port = 0 }
    ex:after_properties_set()
    local port = ex.service_port
    local found
    for _, a in ipairs(require("springrun.exporter").addresses()) do
      if a == "localhost:" .. port then found = true end
    end
    ex:destroy()
    assert.is_true(found)
    assert.are.equal("localhost", springrun.PyroServiceExporter.service_host)
    for _, l in ipairs(lines) do assert.is_nil(l:find("without TLS", 1, true), l) end
    local wide = springrun.PyroServiceExporter { service_name = "wide.open", service = svc,
      service_host = "0.0.0.0", service_port = 0 }
    wide:after_properties_set()
    local wport = wide.service_port
    wide:destroy()
    local warned
    for _, l in ipairs(lines) do
      if l:find("WARNING - wide.open is exported on 0.0.0.0:" .. wport .. " without TLS", 1, true) then warned = true end
    end
    assert.is_true(warned, table.concat(lines, "\n"))
    local n = #lines
    local safe = springrun.PyroServiceExporter { service_name = "wide.tls", service = svc,
      service_host = "0.0.0.0", service_port = 0, ssl = true, ssl_certfile = certs.server_cert,
      ssl_keyfile = certs.server_key }
    safe:after_properties_set()
    safe:destroy()
    for i = n + 1, #lines do assert.is_nil(lines[i]:find("without TLS", 1, true), lines[i]) end
  end)
end)
