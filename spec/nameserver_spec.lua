-- springrun.nameserver and `springrun ns`: the Pyro.NameServer API with
-- Pyro4's exact results and errors (Pyro4 4.82's own NameServer class run as
-- the oracle, spec/fixtures/ns_oracle.py), its regex subset against Python's
-- re.match, the object exported in this process and called by a springrun
-- proxy, and the `springrun ns` command line.
local springrun = require "springrun"
local errors = require "springrun.errors"
local json = require "springrun.json"
local nameserver = require "springrun.nameserver"
local naming = require "springrun.naming"
local client = require "helpers.client"
local proc = require "helpers.proc"
local pyro4 = require "helpers.pyro4"

local null = json.null
local A = json.array

local err_of = client.error_of
local oracle = pyro4.ns_oracle

-- Strict structural equality (integers vs floats, null vs nil-holes).
local function same(a, b)
  if a == nil then a = null end
  if b == nil then b = null end
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then return math.type(a) == math.type(b) and a == b end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function show(v)
  local ok, s = pcall(json.encode, v)
  return ok and s or tostring(v)
end

-- [method, params, kwargs]; the same sequence goes through Pyro4's NameServer
local URI3 = { __class__ = "Pyro4.core.URI", state = A({ "PYRO", "three", null, "h", 3 }) }
local CALLS = {
  { "count", A({}), {} },
  { "ping", A({}), {} },
  { "register", A({ "a.one", "PYRO:one@127.0.0.1:1" }), {} },
  { "register", A({ "a.two", "pyro:two@host:2", false, A({ "blue", "green", "blue" }) }), {} },
  { "register", A({ "b.three", URI3 }), { metadata = A({ "green" }) } },
  { "register", A({ "a.one", "PYRO:x@h:1" }), { safe = true } },
  { "register", A({ "bad", "PYRO:nolocation" }), {} },
  { "register", A({ "bad", "PYRO:x@h:port" }), {} },
  { "register", A({ "bad", 5 }), {} },
  { "register", A({ 5, "PYRO:x@h:1" }), {} },
  { "register", A({ "bad", "PYRO:x@h:1" }), { metadata = "blue" } },
  { "register", A({ "bad", "PYRO:x@h:1", false, 7 }), {} },
  { "register", A({ "bad" }), {} },
  { "register", A({}), {} },
  { "count", A({}), {} },
  { "lookup", A({ "a.two" }), {} },
  { "lookup", A({ "a.two" }), { return_metadata = true } },
  { "lookup", A({ "b.three", 1 }), {} },
  { "lookup", A({ "nope" }), {} },
  { "lookup", A({}), { name = "a.one" } },
  { "lookup", A({ "a.one", true, 3 }), {} },
  { "lookup", A({}), {} },
  { "lookup", A({ "a.one" }), { name = "x" } },
  { "lookup", A({ null }), {} },
  { "list", A({}), {} },
  { "list", A({ "a." }), {} },
  { "list", A({}), { prefix = "a.", return_metadata = true } },
  { "list", A({}), { regex = "a\\..*" } },
  { "list", A({}), { regex = "[ab]\\.t" } },
  { "list", A({}), { regex = "(unclosed" } },
  { "list", A({}), { metadata_all = A({ "blue", "green" }) } },
  { "list", A({}), { metadata_any = A({ "green" }), return_metadata = true } },
  { "list", A({}), { metadata_all = "blue" } },
  { "list", A({ "a", "b" }), {} },
  { "list", A({ "" }), { regex = "x" } },
  { "list", A({ "" }), {} },
  { "list", A({ null, null, A({}) }), {} },
  { "list", A({}), { foo = 1 } },
  { "list", A({ 1, 2, 3, 4, 5, 6 }), {} },
  { "set_metadata", A({ "a.one", A({ "red" }) }), {} },
  { "set_metadata", A({ "nope", A({ "red" }) }), {} },
  { "set_metadata", A({ "a.one", "red" }), {} },
  { "lookup", A({ "a.one", true }), {} },
  { "set_metadata", A({ "a.one", null }), {} },
  { "lookup", A({ "a.one", true }), {} },
  { "remove", A({ "Pyro.NameServer" }), {} },
  { "remove", A({}), { prefix = "P" } },
  { "remove", A({ "nope" }), {} },
  { "remove", A({ "a.one" }), {} },
  { "remove", A({}), { regex = "b" } },
  { "count", A({}), {} },
  { "remove", A({}), { regex = ".*" } },
  { "remove", A({}), {} },
  { "count", A({}), {} },
  { "list", A({}), { return_metadata = true } },
}

