-- springrun.uri: the URLs a proxy accepts, and clear errors for the rest.
local uri = require "springrun.uri"

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
    { "PYRONAME:ServiceName", "PYRONAME URLs (name server lookups) are not supported yet" },
    { "PYRONAME:ServiceName@ns:9090", "not supported yet" },
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

  it("rejects a URL that is not a string", function()
    local u, msg = uri.parse(7000)
    assert.is_nil(u)
    assert.are.equal("invalid Pyro URL '7000': a URL must be a string, got number", msg)
  end)
end)
