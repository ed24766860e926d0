-- springrun.uri: the URLs a proxy accepts, and clear errors for the rest.
local uri = require "springrun.uri"
local naming = require "springrun.naming"

describe("springrun.uri #unit", function()
  local good = {
    { "PYRO:ServiceName@127.0.0.1:7000", "ServiceName", "127.0.0.1", 7000, "PYRO:ServiceName@127.0.0.1:7000" },
    { "pyro:obj@localhost:7766", "obj", "localhost", 7766, "PYRO:obj@localhost:7766" },
    { "PYRO:a.b.c@host.example:1", "a.b.c", "host.example", 1, "PYRO:a.b.c@host.example:1" },
    { "PYRO:x@[::1]:65535", "x", "::1", 65535, "PYRO:x@[::1]:65535" },
    { "PYROLOC://127.0.0.1:7000/ServiceName", "ServiceName", "127.0.0.1", 7000, "PYRO:ServiceName@127.0.0.1:7000" },
    { "PYROLOC://localhost:7766/ServiceName", "ServiceName", "localhost", 7766, "PYRO:ServiceName@localhost:7766" },
    { "pyroloc://[::1]:9/N", "N", "::1", 9, "PYRO:N@[::1]:9" },
  }
  for _, case in ipairs(good) do
    it("parses " .. case[1], function()
      local u = assert(uri.parse(case[1]))
      assert.are.equal("PYRO", u.protocol)
      assert.are.equal(case[2], u.object)
      assert.are.equal(case[3], u.host)
      assert.are.equal(case[4], u.port)
      assert.are.equal("integer", math.type(u.port))
      assert.are.equal(case[5], u.url)
      assert.are.equal(case[1], u.original)
    end)
  end

  local bad = {
    { "ServiceName", "no protocol" },
    { "HTTP://x:1/y", "unknown protocol 'HTTP'" },
    { "PYRO:ServiceName", "no location" },
    { "PYRO:@127.0.0.1:7000", "the object name is empty" },
    { "PYRO:x@127.0.0.1", "the location must be host:port" },
    { "PYRO:x@127.0.0.1:0", "invalid port '0'" },
    { "PYRO:x@127.0.0.1:65536", "invalid port '65536'" },
    { "PYRO:x@127.0.0.1:70a", "invalid port '70a'" },
    { "PYRO:x@:7000", "the host is empty" },
    { "PYRO:x@./u:/tmp/sock", "unix domain sockets are not supported" },
    { "PYROLOC://127.0.0.1:7000", "expected PYROLOC://host:port/name" },
    { "PYROLOC://127.0.0.1:7000/", "the object name is empty" },
    { "PYRONAME:", "invalid uri" },
    { "PYRONAME:a b@ns:9090", "invalid uri" },
    { "PYRONAME:x@ns:70a", "invalid port in uri, port=70a" },
    { "PYRONAME:x@ns:0", "invalid port '0'" },
    { "PYROMETA:blue@ns:65536", "invalid port '65536'" },
    { "PYRONAME:x@:9090", "the host is empty" },
    { "PYRONAME:x@./u:/tmp/ns", "unix domain sockets are not supported" },
    { "PYRONAMES:x@ns:9090", "unknown protocol 'PYRONAMES'" },
    { " PYRO:x@h:1", "surrounding whitespace" },
  }
  for _, case in ipairs(bad) do
    it("rejects " .. case[1] .. " naming the URL and the problem", function()
      local u, msg = uri.parse(case[1])
      assert.is_nil(u)
      assert.are.equal(1, (msg:find("invalid Pyro URL '" .. case[1] .. "': ", 1, true)))
      assert.truthy(msg:find(case[2], 1, true), msg)
    end)
  end

  -- name server URLs: the parts springrun.naming.parse_uri finds (its
  -- Pyro4 rules), the URL as Pyro4 prints it
  local named = {
    { "PYRONAME:ServiceName", "PYRONAME", "ServiceName", nil, nil, "PYRONAME:ServiceName" },
    { "PYRONAME:ServiceName@ns.example:9091", "PYRONAME", "ServiceName", "ns.example", 9091,
      "PYRONAME:ServiceName@ns.example:9091" },
    { "pyroname:a.b@127.0.0.1", "PYRONAME", "a.b", "127.0.0.1", 9090, "PYRONAME:a.b@127.0.0.1:9090" },
    { "PYRONAME:x@[::1]:7", "PYRONAME", "x", "::1", 7, "PYRONAME:x@[::1]:7" },
    { "PYROMETA:blue,round@127.0.0.1:9090", "PYROMETA", { "blue", "round" }, "127.0.0.1", 9090,
      "PYROMETA:blue,round@127.0.0.1:9090" },
    { "PyroMeta:class:Pyro4.naming.NameServer", "PYROMETA", { "class:Pyro4.naming.NameServer" }, nil, nil,
      "PYROMETA:class:Pyro4.naming.NameServer" },
  }
  for _, case in ipairs(named) do
    it("parses " .. case[1] .. " into its name server parts, as springrun.naming does", function()
      local u = assert(uri.parse(case[1]))
      assert.are.equal(case[2], u.protocol)
      assert.are.same(case[3], u.object)
      assert.are.equal(case[4], u.host)
      assert.are.equal(case[5], u.port)
      if case[5] then assert.are.equal("integer", math.type(u.port)) end
      assert.are.equal(case[6], u.url)
      assert.are.equal(case[1], u.original)
      local n = assert(naming.parse_uri(case[1]))
      for k, v in pairs(n) do assert.are.same(v, u[k], k) end
    end)
  end

  it("tells whether a name server URL gave its port (naming.resolve then uses ns_port)", function()
    assert.is_true(assert(uri.parse("PYRONAME:x@ns")).default_port)
    assert.is_false(assert(uri.parse("PYRONAME:x@ns:9090")).default_port)
    assert.is_nil(assert(uri.parse("PYRONAME:x")).default_port)
  end)

  it("rejects a URL that is not a string", function()
    local u, msg = uri.parse(7000)
    assert.is_nil(u)
    assert.are.equal("invalid Pyro URL '7000': a URL must be a string, got number", msg)
  end)
end)