-- A call result as the oracle writes it.
local function outcome(f)
  local ok, r = pcall(f)
  if ok then
    -- list(return_metadata) / lookup(return_metadata): metadata lists are sorted already
    return { ok = r == nil and null or r }
  end
  assert(errors.is(r), "not a springrun error: " .. tostring(r))
  return { error = r.class, message = r.message }
end

local function compare(want, got, what)
  assert(same(want, got), string.format("%s:\n  Pyro4:     %s\n  springrun: %s", what, show(want), show(got)))
end

describe("springrun.nameserver #unit", function()
  setup(function() pyro4.require_python() end)

  it("answers every call with Pyro4's results and errors (nameserver.call: params + kwargs)", function()
    local want = oracle({ calls = CALLS }).calls
    local ns = nameserver.new({ uri = "PYRO:Pyro.NameServer@127.0.0.1:9090" })
    for i, c in ipairs(CALLS) do
      local got = outcome(function() return nameserver.call(ns, c[1], c[2], c[3]) end)
      compare(want[i], got, string.format("call %d %s(%s, %s)", i, c[1], show(c[2]), show(c[3])))
    end
  end)

  it("answers the same when called as springrun's exporter calls it (nil for null, kwargs as a trailing map)", function()
    local want = oracle({ calls = CALLS }).calls
    local ns = nameserver.new({ uri = "PYRO:Pyro.NameServer@127.0.0.1:9090" })
    for i, c in ipairs(CALLS) do
      local args, n = {}, #c[2]
      for j = 1, n do
        local v = c[2][j]
        if v == null then v = nil end
        args[j] = v
      end
      if next(c[3]) ~= nil then
        n = n + 1
        args[n] = c[3]
      end
      local got = outcome(function() return ns[c[1]](ns, table.unpack(args, 1, n)) end)
      compare(want[i], got, string.format("call %d %s(%s, %s)", i, c[1], show(c[2]), show(c[3])))
    end
  end)

  it("exposes exactly the API methods and nothing else through its __index chain", function()
    local ns = nameserver.new()
    local names = {}
    local mt = getmetatable(ns)
    for k, v in pairs(mt.__index) do
      if type(v) == "function" and k:sub(1, 1) ~= "_" then names[#names + 1] = k end
    end
    for k in pairs(ns) do names[#names + 1] = "own field " .. tostring(k) end
    table.sort(names)
    assert.are.same({ "count", "list", "lookup", "ping", "register", "remove", "set_metadata" }, names)
  end)

  it("matches names with regexes as Python's re.match does (Python as the oracle)", function()
    local patterns = { "a", "a.*", "^a\\.b$", "a\\.one$", "x|a", "(a|b)\\.(one|two)", "[a-c]+\\.[^t]",
      "\\w+\\.\\w{3}$", "a\\.t?wo", ".*o$", "a.{2,3}", "(?:a)\\.o", "(?P<n>a)\\.", "a*?\\.", "\\d",
      "[\\d.]+", "A", "a\\.one\\Z", "\\Aa", "a{,2}\\.", "x{2}", "[.]", "[]a]", "[a-]", "a+?o", "(ab)*a",
      "", ".", "$", "a{2}", "a{", "\\W", "\\s*a", "[^\\w]", "(a|ab)(c|bcd)(d*)$", "\\.\\*\\+" }
    local names = { "a.one", "a.two", "b.three", "abc", "", "a.one\n", "12.5", "]", "-", "aab.x", "a{2}",
      "abcd", ".*+", " a", "aa." }
    local pairs_ = {}
    for _, p in ipairs(patterns) do
      for _, n in ipairs(names) do pairs_[#pairs_ + 1] = A({ p, n }) end
    end
    local want = oracle({ regex = pairs_ }).regex
    for i, pn in ipairs(pairs_) do
      local m, why = nameserver.compile_regex(pn[1])
      assert(m, pn[1] .. ": " .. tostring(why))
      assert.are.equal(want[i], m(pn[2]), string.format("re.match(%q, %q)", pn[1], pn[2]))
    end
  end)

  it("refuses invalid and unsupported regexes with 'invalid regex: ...' (NamingError in list)", function()
    local bad = { "(", ")", "*a", "a**", "[a", "a{2,1}", "a|*" }
    local want = oracle({ regex = (function()
      local t = {}
      for _, p in ipairs(bad) do t[#t + 1] = A({ p, "a" }) end
      return t
    end)() }).regex
    for i, p in ipairs(bad) do
      local m, why = nameserver.compile_regex(p)
      assert.is_nil(m, p)
      assert.are.equal("invalid regex: " .. want[i].error, why, p)
    end
    for p, what in pairs({ ["(?=a)"] = "unsupported group '(?=' at position 0",
      ["(?i)a"] = "unsupported group '(?i' at position 0", ["\\1"] = "backreferences are not supported: \\1 at position 0",
      ["a\\b"] = "word boundaries are not supported: \\b at position 1" }) do
      local m, why = nameserver.compile_regex(p)
      assert.is_nil(m, p)
      assert.are.equal("invalid regex: " .. what, why)
    end
    local ns = nameserver.new()
    local e = err_of(ns.list, ns, nil, "(?=x)")
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    assert.are.equal("invalid regex: unsupported group '(?=' at position 0", e.message)
  end)

  it("gives up on a regex that backtracks too much with NamingError instead of stalling", function()
    local ns = nameserver.new()
    ns:register(string.rep("a", 30), "PYRO:x@h:1")
    local t0 = os.clock()
    local e = err_of(ns.list, ns, nil, "(a*)*b")
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    assert.are.equal(string.format("regex too expensive: more than 1000000 steps matching '(a*)*b' against '%s'",
      string.rep("a", 30)), e.message)
    assert.is_true(os.clock() - t0 < 10)
    e = err_of(ns.remove, ns, nil, nil, "(a*)*b")
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    -- linear patterns on long names are fine
    local long = string.rep("b", 20000)
    ns:register(long, "PYRO:y@h:2")
    assert.are.same({ [long] = "PYRO:y@h:2" }, ns:list(nil, "b+$"))
  end)

  it("keeps its own entry under Pyro.NameServer with Pyro4's metadata", function()
    local ns = nameserver.new()
    assert.are.equal(0, ns:count())
    nameserver.set_own_uri(ns, "PYRO:Pyro.NameServer@127.0.0.1:4000")
    assert.are.same({ ["Pyro.NameServer"] = A({ "PYRO:Pyro.NameServer@127.0.0.1:4000",
      A({ "class:Pyro4.naming.NameServer" }) }) }, ns:list(nil, nil, nil, nil, true))
    assert.are.equal(0, ns:remove("Pyro.NameServer"))
    local e = err_of(nameserver.set_own_uri, ns, "nope")
    assert.are.equal("nameserver.set_own_uri: invalid uri 'nope': invalid uri", e)
    e = err_of(ns.lookup, {}, "x")
    assert.truthy(tostring(e):find("call the methods with ':' on a name server object", 1, true))
  end)
end)

-- Exports service as name on 127.0.0.1, a free port (props: more
-- exporter properties); destroyed by cleanup.
local function export(cleanup, name, service, props)
  local t = { service_name = name, service = service, service_host = "127.0.0.1", service_port = 0 }
  for k, v in pairs(props or {}) do t[k] = v end
  local ex = springrun.PyroServiceExporter(t)
  ex:after_properties_set()
  cleanup(function() ex:destroy() end)
  return ex
end

describe("springrun.nameserver exported in this process #net", function()
  it("serves a springrun proxy: lookup returns the URI dict, errors keep Pyro4's classes", function()
    local cleanup = proc.cleanups(finally)
    local ns = nameserver.new()
    local ex = export(cleanup, "Pyro.NameServer", ns)
    local port = ex:bound_port()
    nameserver.set_own_uri(ns, "PYRO:Pyro.NameServer@127.0.0.1:" .. port)
    local opts = { ns_host = "127.0.0.1", ns_port = port }
    naming.register("x.svc", "PYRO:svc@127.0.0.1:1", opts)
    assert.are.equal("PYRO:svc@127.0.0.1:1", naming.resolve("PYRONAME:x.svc@127.0.0.1:" .. port))
    local p = naming.locate_ns("127.0.0.1", port)
    cleanup(function() p:destroy() end)
    assert.are.same({ __class__ = "Pyro4.core.URI", state = { "PYRO", "svc", null, "127.0.0.1", 1 } },
      p:lookup("x.svc"))
    assert.are.equal(2, p:count())
    assert.is_nil(p:ping())
    local e = err_of(p.list, p, "a", "b")
    assert.are.equal("builtins.ValueError", e.class)
    assert.are.equal("you can only filter on one thing at a time", e.message)
    -- Pyro4's NameServer raises NamingError; a Python client must get that class
    e = err_of(naming.lookup, "x.nope", opts)
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    assert.are.equal("unknown name: x.nope", e.message)
  end)
end)

describe("name server registration of exporters, in this process #net", function()
  local cmd_ns = require "springrun.cmd.ns"

  local Echo = {}
  Echo.__index = Echo
  function Echo.echo(_, v) return v end

  it("registers an exporter with register_with_nameserver and removes it on destroy", function()
    local cleanup = proc.cleanups(finally)
    local nsex, _, nsuri, nsport = cmd_ns.start("127.0.0.1", 0)
    cleanup(function() nsex:destroy() end)
    assert.are.equal("PYRO:Pyro.NameServer@127.0.0.1:" .. nsport, nsuri)
    local ex = springrun.PyroServiceExporter { service_name = "x.echo", service = setmetatable({}, Echo),
      service_host = "127.0.0.1", service_port = 0 }
    ex.register_with_nameserver, ex.ns_host, ex.ns_port = true, "127.0.0.1", nsport
    ex:after_properties_set()
    cleanup(function() ex:destroy() end)
    local opts = { ns_host = "127.0.0.1", ns_port = nsport }
    assert.are.equal("PYRO:x.echo@127.0.0.1:" .. ex:bound_port(), naming.lookup("x.echo", opts))
    local p = springrun.proxy("PYRONAME:x.echo@127.0.0.1:" .. nsport, { timeout = 5 })
    cleanup(function() p:destroy() end)
    assert.are.same({ 1, { a = "b" } }, p:echo({ 1, { a = "b" } }))
    ex:destroy()
    local e = err_of(naming.lookup, "x.echo", opts)
    assert.are.equal("unknown name: x.echo", e.message)
  end)

  it("fails the export naming the exporter when the name server is unreachable, and releases the port", function()
    local nsport = proc.free_port()
    local port = proc.free_port()
    local ex = springrun.PyroServiceExporter { service_name = "x.lonely", service = setmetatable({}, Echo),
      service_host = "127.0.0.1", service_port = port }
    ex:set_register_with_nameserver(true)
    ex:set_ns_host("127.0.0.1")
    ex:set_ns_port(nsport)
    local e = err_of(ex.after_properties_set, ex)
    assert.truthy(tostring(e):find("^PyroServiceExporter 'x.lonely': cannot register with the name server: "
      .. "Pyro4.errors.NamingError: failed to locate the nameserver at 127.0.0.1:" .. nsport), tostring(e))
    assert.is_false(ex:is_exported())
    assert.is_false(proc.port_open("127.0.0.1", port))
  end)

  it("locates a name server of the same process by broadcast from inside a service task", function()
    local cleanup = proc.cleanups(finally)
    local nsex, _, nsuri, nsport = cmd_ns.start("127.0.0.1", 0)
    cleanup(function() nsex:destroy() end)
    local bcport = pyro4.free_udp_port()
    local udp = assert(cmd_ns.start_broadcast(nsuri, "127.0.0.1", bcport))
    cleanup(function() udp:close() end)
    naming.register("bc.task", "PYRO:t@127.0.0.1:9", { ns_host = "127.0.0.1", ns_port = nsport })
    local nobody = proc.free_port()
    local Finder = {}
    function Finder.find(_, name)
      assert(require("springrun.runtime").current(), "not in a task")
      return naming.resolve("PYRONAME:" .. name, { ns_port = nobody, ns_bcport = bcport })
    end
    local ex = export(cleanup, "x.finder", Finder)
    local p = springrun.proxy("PYRO:x.finder@127.0.0.1:" .. ex:bound_port(), { timeout = 10 })
    cleanup(function() p:destroy() end)
    assert.are.equal("PYRO:t@127.0.0.1:9", p:find("bc.task"))
  end)

  it("lets a service method resolve a PYRONAME (inside a task) through a name server of the same process", function()
    local cleanup = proc.cleanups(finally)
    local nsex, _, _, nsport = cmd_ns.start("127.0.0.1", 0)
    cleanup(function() nsex:destroy() end)
    local inner = export(cleanup, "x.inner", setmetatable({}, Echo),
      { register_with_nameserver = true, ns_host = "127.0.0.1", ns_port = nsport })
    local Outer = {}
    function Outer.via_name(_, v)
      local p = springrun.proxy("PYRONAME:x.inner@127.0.0.1:" .. nsport, { timeout = 5 })
      local r = p:echo(v)
      p:destroy()
      return "outer(" .. r .. ")", naming.resolve("PYRONAME:x.inner@127.0.0.1:" .. nsport)
    end
    local outer = export(cleanup, "x.outer", Outer)
    local p = springrun.proxy("PYRO:x.outer@127.0.0.1:" .. outer:bound_port(), { timeout = 5 })
    cleanup(function() p:destroy() end)
    assert.are.same({ "outer(hi)", "PYRO:x.inner@127.0.0.1:" .. inner:bound_port() }, p:via_name("hi"))
  end)
end)

describe("springrun ns (command line) #net", function()
  it("prints its usage with --help and refuses bad arguments with exit 2", function()
    local out, ok = proc.run(proc.bin .. " ns --help")
    assert.is_true(ok)
    assert.truthy(out:find("usage: springrun ns [--host HOST] [--port PORT]", 1, true))
    local _, ok2, code = proc.run(proc.bin .. " ns --port nope 2>/dev/null")
    assert.is_falsy(ok2)
    assert.are.equal(2, code)
    local err = proc.run(proc.bin .. " ns --bogus 2>&1")
    assert.are.equal("springrun ns: unknown argument '--bogus' (see springrun ns --help)\n", err)
    err = proc.run(proc.bin .. " ns --port 70000 2>&1")
    assert.are.equal("springrun ns: --port must be an integer 0..65535, got '70000'\n", err)
  end)

  it("prints its URI as Pyro4's name server does, serves, and exits 0 on SIGTERM", function()
    local p, port, uri = pyro4.start_springrun_ns()
    finally(function() proc.stop(p) end)
    assert.are.equal(string.format("Not starting broadcast server for localhost.\n"
      .. "NS running on 127.0.0.1:%d (127.0.0.1)\nURI = %s\n", port, uri), p:stdout())
    assert.are.equal("PYRO:Pyro.NameServer@127.0.0.1:" .. port, uri)
    naming.register("x.y", "PYRO:y@127.0.0.1:2", { ns_host = "127.0.0.1", ns_port = port })
    assert.are.equal("PYRO:y@127.0.0.1:2", naming.resolve("PYRONAME:x.y@127.0.0.1:" .. port))
    proc.kill(p, "sigterm")
    assert.are.equal(0, proc.wait_exit(p, 10), p:stderr())
    assert.is_true(proc.wait_port_closed("127.0.0.1", port, 5))
  end)

  it("answers GET_NSURI broadcasts with its URI when asked to (--broadcast), none with -x", function()
    local cleanup = proc.cleanups(finally)
    local bcport = pyro4.free_udp_port()
    local p, port, uri = pyro4.start_springrun_ns({ "--broadcast", "--bcport", tostring(bcport) })
    cleanup(function() proc.stop(p) end)
    assert.are.equal(string.format("Broadcast server running on 127.0.0.1:%d\nNS running on 127.0.0.1:%d "
      .. "(127.0.0.1)\nURI = %s\n", bcport, port, uri), p:stdout())
    assert.are.equal(uri, naming.broadcast_locate({ ns_bcport = bcport }))
    -- no host anywhere: localhost:<ns_port> does not answer, the broadcast does
    local nobody = proc.free_port()
    naming.register("bc.name", "PYRO:bc@127.0.0.1:3", { ns_host = "127.0.0.1", ns_port = port })
    assert.are.equal("PYRO:bc@127.0.0.1:3", naming.resolve("PYRONAME:bc.name", { ns_port = nobody, ns_bcport = bcport }))
    local e = err_of(naming.resolve, "PYRONAME:bc.name", { ns_port = nobody, ns_bcport = bcport, broadcast = false })
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    local quiet = proc.spawn({ proc.bin, "ns", "--port", "0", "-x" })
    cleanup(function() proc.stop(quiet) end)
    pyro4.wait_output(quiet, "URI = ", 10, "springrun ns -x")
    assert.falsy(quiet:stdout():find("roadcast"))
    local bad = proc.run(proc.bin .. " ns --bcport x 2>&1")
    assert.are.equal("springrun ns: --bcport must be an integer 0..65535, got 'x'\n", bad)
  end)

  it("tells when no broadcast answers a locate without a host", function()
    local nobody, bcport = proc.free_port(), pyro4.free_udp_port()
    local e = err_of(naming.resolve, "PYRONAME:x", { ns_port = nobody, ns_bcport = bcport,
      broadcast_rounds = 1, broadcast_wait_ms = 100 })
    assert.are.equal("Pyro4.errors.NamingError", e.class)
    assert.truthy(e.message:find("^failed to locate the nameserver at localhost:" .. nobody .. ": "), e.message)
    assert.truthy(e.message:find("; no answer to a broadcast on UDP port " .. bcport .. "$"), e.message)
  end)

  it("binds a free port with --port 0 and says which", function()
    local p = proc.spawn({ proc.bin, "ns", "--port", "0" })
    finally(function() proc.stop(p) end)
    local port = tonumber(pyro4.wait_output(p, "URI = PYRO:Pyro%.NameServer@127%.0%.0%.1:(%d+)\n", 10, "springrun ns"))
    assert.is_true(port > 0)
    assert.is_true(proc.port_open("127.0.0.1", port))
  end)

  it("fails with exit 1 naming the address when the port is taken", function()
    local p, port = pyro4.start_springrun_ns()
    finally(function() proc.stop(p) end)
    local out, ok, code = proc.run(proc.bin .. " ns --port " .. port .. " 2>&1")
    assert.is_falsy(ok)
    assert.are.equal(1, code)
    assert.truthy(out:find("^springrun ns: cannot start the name server: "), out)
    assert.truthy(out:find("127.0.0.1:" .. port, 1, true), out)
  end)
end)
