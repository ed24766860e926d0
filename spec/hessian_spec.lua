-- springrun.hessian: the Hessian codec against the 346 vectors captured from
-- Caucho Hessian 4.0.38 (spec/fixtures/hessian-vectors.json), the forms the
-- wire notes name, the error texts with their offsets, and the limits.
local hessian = require "springrun.hessian"
local json = require "springrun.json"
local codec = require "helpers.codec"

local scalar_same = codec.comparer()

-- Deep equality for decoded graphs: also the Hessian kind and Java type of
-- each table, and it follows cycles (a pair of tables seen once is assumed
-- equal on the second visit).
local function same(a, b, path, seen)
  path, seen = path or "value", seen or {}
  if type(a) ~= "table" or type(b) ~= "table" then return scalar_same(a, b, path) end
  seen[a] = seen[a] or {}
  if seen[a][b] then return true end
  seen[a][b] = true
  if hessian.kind(a) ~= hessian.kind(b) then
    return false, path .. ": kind " .. tostring(hessian.kind(a)) .. " vs " .. tostring(hessian.kind(b))
  end
  if hessian.type_of(a) ~= hessian.type_of(b) then
    return false, path .. ": type " .. tostring(hessian.type_of(a)) .. " vs " .. tostring(hessian.type_of(b))
  end
  for k, v in pairs(a) do
    local ok, why = same(v, b[k], path .. "." .. tostring(k), seen)
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. " missing" end
  end
  return true
end

local function assert_same(expected, got)
  local ok, why = same(expected, got)
  assert(ok, why)
end

local function unhex(x)
  return (x:gsub("%s", ""):gsub("..", function(c) return string.char(tonumber(c, 16)) end))
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function load_vectors()
  local f = assert(io.open("spec/fixtures/hessian-vectors.json", "rb"))
  local v = json.decode(f:read("a"))
  f:close()
  return v
end

-- Vectors whose re-encoding is a different (equivalent) byte string, and why.
-- Every other vector re-encodes to exactly the captured bytes.
local NOT_CANONICAL = {
  -- Lua has one integer type: a long that fits in 32 bits goes back as an int
  ["value.long"] = "long",
  ["value.long[] 1"] = "long",
  -- Short/Byte/Float arrive unwrapped from their *Handle objects
  ["value.short 5"] = "handle", ["value.byte -3"] = "handle", ["value.float 1.5f"] = "handle",
  ["value.float 0.1f"] = "handle", ["h2out.call_short_float_byte"] = "handle",
  ["h2out.reply_float_2_5"] = "handle", ["h2out.reply_short_7"] = "handle",
  -- an iterator's variable-length list goes back as a fixed-length one
  ["value.iterator"] = "variable list",
  -- a LinkedHashMap's order is not kept by a Lua table
  ["java_default.echo_map"] = "map order", ["java_h2req.echo_map"] = "map order",
  -- hand-built inputs in a longer form than the writer's
  ["raw.h2_echo_double"] = "long form", ["edge.h2_minor_version_1"] = "minor version",
}

local function not_canonical(name)
  return NOT_CANONICAL[name] or NOT_CANONICAL[name:match("^(value%.long) ")]
end

