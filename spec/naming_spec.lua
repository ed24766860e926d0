-- springrun.naming: Pyro4 URI parsing (checked against Pyro4's own
-- core.URI), URI class dicts, and PYRONAME/PYROMETA resolution, register and
-- remove against a real Pyro4 name server (python3 -m Pyro4.naming).
local errors = require "springrun.errors"
local json = require "springrun.json"
local naming = require "springrun.naming"
local client = require "helpers.client"
local proc = require "helpers.proc"
local pyro4 = require "helpers.pyro4"

local err_of = client.error_of
local oracle = pyro4.ns_oracle -- Pyro4's own answers (spec/fixtures/ns_oracle.py)

local URIS = {
  "PYRO:obj@127.0.0.1:9999", "pyro:obj@host:1", "PyRo:Obj_1@Host.Example.com:65535",
  "PYRO:a@b@c:5", "PYRO:obj@[::1]:5000", "PYRO:obj@[fe80::1%eth0]:1", "PYRO:obj@./u:/tmp/sock",
  "PYRONAME:example.greeting", "PYRONAME:example.greeting@nshost", "PYRONAME:x@nshost:1234",
  "pyroname:x@[::1]", "PYROMETA:blue,green@h:2", "PYROMETA: a , b ",
  "PYRO:obj", "PYRO:obj@", "PYRO:obj@host", "PYRO:obj@host:", "PYRO:obj@host:port", "PYRO:@host:1",
  "PYRO:o bj@host:1", "PYROX:obj@h:1", "HTTP:obj@h:1", "PYRO", "", "PYRO:obj@[[::1]]:1",
  "PYRO:obj@[zz]:1", "PYRO:obj@./u:", "PYRO:obj@./u:a:b", "PYRONAME:x@",
  "PYRO:obj@host: 12 ", "PYRO:obj@host:+12", "PYRO:obj@h:-1",
}

