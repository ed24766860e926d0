-- The Hessian codec against real Java: Caucho Hessian 4.0.38's
-- HessianSkeleton (spec/java/HessianTestServer.java) receives calls encoded
-- by springrun.hessian, over a fixed test-only HTTP/1.0 POST, and its
-- replies are decoded by it: every type crosses both ways (Java echoes what
-- Lua sent, and describes how it arrived), typed beans with
-- back-references come back, and faults. Caucho's own HessianProxyFactory
-- (HessianTestClient, Hessian 1 and 2 calls) checks the same server.
local hessian = require "springrun.hessian"
local java = require "helpers.java"
local proc = require "helpers.proc"

describe("springrun.hessian against Caucho Hessian 4.0.38 #interop", function()
  local port, server

  setup(function()
    port, server = java.start_server()
  end)

  teardown(function()
    if server then proc.stop(server) end
  end)

  local function call(method, ...)
    local status, body = java.post(port, "/test", hessian.encode_call(method, ...))
    assert.equal(200, status, body)
    local ok, v, version = hessian.decode_reply(body)
    assert.equal(2, version)
    return ok, v
  end

  local function echo(v)
    local ok, back = call("echo", v)
    if not ok then error("fault: " .. tostring(back.message), 2) end
    return back
  end

  it("adds and echoes scalars in every compact form", function()
    assert.same({ true, 5 }, { call("add", 2, 3) })
    for _, v in ipairs({ 0, -16, 47, 48, -2048, 2047, 2048, -262144, 262144, 2147483647,
      -2147483648, 2147483648, math.maxinteger, math.mininteger, 0.0, 1.0, -128.0, 127.0,
      32767.0, 32768.0, 1.5, 0.1, -2.25, 1e300, 2147483.648, true, false,
      "", "a", string.rep("x", 31), string.rep("x", 32), "h\u{e9}llo \u{20ac} \u{1F600}",
      string.rep("\u{1F600}", 20000), string.rep("y", 70000) }) do
      local back = echo(v)
      assert.equal(math.type(v), math.type(back))
      assert.equal(v, back)
    end
    assert.equal(hessian.null, echo(nil))
    assert.equal(2 ^ 40 | 0, select(2, call("echoLong", hessian.long(2 ^ 40 | 0))))
    assert.equal(3.25, select(2, call("echoDouble", 3.25)))
  end)

  it("echoes binaries and dates", function()
    for _, n in ipairs({ 0, 15, 16, 1023, 1024, 65535, 65536, 200000 }) do
      local data = string.rep("\0\1\255", n // 3 + 1):sub(1, n)
      local back = echo(hessian.binary(data))
      assert.equal("binary", hessian.kind(back))
      assert.equal(data, back.data)
    end
    for _, ms in ipairs({ 0, 1577836800000, 1577836800001, 6000000000000000, -60000 }) do
      local back = echo(hessian.date(ms))
      assert.equal("date", hessian.kind(back))
      assert.equal(ms, back.ms)
    end
  end)

  it("echoes lists and maps, typed and untyped, and tells how Java received them", function()
    local l = echo({ 1, "two", 3.5, hessian.null, true })
    assert.same({ 1, "two", 3.5, hessian.null, true }, l)
    assert.equal("list", hessian.kind(echo(hessian.list())))
    assert.same({ a = 1, b = { 1, 2 } }, echo({ a = 1, b = { 1, 2 } }))
    assert.equal("map", hessian.kind(echo({})))
    local ints = echo(hessian.list({ 1, 2, 3 }, "[int"))
    assert.equal("[int", hessian.type_of(ints))
    assert.same({ 1, 2, 3 }, ints)
    local tm = echo(hessian.map({ k = "v" }, "java.util.TreeMap"))
    assert.equal("java.util.TreeMap", hessian.type_of(tm))
    assert.equal("v", tm.k)
    local big = {}
    for i = 1, 1000 do big[i] = i end
    assert.same(big, echo(big))
    assert.same({ true, "java.util.ArrayList" }, { call("describe", { 1 }) })
    assert.same({ true, "java.util.HashMap" }, { call("describe", { a = 1 }) })
    assert.same({ true, "[I" }, { call("describe", hessian.list({ 1 }, "[int")) })
    assert.same({ true, "java.lang.Long" }, { call("describe", hessian.long(1)) })
    assert.same({ true, "java.lang.Integer" }, { call("describe", 1) })
    assert.same({ true, "java.util.Date" }, { call("describe", hessian.date(0)) })
    assert.same({ true, "[B" }, { call("describe", hessian.binary("x")) })
  end)

  it("sends a Lua table as a typed Java bean with a back-reference, and gets it back", function()
    local bean = hessian.object("HessianTestServer$Bean", { name = "lua", count = 3 })
    bean.self = bean
    bean.items = { bean, "y" }
    assert.same({ true, "HessianTestServer$Bean(lua,3,true)" }, { call("describe", bean) })
    local back = echo(bean)
    assert.equal("HessianTestServer$Bean", hessian.type_of(back))
    assert.equal(back, back.self)
    assert.equal(back, back.items[1])
    assert.equal("lua", back.name)
    -- shared (not cyclic) tables stay shared through Java
    local shared = { 1 }
    local pair = echo({ shared, shared })
    assert.equal(pair[1], pair[2])
  end)

  it("receives Java's typed beans with back-references", function()
    local ok, b = call("makeBean", "java", 7)
    assert.is_true(ok)
    assert.equal("HessianTestServer$Bean", hessian.type_of(b))
    assert.equal("java", b.name)
    assert.equal(7, b.count)
    assert.equal(b, b.self)
    assert.equal(b, b.items[1])
    assert.equal("x", b.items[2])
  end)

  it("receives faults: the exception, its message and class", function()
    local ok, f = call("fail", "boom <&>")
    assert.is_false(ok)
    assert.equal("ServiceException", f.code)
    assert.equal("boom &lt;&amp;&gt;", f.message)
    assert.equal("java.lang.IllegalStateException", f.exception)
    ok, f = call("nope")
    assert.is_false(ok)
    assert.equal("NoSuchMethodException", f.code)
    assert.equal("The service has no method named: nope", f.message)
  end)

  it("serves Caucho's own client (Hessian 1 and Hessian 2 calls)", function()
    for _, h2 in ipairs({ false, true }) do
      local out, err, code = java.run_client("http://127.0.0.1:" .. port .. "/test", h2)
      assert.equal(0, code, err)
      assert.equal("add 5\necho h\u{e9}llo \u{1F600}\nbean bean 7 true true\n"
        .. "fault java.lang.IllegalStateException boom\n", out)
    end
  end)
end)
