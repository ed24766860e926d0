-- Connection authentication with Pyro4's handshake: an exporter's
-- handshake_secret (checked in C on the daemon thread) against a real Python
-- Pyro4 client setting proxy._pyroHandshake and against springrun proxies
-- (handshake property); a springrun proxy against a Python daemon that
-- overrides validateHandshake (spec/fixtures/secure_pyro.py).
local springrun = require "springrun"
local errors = require "springrun.errors"
local client = require "helpers.client"
local proc = require "helpers.proc"
local secure = require "helpers.secure"

local REFUSED = "authentication failed: wrong or missing handshake secret"

local url, start_sr, proxy, call_error = secure.url, secure.start_sr, secure.proxy, secure.call_error
local py_client = secure.py_client -- (port, env, serializer, handshake)

describe("springrun.auth #unit #net #interop", function()
  it("finds the handshake string in JSON and serpent CONNECT payloads (what the daemon compares)", function()
    local core = require "springrun.core"
    local HDR = "# serpent utf-8 python3.2\n"
    local cases = {
      { 2, '{"handshake": "hello", "object": "x"}', "hello" },
      { 2, '{"object": "x", "handshake": "s\\u00e9cr\\"et"}', 's\u{e9}cr"et' },
      { 2, '{"handshake": ""}', "" },
      { 2, '{"handshake": {"user": "ann"}}', false },
      { 2, '{"handshake": 7}', false },
      { 1, HDR .. "{'handshake':'hello','object':'x'}", "hello" },
      { 1, HDR .. "{'object':'x','handshake':'a\\'b'}", "a'b" },
      { 1, HDR .. "{'handshake':(1,2)}", false },
      -- a duplicate key: the last one wins, as Python's dict (and Pyro4) sees it
      { 2, '{"handshake": "first", "handshake": "last"}', "last" },
      { 2, '{"handshake": "first", "handshake": 5}', false },
      { 1, HDR .. "{'handshake':'first','handshake':'last'}", "last" },
    }
    for _, c in ipairs(cases) do
      assert.are.equal(c[3], core.handshake_value(c[1], c[2]), c[2])
    end
    local v, msg, code = core.handshake_value(2, '{"object": "x"}')
    assert.is_nil(v)
    assert.are.equal("SR_ENOTFOUND", code)
    assert.are.equal('the handshake has no "handshake" key', msg)
    v, msg, code = core.handshake_value(2, '{"handshake": "abc')
    assert.is_nil(v)
    assert.are.equal("SR_ESYNTAX", code)
    assert.truthy(msg:find("offset", 1, true), msg)
    v, msg, code = core.handshake_value(1, HDR .. "['handshake', 'x']")
    assert.is_nil(v)
    assert.are.equal("serpent: handshake payload is not a dict at offset 0", msg)
  end)

  it("replays the handshake fuzz corpus without crashing or raising", function()
    local core = require "springrun.core"
    local p = assert(io.popen("find spec/fixtures/fuzz/handshake -type f | sort"))
    local n = 0
    for path in p:lines() do
      local f = assert(io.open(path, "rb"))
      local data = f:read("a")
      f:close()
      if #data > 0 then
        local ser = (data:byte(1) & 1) == 1 and 2 or 1
        local ok, v, msg = pcall(core.handshake_value, ser, data:sub(2))
        assert.is_true(ok, path .. ": " .. tostring(v))
        assert.is_true(type(v) == "string" or v == false or (v == nil and type(msg) == "string"), path)
        n = n + 1
      end
    end
    p:close()
    assert.is_true(n >= 9, "corpus files: " .. n)
  end)

  it("a Python client with the exporter's secret as _pyroHandshake is served (json, serpent)", function()
    local cleanup = proc.cleanups(finally)
    local _, port = start_sr(cleanup, { SR_SECRET = "open sesame" })
    for _, ser in ipairs({ "json", "serpent" }) do
      local r = py_client(port, nil, ser, "open sesame")
      assert.is_true(r.ok, r.error)
      assert.are.equal("ping", r.echo)
      assert.are.equal("hello py", r.hello)
    end
  end)

  it("a Python client with a wrong or no handshake gets CONNECTFAIL; the daemon logs it and keeps serving", function()
    local cleanup = proc.cleanups(finally)
    local srv, port = start_sr(cleanup, { SR_SECRET = "open sesame" })
    for _, ser in ipairs({ "json", "serpent" }) do
      for _, hs in ipairs({ "open sesame!", "", false }) do
        local r = py_client(port, nil, ser, hs or nil)
        assert.is_false(r.ok)
        assert.are.equal(string.format("CommunicationError: connection to ('127.0.0.1', %d) rejected: %s",
          port, REFUSED), r.error)
      end
    end
    -- the daemon thread refuses and hands each log line to the Lua thread,
    -- which writes it a moment later: wait (5 s at most) for the sixth
    local pat = "WARNING %- handshake from 127%.0%.0%.1:%d+ on 127%.0%.0%.1:%d+ refused: "
      .. REFUSED:gsub("%p", "%%%0")
    local n
    for _ = 1, 500 do
      _, n = srv:stderr():gsub(pat, "")
      if n >= 6 then break end
      proc.poll_step(10)
    end
    assert.are.equal(6, n, srv:stderr())
    assert.is_true(py_client(port, nil, "json", "open sesame").ok)
  end)

  it("a springrun proxy sends its handshake property, blocking and in a task", function()
    local cleanup = proc.cleanups(finally)
    local _, port = start_sr(cleanup, { SR_SECRET = "s3cret" })
    local p = proxy(port, { handshake = "s3cret" })
    cleanup(function() p:destroy() end)
    assert.are.equal("a", p:echo("a"))
    local ok, v = client.in_task(function() return p:hello("task") end)
    assert.is_true(ok, tostring(v))
    assert.are.equal("hello task", v)
    for _, task in ipairs({ false, true }) do
      for _, hs in ipairs({ "S3CRET", 42, false }) do
        local props = {}
        if hs then props.handshake = hs end
        local e = call_error(proxy(port, props), task)
        assert.is_true(errors.is(e, "rejected"), tostring(e))
        assert.are.equal(string.format("connection to %s rejected: %s", url(port), REFUSED), e.message)
      end
    end
    assert.are.equal("still", p:echo("still"))
  end)

  it("a secret and TLS together: Python and springrun clients", function()
    local certs_mod = require "helpers.certs"
    local certs = certs_mod.make()
    local cleanup = proc.cleanups(finally)
    cleanup(function() certs_mod.remove(certs) end)
    local _, port = start_sr(cleanup, { SR_SECRET = "both", SR_SSL_CERT = certs.server_cert,
      SR_SSL_KEY = certs.server_key })
    local tls = { PYRO_SSL = "true", PYRO_SSL_CACERTS = certs.ca }
    assert.is_true(py_client(port, tls, "serpent", "both").ok)
    local r = py_client(port, tls, "json", "neither")
    assert.truthy(r.error:find(REFUSED, 1, true), r.error)
    local p = proxy(port, { ssl = true, ssl_cacerts = certs.ca, handshake = "both" })
    cleanup(function() p:destroy() end)
    assert.are.equal(3, p:echo(3))
    local e = call_error(proxy(port, { ssl = true, ssl_cacerts = certs.ca, handshake = "nope" }), true)
    assert.is_true(errors.is(e, "rejected"), tostring(e))
  end)

  it("a springrun proxy passes a Python daemon's validateHandshake (a string or any value)", function()
    local cleanup = proc.cleanups(finally)
    local _, port = secure.start_py(cleanup, nil, { '"letmein"' })
    local _, py_port = secure.start_py(cleanup, nil, { '{"user": "ann", "token": 7}' })
    local p = proxy(port, { handshake = "letmein" })
    cleanup(function() p:destroy() end)
    assert.are.equal("hello lua", p:hello("lua"))
    local s = proxy(port, { handshake = "letmein", serializer = "serpent" })
    local ok, v = client.in_task(function() return s:echo("task") end)
    assert.is_true(ok, tostring(v))
    assert.are.equal("task", v)
    for _, task in ipairs({ false, true }) do
      local e = call_error(proxy(port, { handshake = "nope" }), task)
      assert.is_true(errors.is(e, "rejected"), tostring(e))
      assert.are.equal(string.format("connection to %s rejected: bad handshake: 'nope'", url(port)), e.message)
      e = call_error(proxy(port), task) -- Pyro4's default "hello"
      assert.are.equal(string.format("connection to %s rejected: bad handshake: 'hello'", url(port)), e.message)
    end
    local m = proxy(py_port, { handshake = { user = "ann", token = 7 } })
    assert.are.equal("hello map", m:hello("map"))
    local e = call_error(proxy(py_port, { handshake = { user = "ann", token = 8 } }))
    assert.truthy(e.message:find("bad handshake: {", 1, true), e.message)
  end)

  it("checks the secret property and refuses sharing a daemon with other security settings", function()
    local svc = { f = function() return 1 end }
    local ex = springrun.PyroServiceExporter { service_name = "a.x", service = svc, service_port = 0,
      handshake_secret = 42 }
    local e = client.error_of(ex.after_properties_set, ex)
    assert.truthy(tostring(e):find("handshake_secret must be a non-empty string, got number", 1, true), tostring(e))
    local first = springrun.PyroServiceExporter { service_name = "a.one", service = svc, service_port = 0,
      handshake_secret = "k1" }
    first:after_properties_set()
    finally(function() first:destroy() end)
    local second = springrun.PyroServiceExporter { service_name = "a.two", service = svc,
      service_port = first.service_port, handshake_secret = "k2" }
    e = client.error_of(second.after_properties_set, second)
    assert.truthy(tostring(e):find("security settings", 1, true), tostring(e))
    assert.is_nil(tostring(e):find("k1", 1, true)) -- secrets are never shown
    local third = springrun.PyroServiceExporter { service_name = "a.three", service = svc,
      service_port = first.service_port, handshake_secret = "k1" }
    third:after_properties_set()
    third:destroy()
    e = client.error_of(springrun.proxy, "PYRO:x@127.0.0.1:1", { handshake = function() end })
    assert.truthy(e.message:find("PyroProxyFactory.handshake: expected a value that can be serialized", 1, true), e.message)
  end)
end)