describe("springrun.naming #unit", function()
  it("parses URIs exactly as Pyro4's core.URI does (Pyro4 as the oracle)", function()
    local want = oracle({ uris = URIS }).uris
    assert.are.equal(#URIS, #want)
    for i, s in ipairs(URIS) do
      local u, why = naming.parse_uri(s)
      local w = want[i]
      if w.error then
        assert.is_nil(u, s)
        assert.are.equal(w.message, why, s)
      else
        assert(u, s .. ": " .. tostring(why) .. ", Pyro4 accepts it")
        local o = w.ok
        assert.are.equal(o[1], u.protocol, s)
        if type(o[2]) == "table" then
          local got = { table.unpack(u.object) }
          table.sort(got)
          assert.are.same(o[2], got, s)
        else
          assert.are.equal(o[2], u.object, s)
        end
        local function py(v) if v == json.null then return nil end return v end
        assert.are.equal(py(o[3]), u.sockname, s)
        assert.are.equal(py(o[4]), u.host, s)
        assert.are.equal(py(o[5]), u.port, s)
        if u.protocol ~= "PYROMETA" then assert.are.equal(o[6], naming.uri_string(u), s) end
      end
    end
  end)

  it("builds and reads Pyro4's URI class dict", function()
    local d = naming.uri_dict("pyro:obj@127.0.0.1:5")
    assert.are.equal("Pyro4.core.URI", d.__class__)
    assert.are.equal('["PYRO", "obj", null, "127.0.0.1", 5]', json.encode(d.state))
    assert.are.equal('["PYROMETA", ["a", "b"], null, "h", 9090]', json.encode(naming.uri_dict("PYROMETA:a,b@h").state))
    assert.are.equal("PYRO:obj@127.0.0.1:5", naming.to_url(d))
    assert.are.equal("PYRO:obj@[::1]:5", naming.to_url(naming.uri_dict("PYRO:obj@[::1]:5")))
    assert.are.equal("PYRO:x@h:1", naming.to_url("pyro:x@h:1"))
    local s, why = naming.to_url({ __class__ = "Pyro4.core.Proxy", state = {} })
    assert.is_nil(s)
    assert.are.equal("expected a Pyro4.core.URI, got a Pyro4.core.Proxy", why)
    s, why = naming.to_url({ __class__ = "Pyro4.core.URI", state = { "PYRO", "x", json.null, "h", "nope" } })
    assert.is_nil(s)
    assert.are.equal("invalid Pyro4.core.URI state", why)
    s, why = naming.to_url("PYRO:obj")
    assert.are.equal("invalid uri 'PYRO:obj': invalid uri", why)
    assert.are.equal("expected a URI string or a Pyro4.core.URI, got a number", select(2, naming.to_url(5)))
  end)

  it("returns PYRO: URLs as Pyro4 prints them without asking anybody", function()
    assert.are.equal("PYRO:obj@host:1", naming.resolve("pyro:obj@host:1"))
    assert.are.equal("PYRO:obj@[::1]:1", naming.resolve("PYRO:obj@[::1]:1"))
  end)

  it("refuses bad URLs, names and options with config errors naming them", function()
    local e = err_of(naming.resolve, "PYRO:obj")
    assert.is_true(errors.is(e, "config"))
    assert.are.equal("invalid Pyro URL 'PYRO:obj': invalid uri", e.message)
    e = err_of(naming.resolve, "PYRONAME:x@./u:/tmp/ns")
    assert.are.equal("invalid Pyro URL 'PYRONAME:x@./u:/tmp/ns': unix domain sockets are not supported", e.message)
    e = err_of(naming.register, "", "PYRO:x@h:1")
    assert.are.equal("naming.register: the name must be a non-empty string, got an empty string", e.message)
    e = err_of(naming.register, "n", "PYRO:x")
    assert.are.equal("naming.register 'n': invalid uri 'PYRO:x': invalid uri", e.message)
    e = err_of(naming.register, "n", "PYRO:x@h:1", { metadata = "blue" })
    assert.are.equal("naming.register 'n': metadata must be a list of strings, got string", e.message)
    e = err_of(naming.remove, "n", { ns_port = 70000 })
    assert.are.equal("name server port must be an integer 1..65535, got 70000", e.message)
    e = err_of(naming.lookup, "n", { ns_host = "" })
    assert.are.equal("name server host must be a non-empty string, got ", e.message)
  end)

  it("reports a name server nobody answers as NamingError 'failed to locate the nameserver'", function()
    local port = proc.free_port()
    local e = err_of(naming.resolve, "PYRONAME:x@127.0.0.1:" .. port)
    assert.is_true(errors.is(e))
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    assert.are.equal("refused", e.kind)
    assert.are.equal(string.format("failed to locate the nameserver at 127.0.0.1:%d: cannot connect to "
      .. "PYRO:Pyro.NameServer@127.0.0.1:%d: connection refused by 127.0.0.1:%d", port, port, port), e.message)
    assert.are.equal("refused", e.cause.kind)
    e = err_of(naming.register, "x", "PYRO:x@h:1", { ns_host = "127.0.0.1", ns_port = port })
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    -- no location in the URL: the ns_host/ns_port options
    e = err_of(naming.resolve, "PYRONAME:x", { ns_host = "127.0.0.1", ns_port = port })
    assert.truthy(e.message:find("at 127.0.0.1:" .. port, 1, true))
  end)
end)

describe("springrun.naming against a real Pyro4 name server #interop", function()
  setup(function() pyro4.require_python() end)

  local function start_ns()
    -- JSON only: springrun's naming speaks JSON to name servers
    local ns, port = pyro4.start_pyro_ns({ PYRO_SERIALIZERS_ACCEPTED = "json" })
    proc.cleanups(finally)(function() proc.stop(ns) end)
    return port, { ns_host = "127.0.0.1", ns_port = port }
  end

  it("registers, looks up, resolves and removes names", function()
    local port, opts = start_ns()
    assert.is_nil(naming.register("example.greeting", "PYRO:greeting@127.0.0.1:7000", opts))
    assert.are.equal("PYRO:greeting@127.0.0.1:7000", naming.lookup("example.greeting", opts))
    assert.are.equal("PYRO:greeting@127.0.0.1:7000",
      naming.resolve("PYRONAME:example.greeting@127.0.0.1:" .. port))
    assert.are.equal("PYRO:greeting@127.0.0.1:7000", naming.resolve("PYRONAME:example.greeting", opts))
    -- Python sees it too
    local listed = pyro4.nsc(port, "json", "list")
    assert.truthy(listed:find("example.greeting --> PYRO:greeting@127.0.0.1:7000\n", 1, true), listed)
    assert.are.equal(1, naming.remove("example.greeting", opts))
    assert.are.equal(0, naming.remove("example.greeting", opts))
    local e = err_of(naming.lookup, "example.greeting", opts)
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    assert.are.equal("remote", e.kind)
    assert.are.equal("unknown name: example.greeting", e.message)
    e = err_of(naming.resolve, "PYRONAME:example.greeting@127.0.0.1:" .. port)
    assert.are.equal("unknown name: example.greeting", e.message)
    assert.are.equal("PYRONAME:example.greeting@127.0.0.1:" .. port, e.url)
  end)

  it("registers with metadata (list or set), replaces unless safe, and resolves PYROMETA", function()
    local cleanup = proc.cleanups(finally)
    local port, opts = start_ns()
    naming.register("a.one", "PYRO:one@127.0.0.1:1", { ns_host = "127.0.0.1", ns_port = port,
      metadata = { "blue", "round" } })
    naming.register("a.two", "PYRO:two@127.0.0.1:2", { ns_host = "127.0.0.1", ns_port = port,
      metadata = { green = true, round = true } })
    local ns = naming.locate_ns("127.0.0.1", port)
    cleanup(function() ns:destroy() end)
    local r = ns:lookup("a.two", true)
    table.sort(r[2])
    assert.are.same({ "green", "round" }, r[2])
    assert.are.equal("PYRO:one@127.0.0.1:1", naming.resolve("PYROMETA:blue,round@127.0.0.1:" .. port))
    local seen = {}
    for _ = 1, 30 do seen[naming.resolve("PYROMETA:round@127.0.0.1:" .. port)] = true end
    assert.is_true(seen["PYRO:one@127.0.0.1:1"] and seen["PYRO:two@127.0.0.1:2"])
    local e = err_of(naming.resolve, "PYROMETA:purple@127.0.0.1:" .. port)
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    assert.are.equal("no registrations available with desired metadata properties {purple}", e.message)
    -- same name again: replaced; with safe = true: NamingError
    naming.register("a.one", "PYRO:uno@127.0.0.1:11", opts)
    assert.are.equal("PYRO:uno@127.0.0.1:11", naming.lookup("a.one", opts))
    e = err_of(naming.register, "a.one", "PYRO:x@127.0.0.1:3",
      { ns_host = "127.0.0.1", ns_port = port, safe = true })
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    assert.are.equal("name already registered: a.one", e.message)
    -- a URI class dict is registered as its string
    naming.register("a.three", naming.uri_dict("PYRO:three@127.0.0.1:3"), opts)
    assert.are.equal("PYRO:three@127.0.0.1:3", naming.lookup("a.three", opts))
  end)

  it("takes the name server from PYRO_NS_HOST/PYRO_NS_PORT when the URL has no location, as Pyro4 does", function()
    local cleanup = proc.cleanups(finally)
    local port, opts = start_ns()
    naming.register("env.name", "PYRO:env@127.0.0.1:5", opts)
    local script = proc.tmpfile([[
      local naming = require "springrun.naming"
      print(naming.resolve("PYRONAME:env.name"))
      print(naming.lookup("env.name"))
    ]])
    cleanup(function() os.remove(script) end)
    local p = proc.spawn({ proc.bin, script }, { env = { PYRO_NS_HOST = "127.0.0.1", PYRO_NS_PORT = tostring(port) } })
    cleanup(function() proc.stop(p) end)
    assert.are.equal(0, proc.wait_exit(p, 20), p:stderr())
    assert.are.equal("PYRO:env@127.0.0.1:5\nPYRO:env@127.0.0.1:5\n", p:stdout())
  end)

  it("locates the name server as a proxy with the whole Pyro.NameServer API", function()
    local cleanup = proc.cleanups(finally)
    local port = start_ns()
    local ns = naming.locate_ns("127.0.0.1", port, { timeout = 5 })
    cleanup(function() ns:destroy() end)
    assert.is_nil(ns:ping())
    assert.are.equal(1, ns:count())
    local me = ns:lookup("Pyro.NameServer")
    assert.are.equal("PYRO:Pyro.NameServer@127.0.0.1:" .. port, naming.to_url(me))
  end)
end)