-- Vectors that are not Hessian (the peer's HTTP 500 text bodies) or that
-- Java itself refuses, with the error each gives.
local REFUSED = {
  ["java_default.concat1/reply"] = "hessian: not a Hessian reply: it starts with code 0x63 at offset 0",
  ["edge.bare_C_no_envelope/request"] = "hessian: not a Hessian call: it starts with code 0x43 at offset 0",
  ["edge.bare_C_no_envelope/reply"] = "hessian: not a Hessian reply: it starts with code 0x6a at offset 0",
  ["edge.utf8_4byte_string/request"] = "hessian: invalid UTF-8 in a string at offset 12",
  ["edge.utf8_4byte_string/reply"] = "hessian: not a Hessian reply: it starts with code 0x63 at offset 0",
}

local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return e
end

describe("springrun.hessian #unit", function()
  describe("the captured vectors", function()
    local vectors = load_vectors()

    it("has all 346 of them", function()
      assert.equal(346, #vectors)
    end)

    it("decodes every value and re-encodes it to the captured bytes (or an equal value)", function()
      local exact, equal = 0, 0
      for _, v in ipairs(vectors) do
        if v.direction == "value-h2" or v.direction == "value-h1" then
          local bytes = unhex(v.hex)
          local h1 = v.direction == "value-h1"
          local val = hessian.decode(bytes, { version = h1 and 1 or 2 })
          local again = hessian.encode(val)
          if not h1 and not not_canonical(v.name) then
            assert.equal(v.hex, hex(again), v.name)
            exact = exact + 1
          else
            -- Hessian 2 has no -0.0 (the writer's 5b): the one value that changes
            if v.name == "value.double -0.0" then val = 0.0 end
            local ok, why = same(val, hessian.decode(again))
            assert(ok, v.name .. ": " .. tostring(why))
            equal = equal + 1
          end
        end
      end
      assert.equal(228, exact + equal)
      assert.is_true(exact >= 90, "exact re-encodings: " .. exact)
    end)

    it("decodes every call and reply, and re-encodes the Hessian 2 ones", function()
      local n = 0
      for _, v in ipairs(vectors) do
        local bytes = unhex(v.hex)
        local refused = REFUSED[v.name .. "/" .. v.direction]
        if refused then
          local f = v.direction == "request" and hessian.decode_call or hessian.decode_reply
          assert.equal(refused, err_of(f, bytes))
        elseif v.direction == "request" then
          local method, args, version = hessian.decode_call(bytes)
          assert.equal(bytes:sub(1, 1) == "H" and 2 or 1, version)
          assert.is_string(method)
          if version == 2 then
            local again = hessian.encode_call(method, table.unpack(args, 1, args.n))
            if not not_canonical(v.name) then assert.equal(v.hex, hex(again), v.name) end
            assert_same(args, select(2, hessian.decode_call(again)))
          end
          n = n + 1
        elseif v.direction == "reply" then
          local ok, val, version = hessian.decode_reply(bytes)
          assert.equal(bytes:sub(1, 1) == "H" and 2 or 1, version)
          if version == 2 then
            local again
            if ok then
              again = hessian.encode_reply(val)
            else
              again = hessian.encode_fault(val.code, val.message, val.detail)
            end
            if not not_canonical(v.name) then assert.equal(v.hex, hex(again), v.name) end
          end
          n = n + 1
        end
      end
      assert.equal(112, n)
    end)

    it("reads what the vectors' notes say they carry", function()
      local by = {}
      for _, v in ipairs(vectors) do by[v.name .. "/" .. v.direction] = unhex(v.hex) end
      local function reply(name) return select(2, hessian.decode_reply(by[name .. "/reply"])) end
      assert.equal("data:hello", reply("raw.h2_get_data"))
      assert.equal(1999997, reply("raw.h2_add_big"))
      assert.equal(1.5, reply("raw.h2_echo_double"))
      assert.equal(1099511627776, reply("raw.h2_echo_long"))
      assert.equal(1577836800001, reply("raw.h2_echo_date").ms)
      assert.equal("abc", reply("raw.h2_echo_binary").data)
      assert.equal("a\u{1F600}", reply("raw.h2_echo_emoji"))
      assert.equal("data:hello", reply("java_h1reply.get_data"))
      assert.same({ k = { 1, "x" } }, reply("raw.h2_echo_map_list"))
      local ok, f = hessian.decode_reply(by["raw.h2_fail/reply"])
      assert.is_false(ok)
      assert.equal("ServiceException", f.code)
      assert.equal("oops", f.message)
      assert.equal("HessianPeerServer$PeerException", f.exception)
      ok, f = hessian.decode_reply(by["java_h1reply.fail/reply"])
      assert.is_false(ok)
      assert.equal("boom &lt;&amp;&gt;", f.message)
      ok, f = hessian.decode_reply(by["raw.h2_no_method/reply"])
      assert.equal("The service has no method named: nope", f.message)
      assert.is_nil(f.detail)
      -- Hessian 1 call: args until 'z'
      local m, args, version = hessian.decode_call(by["java_default.echo_list/request"])
      assert.equal("echo", m)
      assert.equal(1, version)
      assert_same(hessian.list({ 1, "two", 3.5, hessian.null, true }), args[1])
      -- Hessian 1 ref R 00000001: the map, shared
      local l = select(2, hessian.decode_call(by["edge.h1_call_echo_ref/request"]))[1]
      assert.equal(l[1], l[2])
    end)

    it("keeps Java types, classes, field orders and back-references", function()
      local pts = hessian.decode(unhex("73075b6f626a656374430d456e6344756d7024506f696e7492017801796095965191609798"))
      assert.equal("[object", hessian.type_of(pts))
      assert.equal("EncDump$Point", hessian.type_of(pts[1]))
      assert.same({ "x", "y" }, hessian.fields_of(pts[1]))
      assert.equal(pts[1], pts[2])
      assert.equal(7, pts[3].x)
      local pair = hessian.decode(unhex("430c456e6344756d7024506169729201610162605190017a"))
      assert.equal(pair, pair.a) -- self-reference
      assert.equal("z", pair.b)
      assert.equal("object", hessian.kind(pair))
      local lists = hessian.decode(unhex("7a71146a6176612e7574696c2e4c696e6b65644c69737491719092"))
      assert.equal("java.util.LinkedList", hessian.type_of(lists[2]))
      assert.equal("java.util.TreeMap", hessian.type_of(hessian.decode(unhex("4d116a6176612e7574696c2e547265654d61700161915a"))))
      assert.equal("java.util.concurrent.TimeUnit",
        hessian.type_of(hessian.decode(unhex("431d6a6176612e7574696c2e636f6e63757272656e742e54696d65556e697491046e616d6560075345434f4e4453"))))
    end)
  end)

  describe("writes the forms Hessian2Output writes", function()
    local cases = {
      { 0, "90" }, { -16, "80" }, { 47, "bf" }, { 48, "c830" }, { -17, "c7ef" }, { 2047, "cfff" },
      { 2048, "d40800" }, { -262144, "d00000" }, { 262144, "4900040000" },
      { 2147483648, "4c0000000080000000" }, { math.mininteger, "4c8000000000000000" },
      { hessian.long(0), "e0" }, { hessian.long(15), "ef" }, { hessian.long(16), "f810" },
      { hessian.long(-9), "f7f7" }, { hessian.long(2048), "3c0800" }, { hessian.long(262144), "5900040000" },
      { 0.0, "5b" }, { -0.0, "5b" }, { 1.0, "5c" }, { -128.0, "5d80" }, { 128.0, "5e0080" },
      { 32768.0, "5f01f40000" }, { 1.5, "5f000005dc" }, { 0.1, "5f00000064" },
      { 1e300, "447e37e43c8800759c" }, { 2147483.648, "444140624dd2f1a9fc" },
      { 1 / 0, "447ff0000000000000" }, { 1e10, "444202a05f20000000" },
      { "", "00" }, { "\u{e9}", "01c3a9" }, { "\u{20ac}", "01e282ac" }, { "\u{1F600}", "02eda0bdedb880" },
      { hessian.binary(""), "20" }, { hessian.binary("abc"), "23616263" },
      { hessian.date(0), "4b00000000" }, { hessian.date(1577836800001), "4a0000016f5e66e801" },
      { hessian.date(6000000000000000), "4a001550f7dca70000" },
      { {}, "485a" }, { { a = 1 }, "480161915a" }, { { 1, 2 }, "7a9192" },
      { hessian.list(), "78" }, { hessian.list({ 1, 2, 3 }, "[int"), "73045b696e74919293" },
      { hessian.map({ a = 1 }, "java.util.TreeMap"), "4d116a6176612e7574696c2e547265654d61700161915a" },
      { hessian.object("EncDump$Point", { x = 1, y = 2 }), "430d456e6344756d7024506f696e749201780179609192" },
      { hessian.object("P", { y = 2, x = 1 }, { "y", "x" }), "4301509201790178609291" },
      { { 1, 2, 3, 4, 5, 6, 7, 8 }, "58989192939495969798" },
    }
    for _, c in ipairs(cases) do
      it(string.format("%s -> %s", tostring(c[1]), c[2]), function()
        assert.equal(c[2], hex(hessian.encode(c[1])))
      end)
    end

    it("chunks strings at 32768 UTF-16 units, never between a surrogate pair", function()
      local s = hex(hessian.encode(string.rep("x", 32769)))
      assert.equal("528000", s:sub(1, 6))
      assert.equal("0178", s:sub(-4))
      s = hex(hessian.encode(string.rep("x", 70000)))
      assert.equal("528000", s:sub(1, 6))
      assert.equal("528000", s:sub(7 + 65536, 12 + 65536))
      assert.equal("531170", s:sub(13 + 2 * 65536, 18 + 2 * 65536))
      local odd = string.rep("x", 32767) .. "\u{1F600}" .. "y"
      s = hessian.encode(odd)
      assert.equal("527fff", hex(s:sub(1, 3)))
      assert.equal(odd, hessian.decode(s))
      assert.equal(string.rep("\u{e9}", 40000), hessian.decode(hessian.encode(string.rep("\u{e9}", 40000))))
    end)

    it("chunks large binaries and reads chunks of any size", function()
      local data = string.rep("\1\2\3", 30000)
      local s = hessian.encode(hessian.binary(data))
      assert.equal("41ffff", hex(s:sub(1, 3)))
      assert.equal(data, hessian.decode(s).data)
      -- 41 0003 "abc" then a compact final chunk
      assert.equal("abcde", hessian.decode(unhex("41000361626322 6465")).data)
    end)

    it("sends shared and cyclic Lua tables once, then as back-references", function()
      local shared = { 1 }
      assert.equal("7a79915191", hex(hessian.encode({ shared, shared })))
      local bean = hessian.object("Node", { name = "a" }, { "name", "next" })
      bean.next = bean
      local s = hessian.encode(bean)
      assert.equal("43044e6f64659204" .. hex("name") .. "04" .. hex("next") .. "6001615190", hex(s))
      local back = hessian.decode(s)
      assert.equal(back, back.next)
      local t = {}
      t.self = t
      local u = hessian.decode(hessian.encode(t))
      assert.equal(u, u.self)
    end)

    it("writes one class definition per class and field list, whichever tables carry them", function()
      local F = { "x" }
      local list = { hessian.object("A", { x = 1 }, F), hessian.object("B", { x = 2 }, F),
        hessian.object("A", { x = 3 }, F), hessian.object("A", { x = 4 }, { "x" }),
        hessian.object("A", { x = 5, y = 6 }, { "x", "y" }), hessian.object("A", { x = 7 }) }
      assert.equal("7e" .. "430141910178" .. "6091" .. "430142910178" .. "6192" .. "6093" .. "6094"
        .. "43014192017801796295" .. "96" .. "6097", hex(hessian.encode(list)))
      -- decoded objects (one metatable per class) go back as they came
      local back = hessian.decode(hessian.encode(list))
      assert.equal(getmetatable(back[1]), getmetatable(back[3]))
      assert.equal(hex(hessian.encode(list)), hex(hessian.encode(back)))
    end)

    it("writes instances sharing a metatable as instances with their own, nested or inherited", function()
      -- P's instances share one metatable; Q's reads its fields through __index
      local P = { __hessian = "object", __jtype = "P", __fields = { "x", "kid" } }
      local Q = setmetatable({}, { __index = { __hessian = "object", __jtype = "Q", __fields = { "y" } } })
      local function p(x, kid) return setmetatable({ x = x, kid = kid }, P) end
      local function q(y) return setmetatable({ y = y }, Q) end
      local function op(x, kid) return hessian.object("P", { x = x, kid = kid }, { "x", "kid" }) end
      local function oq(y) return hessian.object("Q", { y = y }, { "y" }) end
      local a, oa = p(9), op(9)
      local shared = { p(1), p(2, q(3)), q(4), p(5, p(6, q(7))), q(8), a, p(10, a), { a, q(11) } }
      local own = { op(1), op(2, oq(3)), oq(4), op(5, op(6, oq(7))), oq(8), oa, op(10, oa), { oa, oq(11) } }
      assert.equal(hex(hessian.encode(own)), hex(hessian.encode(shared)))
      -- another message starts afresh: the definition is written again
      assert.equal(hex(hessian.encode(op(1))), hex(hessian.encode(p(1))))
      assert.equal(hex(hessian.encode({ op(1), op(2) })), hex(hessian.encode({ p(1), p(2) })))
    end)

    it("names the field it cannot send, in instances sharing a metatable and nested ones", function()
      -- the encoder finds a field's name again by its index in __fields
      -- (on the first instance, on later ones sharing the metatable, and
      -- after a nested object of another class took over the cache)
      local P = { __hessian = "object", __jtype = "P", __fields = { "x", "kid" } }
      local Q = { __hessian = "object", __jtype = "Q", __fields = { "y", "z" } }
      local function p(x, kid) return setmetatable({ x = x, kid = kid }, P) end
      local function q(y, z) return setmetatable({ y = y, z = z }, Q) end
      assert.equal("hessian: cannot encode a function value at [1].kid",
        err_of(hessian.encode, { p(1, print) }))
      assert.equal("hessian: cannot encode a function value at [2].x",
        err_of(hessian.encode, { p(1), p(print) }))
      assert.equal("hessian: cannot encode a function value at [2].kid.z",
        err_of(hessian.encode, { p(1), p(2, q(3, print)) }))
      assert.equal("hessian: cannot encode a function value at [2].kid.kid.z",
        err_of(hessian.encode, { p(1), p(2, p(3, q(4, print))) }))
      assert.equal("hessian: cannot encode a function value at [2].kid.x",
        err_of(hessian.encode, { p(1), p(2, p(print, q(4))) }))
      -- an object of more than 16 fields (written one field at a time)
      local names, wide = {}, {}
      for i = 1, 20 do names[i], wide["f" .. i] = "f" .. i, i end
      local W = { __hessian = "object", __jtype = "W", __fields = names }
      wide.f18 = print
      assert.equal("hessian: cannot encode a function value at [2].f18",
        err_of(hessian.encode, { setmetatable({ f1 = 1 }, W), setmetatable(wide, W) }))
      wide.f18 = 18
      local back = hessian.decode(hessian.encode({ setmetatable({ f1 = 1 }, W), setmetatable(wide, W) }))
      for i = 1, 20 do assert.equal(i, back[2]["f" .. i]) end
      assert.equal(1, back[1].f1)
      assert.is_nil(back[1].f2)
      -- and the decoder gives each nested instance its own class's fields
      local back = hessian.decode(hessian.encode({ p(1), p(2, q(3, p(4, q(5)))), q(6), p(7) }))
      assert.equal(4, back[2].kid.z.x)
      assert.equal(5, back[2].kid.z.kid.y)
      assert.same({ "y", "z" }, getmetatable(back[3]).__fields)
      assert.equal(7, back[4].x)
      assert.equal(getmetatable(back[1]), getmetatable(back[4]))
    end)

    it("reads many class definitions, each instance with its own class and fields", function()
      local list = {}
      for round = 1, 2 do
        for i = 1, 40 do
          list[#list + 1] = hessian.object("C" .. i, { ["f" .. i] = round * 100 + i, g = i })
        end
      end
      local back = hessian.decode(hessian.encode(list))
      for k = 1, 80 do
        local i, round = (k - 1) % 40 + 1, (k - 1) // 40 + 1
        assert.equal("C" .. i, hessian.type_of(back[k]))
        assert.same({ "f" .. i, "g" }, hessian.fields_of(back[k]))
        assert.equal(round * 100 + i, back[k]["f" .. i])
        assert.equal(i, back[k].g)
      end
      assert.equal(getmetatable(back[7]), getmetatable(back[47]))
    end)

    it("writes calls, replies and faults", function()
      assert.equal("4802004303616464929293", hex(hessian.encode_call("add", 2, 3)))
      assert.equal("480200430166924e4e", hex(hessian.encode_call("f", nil, nil)))
      assert.equal("4802005295", hex(hessian.encode_reply(5)))
      assert.equal("48020046480463" .. hex("ode") .. "0143076d657373616765016d5a",
        hex(hessian.encode_fault("C", "m")))
      local ok, f = hessian.decode_reply(hessian.encode_fault("ServiceException", "bad",
        hessian.exception("java.lang.IllegalStateException", "bad")))
      assert.is_false(ok)
      assert.same({ "ServiceException", "bad", "java.lang.IllegalStateException" }, { f.code, f.message, f.exception })
      assert.equal("bad", f.detail.detailMessage)
    end)
  end)

  describe("refuses", function()
    local decode_errors = {
      { "", "hessian: truncated message: 1 more bytes expected at offset 0 (end of input)" },
      { "40", "hessian: unknown Hessian 2 code 0x40 at offset 0" },
      { "49000000", "hessian: truncated message: 1 more bytes expected at offset 1" },
      { "5a", "hessian: unexpected end of list or map, code 0x5a at offset 0" },
      { "7a91", "hessian: list length 2 with 1 bytes remaining at offset 0" },
      { "58d00010", "hessian: list length -262128 with 0 bytes remaining at offset 1" },
      { "57915a5a", "hessian: unexpected bytes after the message at offset 3" },
      { "489191", "hessian: truncated message: 1 more bytes expected at offset 3 (end of input)" },
      { "4891915a00", "hessian: unexpected bytes after the message at offset 4" },
      { "48915a", "hessian: map key without a value at offset 2" },
      { "5191", "hessian: reference #1 to no value (0 so far) at offset 0" },
      { "7a915192", "hessian: reference #2 to no value (1 so far) at offset 2" },
      { "6091", "hessian: object of undefined class #0 (0 defined) at offset 0" },
      { "43016192", "hessian: class definition with 2 fields in 0 remaining bytes at offset 3" },
      { "7190", "hessian: type index 0 out of range (0 types) at offset 1" },
      { "02c328", "hessian: invalid UTF-8 in a string at offset 1" },
      { "31ff", "hessian: truncated message: 511 more bytes expected at offset 2 (end of input)" },
      { "5200016191", "hessian: expected a string chunk, got code 0x91 at offset 4" },
      { "4844fff80000000000000091 5a", "hessian: NaN as a map key at offset 1" },
      { "43016178", "hessian: expected an int (field count), got code 0x78 at offset 3" },
    }
    for _, c in ipairs(decode_errors) do
      it("bytes " .. c[1] .. " with: " .. c[2], function()
        assert.equal(c[2], err_of(hessian.decode, unhex(c[1])))
      end)
    end

    local envelope_errors = {
      { "decode_reply", "480200430361646495",
        "hessian: expected 'R' (reply) or 'F' (fault) after H 02 00, got code 0x43 at offset 3" },
      { "decode_reply", "7201004e", "hessian: expected 'z' (end of message) at offset 4 (end of input)" },
      { "decode_reply", "4802004691", "hessian: expected the fault's map, got code 0x91 at offset 4" },
      { "decode_call", "48020052", "hessian: expected 'C' (call) after H 02 00, got code 0x52 at offset 3" },
      { "decode_call", "6302006d000361646491", "hessian: unknown Hessian 1 code 0x91 at offset 9" },
      { "decode_call", "4802004303616464a0", "hessian: argument count out of range at offset 8" },
    }
    for _, c in ipairs(envelope_errors) do
      it(c[1] .. " of " .. c[2] .. " with: " .. c[3], function()
        assert.equal(c[3], err_of(hessian[c[1]], unhex(c[2])))
      end)
    end

    it("values it cannot send, naming the path", function()
      assert.equal("hessian: cannot encode a function value at [2].cb",
        err_of(hessian.encode, { 1, { cb = print } }))
      assert.equal("hessian: invalid UTF-8 at byte 1 of a string (send raw bytes with hessian.binary(s)) at .k",
        err_of(hessian.encode, { k = "a\xff" }))
      assert.equal("hessian: cannot encode a thread value (argument 2)",
        err_of(hessian.encode_call, "m", 1, coroutine.create(print)))
      assert.equal("hessian.object: expected a string class name, got nil", err_of(hessian.object))
    end)
  end)

  describe("limits, checked before allocating", function()
    it("depth", function()
      local deep = string.rep("79", 5) .. "90"
      assert.same(hessian.list({ hessian.list({ hessian.list({ hessian.list({ hessian.list({ 0 }) }) }) }) }),
        hessian.decode(unhex(deep)))
      assert.equal("hessian: nesting too deep (more than 3 levels) at offset 3",
        err_of(hessian.decode, unhex(deep), { max_depth = 3 }))
      local t = {}
      for _ = 1, 1001 do t = { t } end
      assert.matches("nesting too deep %(more than 1000 levels%)", err_of(hessian.encode, t))
    end)

    it("on objects of a known class in the compact form, as on any value", function()
      -- the reader takes these inline; at a limit or an error the general
      -- step does, with the same message
      local def = "43014191017" .. "8" -- C "A", 1 field "x"
      assert.equal("hessian: nesting too deep (more than 2 levels) at offset 8",
        err_of(hessian.decode, unhex(def .. "60606091"), { max_depth = 2 }))
      assert.equal(1, hessian.decode(unhex(def .. "60606091"), { max_depth = 3 }).x.x.x)
      assert.equal("hessian: too many elements (more than 4) at offset 9",
        err_of(hessian.decode, unhex("7a" .. def .. "6060916092"), { max_elements = 4 }))
      assert.equal("hessian: object of undefined class #1 (1 defined) at offset 9",
        err_of(hessian.decode, unhex("7a" .. def .. "609161")))
      assert.equal("hessian: truncated message: 1 more bytes expected at offset 10 (end of input)",
        err_of(hessian.decode, unhex("7a" .. def .. "609160")))
    end)

    it("elements", function()
      assert.equal("hessian: too many elements (more than 3) at offset 3",
        err_of(hessian.decode, unhex("7b919293"), { max_elements = 3 }))
      -- a declared length is checked against the limit before the table is made
      assert.equal("hessian: too many elements (more than 10) at offset 1",
        err_of(hessian.decode, unhex("58 49 00 00 00 14") .. string.rep("\x90", 20), { max_elements = 10 }))
      -- and against the bytes that remain
      assert.equal("hessian: list length 2147483647 with 0 bytes remaining at offset 1",
        err_of(hessian.decode, unhex("58 49 7f ff ff ff")))
    end)

    it("message size", function()
      assert.equal("hessian: message too large (5 bytes, limit 4)",
        err_of(hessian.decode_reply, unhex("4802005295"), { max_bytes = 4 }))
    end)

    it("string and binary size after joining chunks", function()
      local s = hessian.encode(string.rep("x", 40000))
      assert.equal("hessian: string longer than 32768 bytes at offset 0",
        err_of(hessian.decode, s, { max_string = 32768 }))
      local b = hessian.encode(hessian.binary(string.rep("x", 70000)))
      assert.equal("hessian: binary longer than 65536 bytes at offset 0",
        err_of(hessian.decode, b, { max_string = 65536 }))
    end)
  end)
end)
