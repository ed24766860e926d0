-- Interop with real Python Pyro4 4.82 (Debian python3-pyro4), both ways:
--   * a Python Pyro4 client (spec/fixtures/interop_client.py, JSON and
--     Pyro4's default serpent) calls a Lua service exported by a springrun
--     process (spec/fixtures/interop_server.lua + interop_service.lua), and
--     gets what a Pyro4 daemon (spec/fixtures/interop_service.py) would give;
--   * a springrun proxy calls a Python Pyro4 daemon's object;
--   * PYRONAME through a real Pyro4 name server and through `springrun ns`.
-- Fails (never skips) when /usr/bin/python3 or Pyro4 is missing.
local springrun = require "springrun"
local errors = require "springrun.errors"
local json = require "springrun.json"
local naming = require "springrun.naming"
local proc = require "helpers.proc"
local pyro4 = require "helpers.pyro4"

local function url_of(name, port) return string.format("PYRO:%s@127.0.0.1:%d", name, port) end

local client = require "helpers.client"
local err_of = client.error_of

-- A springrun proxy to url (timeout 10 s), destroyed by cleanup.
local function proxy_of(cleanup, url)
  local svc = springrun.proxy(url, { timeout = 10 })
  cleanup(function() svc:destroy() end)
  return svc
end

-- the line of Service:fail's error() in the fixture (for the traceback)
local FAIL_LINE = (function()
  local n = 0
  for line in io.lines(pyro4.fixtures .. "/interop_service.lua") do
    n = n + 1
    if line:find("function Service:fail(message)", 1, true) then return n end
  end
  error("interop_service.lua has no Service:fail")
end)()

-- How Lua names the fixture in error messages and tracebacks (luaO_chunkid:
-- a path longer than LUA_IDSIZE is shortened to "..." and its tail), taken
-- from this interpreter, so that the specs pass from a checkout at any path.
local SERVICE_ID = (function()
  local _, msg = pcall(load("error('x')", "@" .. pyro4.fixtures .. "/interop_service.lua"))
  return assert(msg:match("^(.*):1: x$"), msg)
end)()

-- What Lua receives for each value a Python client sends (the names are
-- interop_client.py's VALUES); the same for JSON and serpent.
local DESCRIBED = {
  none = "1: nil", ["true"] = "1: true", ["false"] = "1: false",
  zero = "1: int 0", int = "1: int 42", neg = "1: int -7",
  int63 = "1: int 9223372036854775807", int_min = "1: int -9223372036854775808",
  float = "1: float 1.5", tenth = "1: float 0.10000000000000001", sum = "1: float 0.30000000000000004",
  whole_float = "1: float 2", neg_zero = "1: float -0", huge = "1: float 1e+308",
  tiny = "1: float 4.9406564584124654e-324", inf = "1: float inf", ninf = "1: float -inf",
  nan = "1: float nan", empty_str = "1: str(0) ", str = "1: str(5) Hello",
  unicode = "1: str(15) h\u{e9}llo \u{2713} \u{1F600}",
  escapes = "1: str(26) quote\" back\\ nl\n tab\t nul\0",
  empty_list = "1: []", empty_map = "1: {}",
  list = "1: [int 1, str(3) two, float 3.5, null, true]",
  nones = "1: [null, null]",
  map = "1: {a=int 1, b=[int 1, int 2], c={d=null}}",
  nested = "1: {l=[[int 1, [int 2, [int 3, []]]], {x={y={z=[{}]}}}]}",
  int_keys_as_str = "1: {1=str(3) one, 2=str(3) two}",
}

-- The events the Python service recorded (its events() method), sorted, once
-- there are n of them (oneway calls land a little later), or after 2 s.
local function events_after(svc, n)
  local got
  for _ = 1, 200 do
    got = svc:events()
    if #got == n then break end
    proc.poll_step(10)
  end
  table.sort(got)
  return got
end

describe("springrun interop: a Python Pyro4 client calls a Lua service #interop", function()
  setup(function() pyro4.require_python() end)

  for _, ser in ipairs({ "json", "serpent" }) do
    describe("with PYRO_SERIALIZER=" .. ser, function()
      local function client(...)
        local p, port = pyro4.start_lua_server()
        proc.cleanups(finally)(function() proc.stop(p) end)
        local out = pyro4.run_client(url_of("interop.Service", port), ser, ...)
        assert.are.equal(ser, out.serializer)
        return out, port
      end

      it("round-trips every JSON type and nesting through a Lua echo, exactly", function()
        local out = client("values")
        local n = 0
        for name, r in pairs(out.echo) do
          n = n + 1
          assert.are.equal("same", r, name)
        end
        assert.are.equal(29, n)
        -- Lua sees Python's values as documented (README "Calling from Python")
        for name, want in pairs(DESCRIBED) do
          assert.are.equal(want, out.describe[name], name)
        end
        -- an int beyond 64 bits becomes the nearest double
        assert.are.equal("1.8446744073709552e+19", out.echo_big.ok)
        if ser == "serpent" then
          -- tuples and sets arrive as lists; bytes as serpent's base64 dict
          assert.are.equal("[1, 'a', [2]]", out.echo_tuple.ok)
          assert.are.equal("[3]", out.echo_set.ok)
          assert.are.equal('{"data": "AAH/", "encoding": "base64"}', out.echo_bytes.ok)
          assert.are.equal("1: [int 1, int 2]", out.describe_tuple.ok)
          assert.are.equal("1: {data=str(4) YWI=, encoding=str(6) base64}", out.describe_bytes.ok)
        end
      end)

      it("passes positional arguments in order and keyword arguments as one trailing map", function()
        local out = client("args")
        assert.are.equal("4: int 1 | str(3) two | nil | [int 3]", out.positional.ok)
        assert.are.equal("0: ", out.no_args.ok)
        assert.are.equal("2: int 1 | nil", out.trailing_none.ok)
        assert.are.equal("2: int 1 | {a=str(1) x, b=int 2}", out.kwargs.ok)
        assert.are.equal("1: {key=[int 1, {k=null}]}", out.only_kwargs.ok)
        assert.are.same({ json.null, 2, json.null }, out.echo_args.ok)
        assert.are.equal(5, out.add.ok)
        assert.are.equal(2.5, out.add_floats.ok)
      end)

      it("gives Python every Lua type and nesting, nil holes as None, several returns as a list", function()
        local out = client("lua_values")
        assert.are.equal("same", out.sample)
        assert.are.equal("[1, 'two', None]", out.several.ok)
        assert.are.equal("None", out.nothing.ok)
        assert.are.equal("You got remote data => Hello", out.get_data.ok)
      end)

      it("raises a Lua error in Python with its message and the Lua traceback", function()
        local out = client("errors")
        local e = out.fail.error
        assert.are.equal("builtins.RuntimeError", e.class)
        local line = FAIL_LINE
        assert.are.equal(SERVICE_ID .. ":" .. line .. ": boom", e.message)
        assert.truthy(e.traceback:find(" +--- This exception occured remotely (Pyro) - Remote traceback:", 1, true))
        assert.truthy(e.traceback:find(" |   [C]: in function 'error'\n |   " .. SERVICE_ID
          .. ":" .. line .. ": in function", 1, true), e.traceback)
        assert.truthy(e.traceback:find(" | RuntimeError: " .. e.message .. "\n", 1, true), e.traceback)
        e = out.fail_typed.error
        assert.are.equal("builtins.ValueError", e.class)
        assert.are.equal("bad value", e.message)
        assert.are.equal("You got remote data => still usable", out.after_fail.ok)
      end)

      it("answers unknown methods, private names and unknown objects with a Pyro4 daemon's exception classes", function()
        local cleanup = proc.cleanups(finally)
        local lua = client("errors")
        local _, pyport = proc.stop_at(cleanup, pyro4.start_py_service("interop.Service"))
        local pyout = pyro4.run_client(url_of("interop.Service", pyport), ser, "errors")
        for _, k in ipairs({ "unknown_method", "private_method", "unknown_method_local", "unknown_object",
          "unknown_object_invoke" }) do
          assert.are.equal(pyout[k].error.class, lua[k].error.class, k)
        end
        assert.are.equal("builtins.AttributeError", lua.unknown_method.error.class)
        assert.are.equal("'interop.Service' object has no attribute 'nosuch'", lua.unknown_method.error.message)
        assert.are.equal(pyout.private_method.error.message, lua.private_method.error.message)
        assert.are.equal("Pyro4.errors.CommunicationError", lua.unknown_object.error.class)
        assert.truthy(lua.unknown_object.error.message:find("rejected: unknown object$"))
        assert.are.equal("Pyro4.errors.DaemonError", lua.unknown_object_invoke.error.class)
        assert.are.equal(pyout.unknown_object_invoke.error.message, lua.unknown_object_invoke.error.message)
      end)

      it("runs oneway methods (declared on the exporter, announced in metadata) without a reply", function()
        local out = client("oneway")
        assert.are.same({ "log_event" }, out.oneway_meta)
        assert.are.equal("None", out.log_event.ok)
        assert.are.same({ "e1", "e2" }, out.events.ok)
        assert.is_true(out.oneway_fast)
      end)

      it("serves Pyro4.batch calls in order, stopping at the first Lua error; oneway batches too", function()
        local out = client("batch")
        assert.are.equal(3, out.batch[1])
        assert.are.equal("You got remote data => x", out.batch[2])
        assert.are.same({ 1, { a = json.null } }, out.batch[3])
        assert.are.equal("builtins.RuntimeError", out.batch[4].class)
        assert.truthy(out.batch[4].message:find("in batch$"))
        assert.are.equal(4, #out.batch)
        assert.are.equal("None", out.oneway_batch.ok)
        assert.are.same({ "batched" }, out.events_after_batch.ok)
      end)

      it("gives _pyroBind the service's metadata, also through Pyro.Daemon.get_metadata", function()
        local out = client("bind")
        assert.is_true(out.bind.ok)
        local methods = { "add", "describe", "echo", "echo_args", "events", "fail", "fail_typed",
          "get_data", "log_event", "nothing", "sample", "several" }
        assert.are.same(methods, out.methods)
        assert.are.same({ "log_event" }, out.oneway)
        assert.are.same({}, out.attrs)
        assert.are.same({ methods = methods, oneway = { "log_event" }, attrs = {} }, out.get_metadata.ok)
      end)

      it("answers a wire PING and Pyro.Daemon's ping and registered", function()
        local out = client("ping")
        assert.are.equal("ok", out.wire_ping)
        assert.are.equal("You got remote data => after ping", out.after_ping.ok)
        assert.are.equal("None", out.daemon_ping.ok)
        assert.are.same({ "Pyro.Daemon", "interop.Service" }, out.registered.ok)
      end)
    end)
  end
end)

describe("springrun interop: a springrun proxy calls a Python Pyro4 daemon #interop", function()
  setup(function() pyro4.require_python() end)

  -- Lua values sent to Python's echo and what must come back (exactly: same
  -- Lua types), with Python's view of each (type name and repr).
  local VALUES = {
    { "int", 42, "int 42" }, { "neg", -7, "int -7" },
    { "maxint", math.maxinteger, "int 9223372036854775807" },
    { "minint", math.mininteger, "int -9223372036854775808" },
    { "float", 1.5, "float 1.5" }, { "tenth", 0.1, "float 0.1" }, { "whole_float", 2.0, "float 2.0" },
    { "sum", 0.1 + 0.2, "float 0.30000000000000004" }, { "neg_zero", -0.0, "float -0.0" },
    { "inf", math.huge, "float inf" }, { "ninf", -math.huge, "float -inf" },
    { "true", true, "bool True" }, { "false", false, "bool False" },
    { "str", "Hello", "str 'Hello'" }, { "empty_str", "", "str ''" },
    { "unicode", "h\u{e9}llo \u{2713} \u{1F600}", "str 'h\u{e9}llo \u{2713} \u{1F600}'" },
    { "escapes", "q\" b\\ n\n t\t", "str 'q\" b\\\\ n\\n t\\t'" },
    { "list", { 1, "two", 3.5, true }, "list [1, 'two', 3.5, True]" },
    { "empty_list", json.array({}), "list []" },
    { "empty_map", {}, "dict {}" },
    { "map", { a = 1 }, "dict {'a': 1}" },
    { "holes", json.array({ 1, nil, 3, nil, n = 4 }), "list [1, None, 3, None]" },
    { "nested", { l = { { 1, { 2, { 3, json.array({}) } } }, { x = { y = { z = { {} } } } } } },
      "dict {'l': [[1, [2, [3, []]]], {'x': {'y': {'z': [{}]}}}]}" },
  }

  local function deep_same(a, b, path)
    if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
    if type(a) == "number" then
      if math.type(a) ~= math.type(b) then return false, path .. ": " .. math.type(a) .. " vs " .. math.type(b) end
      if a ~= a then return b ~= b, path end
      if a == 0 and b == 0 and 1 / a ~= 1 / b then return false, path .. ": signed zero" end
      return a == b, path .. ": " .. tostring(a) .. " vs " .. tostring(b)
    end
    if type(a) ~= "table" then return a == b, path .. ": " .. tostring(a) .. " vs " .. tostring(b) end
    for k, v in pairs(a) do
      if k ~= "n" then
        local ok, where = deep_same(v, b[k] == nil and json.null or b[k], path .. "." .. tostring(k))
        if not ok then return false, where end
      end
    end
    for k, v in pairs(b) do
      -- a nil hole of a sent list comes back as springrun.null
      if a[k] == nil and k ~= "n" and not (v == json.null and math.type(k) == "integer" and k <= (a.n or #a)) then
        return false, path .. ": extra key " .. tostring(k)
      end
    end
    return true
  end

  local function with_service(f, serializer)
    local cleanup = proc.cleanups(finally)
    local _, _, uri = proc.stop_at(cleanup, pyro4.start_py_service("-"))
    local svc = springrun.proxy(uri, { timeout = 10, serializer = serializer })
    cleanup(function() svc:destroy() end)
    return f(svc, uri)
  end

  it("uses the PYRO: URL exactly as Pyro4 printed it", function()
    with_service(function(svc, uri)
      assert.truthy(uri:match("^PYRO:obj_%x+@127%.0%.0%.1:%d+$"), uri)
      assert.are.equal("You got remote data => Hello", svc:get_data("Hello"))
      assert.are.equal("PyroProxyFactory(" .. uri .. ")", tostring(svc))
    end)
  end)

  for _, ser in ipairs({ "json", "serpent" }) do
    it("sends every type and nesting and gets the same values back (" .. ser .. ")", function()
      with_service(function(svc)
        for _, v in ipairs(VALUES) do
          local name, value, python_view = v[1], v[2], v[3]
          local back = svc:echo(value)
          local ok, where = deep_same(value, back, name)
          assert(ok, "echo changed " .. tostring(where))
          assert.are.equal("1: " .. python_view, svc:describe(value), name)
        end
        local nan = svc:echo(0 / 0)
        assert.is_true(nan ~= nan)
        assert.is_nil(svc:echo(nil))
        assert.are.equal("3: None | int 2 | None", svc:describe(nil, 2, nil))
        assert.are.same({ 1, "two", json.null }, svc:several())
        assert.is_nil(svc:nothing())
        assert.are.same({ json.null, 2 }, svc:echo_args(nil, 2))
      end, ser)
    end)
  end

  for _, ser in ipairs({ "json", "serpent" }) do
    it("sends keyword arguments made with springrun.kwargs as Python's **kwargs (" .. ser .. ")", function()
      with_service(function(svc, uri)
        local want = "3: int 1 | a=str 'x' | b=list [1, None]"
        local function kw() return springrun.kwargs { a = "x", b = json.array { 1, nil, n = 2 } } end
        assert.are.equal(want, svc:describe(1, kw())) -- the first call: with the handshake
        assert.are.equal(want, svc:describe(1, kw())) -- a later call on the connection
        assert.are.equal("1: k=dict {}", svc:describe(springrun.kwargs { k = {} }))
        assert.are.equal("1: int 2", svc:describe(2, springrun.kwargs {}))
        -- a plain table as the last argument stays a positional dict
        assert.are.equal("1: dict {'a': 'x'}", svc:describe({ a = "x" }))
        -- a new proxy, the service's metadata known: its first call, kwargs and all
        local again = springrun.proxy(uri, { timeout = 10, serializer = ser })
        assert.are.equal(want, again:describe(1, kw()))
        again:destroy()
        local ok, v = client.in_task(function() return svc:describe(1, kw()) end)
        assert.is_true(ok, tostring(v))
        assert.are.equal(want, v)
      end, ser)
    end)
  end

  it("raises a Python exception as a Lua error with the class name, message and traceback", function()
    with_service(function(svc)
      local e = err_of(svc.fail, svc, "boom")
      assert.is_true(errors.is(e, "remote"))
      assert.are.equal("builtins.ValueError", e.class)
      assert.are.equal("boom", e.message)
      assert.truthy(e.remote_traceback:find("raise ValueError(message)", 1, true), e.remote_traceback)
      assert.truthy(e.remote_traceback:find("ValueError: boom\n$"), e.remote_traceback)
      local text = tostring(e)
      assert.truthy(text:find("^builtins.ValueError: boom\n"))
      assert.truthy(text:find("interop_service.py", 1, true))
      -- a TypeError from wrong arguments, as Python words it
      e = err_of(svc.add, svc, 1)
      assert.are.equal("builtins.TypeError", e.class)
      assert.are.equal("Service.add() missing 1 required positional argument: 'b'", e.message)
      assert.are.equal("You got remote data => ok", svc:get_data("ok"))
    end)
  end)

  it("honours oneway from the daemon's metadata: no reply is awaited", function()
    with_service(function(svc)
      assert.is_true(svc:_pyro_metadata().oneway.log_event)
      assert.are.equal(0, select("#", svc:log_event("e1")))
      svc:log_event("e2")
      assert.are.same({ "e1", "e2" }, events_after(svc, 2))
      local e = err_of(svc.nosuch, svc)
      assert.are.equal("attribute", e.kind)
    end)
  end)
  for _, servertype in ipairs({ "thread", "multiplex" }) do
    it("sends the first call of later connections along with the handshake (" .. servertype .. " server)", function()
      local proxy_mod = require "springrun.proxy"
      local cleanup = proc.cleanups(finally)
      local _, _, uri = proc.stop_at(cleanup,
        pyro4.start_py_service("-", nil, nil, nil, { PYRO_SERVERTYPE = servertype }))
      local first = springrun.proxy(uri, { timeout = 10 })
      assert.are.equal("You got remote data => 0", first:get_data("0"))
      first:destroy()
      for i = 1, 3 do
        local before = proxy_mod.stats().pipelined
        local p = springrun.proxy(uri, { timeout = 10 })
        assert.are.equal("You got remote data => " .. i, p:get_data(tostring(i)))
        assert.are.equal(before + 1, proxy_mod.stats().pipelined)
        assert.are.equal(0, select("#", p:log_event("e" .. i)))
        p:destroy()
      end
      local p = springrun.proxy(uri, { timeout = 10 })
      local before = proxy_mod.stats().pipelined
      p:log_event("e4") -- a oneway first call, pipelined too
      assert.are.equal(before + 1, proxy_mod.stats().pipelined)
      p:destroy()
      p = springrun.proxy(uri, { timeout = 10 })
      cleanup(function() p:destroy() end)
      assert.are.same({ "e1", "e2", "e3", "e4" }, events_after(p, 4))
      assert.are.equal("attribute", err_of(p.nosuch, p).kind)
    end)
  end
end)

describe("springrun interop: PYRONAME with a real Pyro4 name server #interop", function()
  setup(function() pyro4.require_python() end)

  it("resolves PYRONAME URLs of Python objects registered there, with and without the port", function()
    local cleanup = proc.cleanups(finally)
    local _, nsport = proc.stop_at(cleanup, pyro4.start_pyro_ns())
    local _, _, uri = proc.stop_at(cleanup,
      pyro4.start_py_service("-", "127.0.0.1", nsport, "interop.python"))
    local url = string.format("PYRONAME:interop.python@127.0.0.1:%d", nsport)
    assert.are.equal(uri, naming.resolve(url))
    local svc = proxy_of(cleanup, url)
    assert.are.equal("You got remote data => by name", svc:get_data("by name"))
    -- no port in the URL: the ns_port option (else PYRO_NS_PORT, else 9090)
    assert.are.equal(uri, naming.resolve("PYRONAME:interop.python@127.0.0.1", { ns_port = nsport }))
    local e = err_of(naming.resolve, "PYRONAME:interop.nosuch@127.0.0.1:" .. nsport)
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    assert.are.equal("unknown name: interop.nosuch", e.message)
    local bad = springrun.proxy("PYRONAME:interop.nosuch@127.0.0.1:" .. nsport)
    e = err_of(bad.get_data, bad, "x")
    assert.are.equal("Pyro4.errors.NamingError", e.class)
  end)

  it("resolves the name again when a PYRONAME proxy reconnects (the service moved)", function()
    local cleanup = proc.cleanups(finally)
    local _, nsport = proc.stop_at(cleanup, pyro4.start_pyro_ns())
    local py1, port1 = proc.stop_at(cleanup,
      pyro4.start_py_service("interop.Service", "127.0.0.1", nsport, "interop.moving"))
    local svc = proxy_of(cleanup, "PYRONAME:interop.moving@127.0.0.1:" .. nsport)
    assert.are.equal("You got remote data => one", svc:get_data("one"))
    proc.stop(py1)
    assert(proc.wait_port_closed("127.0.0.1", port1, 10))
    local _, port2 = proc.stop_at(cleanup,
      pyro4.start_py_service("interop.Service", "127.0.0.1", nsport, "interop.moving"))
    assert.are_not.equal(port1, port2)
    assert.are.equal("You got remote data => two", svc:get_data("two"))
    assert.are.equal(url_of("interop.Service", port2), naming.resolve("PYRONAME:interop.moving@127.0.0.1:" .. nsport))
  end)

  it("registers a springrun exporter (register_with_nameserver) for Python's PYRONAME, removing it on exit", function()
    local cleanup = proc.cleanups(finally)
    local _, nsport = proc.stop_at(cleanup, pyro4.start_pyro_ns())
    local srv, port = proc.stop_at(cleanup, pyro4.start_lua_server("127.0.0.1", nsport, "interop.lua"))
    local listed = pyro4.nsc(nsport, nil, "list")
    assert.truthy(listed:find("interop.lua --> " .. url_of("interop.lua", port), 1, true), listed)
    for _, ser in ipairs({ "json", "serpent" }) do
      local out = pyro4.run_client("PYRONAME:interop.lua@127.0.0.1:" .. nsport, ser, "pyroname")
      assert.are.equal(url_of("interop.lua", port), out.resolved.ok)
      assert.are.equal("You got remote data => by name", out.get_data.ok)
    end
    proc.kill(srv, "sigterm")
    assert.are.equal(0, proc.wait_exit(srv, 10), srv:stderr())
    local e = err_of(naming.lookup, "interop.lua", { ns_host = "127.0.0.1", ns_port = nsport })
    assert.are.equal("unknown name: interop.lua", e.message)
  end)
end)

describe("springrun interop: `springrun ns` as Python's name server #interop", function()
  setup(function() pyro4.require_python() end)

  it("is listed, pinged and used by python3 -m Pyro4.nsc (json and serpent)", function()
    local ns, nsport, uri = pyro4.start_springrun_ns()
    finally(function() proc.stop(ns) end)
    assert.are.equal("PYRO:Pyro.NameServer@127.0.0.1:" .. nsport, uri)
    for _, ser in ipairs({ "json", "serpent" }) do
      local out = pyro4.nsc(nsport, ser, "list")
      assert.are.equal(table.concat({
        "--------START LIST ",
        "Pyro.NameServer --> " .. uri,
        "    metadata: ['class:Pyro4.naming.NameServer']",
        "--------END LIST ", "" }, "\n"), out)
      assert.are.equal("Name server ping ok.\n", pyro4.nsc(nsport, ser, "ping"))
    end
    assert.are.equal("Registered x.one\n", pyro4.nsc(nsport, "json", "register", "x.one", "PYRO:one@127.0.0.1:1"))
    assert.are.equal("Registered x.two\n", pyro4.nsc(nsport, nil, "register", "x.two", "PYRO:two@127.0.0.1:2"))
    assert.are.equal("Metadata updated\n", pyro4.nsc(nsport, nil, "setmeta", "x.two", "blue", "green"))
    local out = pyro4.nsc(nsport, nil, "listmatching", "x\\.t.o")
    assert.truthy(out:find("x.two --> PYRO:two@127.0.0.1:2\n    metadata: ['blue', 'green']", 1, true), out)
    assert.falsy(out:find("x.one", 1, true))
    out = pyro4.nsc(nsport, nil, "list", "x.")
    assert.truthy(out:find("x.one --> PYRO:one@127.0.0.1:1\n", 1, true), out)
    assert.falsy(out:find("Pyro.NameServer", 1, true))
    out = pyro4.nsc(nsport, nil, "listmeta_any", "green", "red")
    assert.truthy(out:find("x.two", 1, true) and not out:find("x.one", 1, true), out)
    assert.are.equal("PYRO:one@127.0.0.1:1\n", pyro4.nsc(nsport, nil, "lookup", "x.one"))
    assert.are.equal("PYRO:two@127.0.0.1:2\nmetadata: ['blue', 'green']\n", pyro4.nsc(nsport, nil, "lookup", "x.two"))
    assert.are.equal("Removed x.one\n", pyro4.nsc(nsport, nil, "remove", "x.one"))
    out = pyro4.nsc(nsport, nil, "lookup", "x.one")
    assert.are.equal("Error: NamingError - unknown name: x.one\n", out)
  end)

  it("resolves a Python client's PYRONAME to a springrun exporter registered there, and springrun's too", function()
    local cleanup = proc.cleanups(finally)
    local _, nsport = proc.stop_at(cleanup, pyro4.start_springrun_ns())
    local _, port = proc.stop_at(cleanup, pyro4.start_lua_server("127.0.0.1", nsport, "interop.lua"))
    local _, _, pyuri = proc.stop_at(cleanup,
      pyro4.start_py_service("-", "127.0.0.1", nsport, "interop.python"))
    for _, ser in ipairs({ "json", "serpent" }) do
      local out = pyro4.run_client("PYRONAME:interop.lua@127.0.0.1:" .. nsport, ser, "pyroname")
      assert.are.equal(url_of("interop.lua", port), out.resolved.ok)
      assert.are.equal("You got remote data => by name", out.get_data.ok)
    end
    local svc = proxy_of(cleanup, "PYRONAME:interop.python@127.0.0.1:" .. nsport)
    assert.are.equal("You got remote data => both", svc:get_data("both"))
    assert.are.equal(pyuri, naming.resolve("PYRONAME:interop.python@127.0.0.1:" .. nsport))
  end)
end)

describe("springrun interop: broadcast discovery of `springrun ns` #interop", function()
  setup(function() pyro4.require_python() end)

  it("is found by Pyro4.locateNS() and a Python PYRONAME without a host", function()
    local cleanup = proc.cleanups(finally)
    local bcport = pyro4.free_udp_port()
    local _, nsport, uri = proc.stop_at(cleanup,
      pyro4.start_springrun_ns({ "--broadcast", "--bcport", tostring(bcport) }))
    local _, port = proc.stop_at(cleanup, pyro4.start_lua_server("127.0.0.1", nsport, "interop.lua"))
    -- Pyro4 first tries localhost:PYRO_NS_PORT (nobody there), then broadcasts
    local env = { PYRO_NS_BCPORT = tostring(bcport), PYRO_NS_PORT = tostring(proc.free_port()) }
    local out = pyro4.run_python({ proc.python, "-c", "import Pyro4; print(Pyro4.locateNS()._pyroUri)" }, env)
    assert.are.equal(uri .. "\n", out)
    env.PYRO_SERIALIZER = "json"
    out = pyro4.run_python({ proc.python, pyro4.fixtures .. "/interop_client.py", "PYRONAME:interop.lua", "pyroname" }, env)
    local r = json.decode(out)
    assert.are.equal(url_of("interop.lua", port), r.resolved.ok)
    assert.are.equal("You got remote data => by name", r.get_data.ok)
  end)
end)

describe("springrun interop: PYROMETA through `springrun ns` #interop", function()
  setup(function() pyro4.require_python() end)

  it("finds a Python object by metadata, from springrun and from Python (json and serpent)", function()
    local cleanup = proc.cleanups(finally)
    local _, nsport = proc.stop_at(cleanup, pyro4.start_springrun_ns())
    local _, _, uri = proc.stop_at(cleanup, pyro4.start_py_service("-", "127.0.0.1", nsport, "m.one"))
    assert.are.equal("Metadata updated\n", pyro4.nsc(nsport, "json", "setmeta", "m.one", "blue", "round"))
    local url = "PYROMETA:blue,round@127.0.0.1:" .. nsport
    assert.are.equal(uri, naming.resolve(url))
    local svc = proxy_of(cleanup, url)
    assert.are.equal("You got remote data => meta", svc:get_data("meta"))
    for _, ser in ipairs({ "json", "serpent" }) do
      local out = pyro4.run_client("PYROMETA:round,blue@127.0.0.1:" .. nsport, ser, "pyroname")
      assert.are.equal(uri, out.resolved.ok)
      assert.are.equal("You got remote data => by name", out.get_data.ok)
    end
    local e = err_of(naming.resolve, "PYROMETA:purple@127.0.0.1:" .. nsport)
    assert.are.equal("no registrations available with desired metadata properties {purple}", e.message)
  end)
end)

describe("springrun interop: the README's commands (on free ports) #interop", function()
  setup(function() pyro4.require_python() end)
  local EX = proc.root .. "/examples/"

  -- Runs argv to its end (stopped after 30 s) and returns its stdout.
  local function run_ok(argv, env)
    local p = proc.spawn(argv, { env = env })
    local st = proc.wait_exit(p, 30)
    proc.stop(p)
    assert.are.equal(0, st, p:stderr())
    return p:stdout()
  end

  it("Calling from Python: python_client.py and a one-liner call examples/server.lua", function()
    local port = proc.free_port()
    local srv = proc.spawn({ proc.bin, EX .. "server.lua", "127.0.0.1", tostring(port) })
    finally(function() proc.stop(srv) end)
    assert(proc.wait_port("127.0.0.1", port, 10, srv))
    local url = url_of("ServiceName", port)
    assert.are.equal("PYTHON CLIENT: You got remote data => Hello\n", run_ok({ proc.python, EX .. "python_client.py", url }))
    assert.are.equal("PYTHON CLIENT: You got remote data => Hello\n",
      run_ok({ proc.python, EX .. "python_client.py", url }, { PYRO_SERIALIZER = "json" }))
    assert.are.equal("You got remote data => Hi\n", run_ok({ proc.python, "-c",
      string.format('import Pyro4; print(Pyro4.Proxy("%s").get_data("Hi"))', url) }))
  end)

  it("Calling Python: examples/client.lua calls python_server.py", function()
    local port = proc.free_port()
    local py = proc.spawn({ proc.python, EX .. "python_server.py", "127.0.0.1", tostring(port) },
      { env = { PYTHONUNBUFFERED = "1" } })
    finally(function() proc.stop(py) end)
    assert.are.equal(url_of("ServiceName", port), pyro4.wait_output(py, "URI = (%S+)\n", 15, "python_server.py"))
    assert.are.equal("CLIENT: You got remote data => Hello\n",
      run_ok({ proc.bin, EX .. "client.lua", "127.0.0.1", tostring(port) }))
  end)

  it("Name server: springrun ns, ns_server.lua, Pyro4.nsc, ns_client.lua and a Python PYRONAME client", function()
    local cleanup = proc.cleanups(finally)
    local _, nsport = proc.stop_at(cleanup, pyro4.start_springrun_ns())
    local port = proc.free_port()
    local srv = proc.spawn({ proc.bin, EX .. "ns_server.lua", "127.0.0.1", tostring(port), "127.0.0.1",
      tostring(nsport) })
    cleanup(function() proc.stop(srv) end)
    assert(proc.wait_port("127.0.0.1", port, 10, srv))
    local listed = pyro4.nsc(nsport, nil, "list")
    assert.truthy(listed:find("ServiceName --> " .. url_of("ServiceName", port) .. "\n", 1, true), listed)
    assert.are.equal("CLIENT: You got remote data => Hello\n",
      run_ok({ proc.bin, EX .. "ns_client.lua", "127.0.0.1", tostring(nsport) }))
    assert.are.equal("PYTHON CLIENT: You got remote data => Hello\n",
      run_ok({ proc.python, EX .. "python_client.py", "PYRONAME:ServiceName@127.0.0.1:" .. nsport }))
    proc.kill(srv, "sigterm")
    assert.are.equal(0, proc.wait_exit(srv, 10), srv:stderr())
    assert.falsy(pyro4.nsc(nsport, nil, "list"):find("ServiceName", 1, true))
  end)
end)
