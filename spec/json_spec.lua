-- springrun.json and the C JSON payload codec (springrun.core): exact text
-- out, exact values in, every refusal with its exact message, and oracle
-- comparisons against lua-cjson and Python's json module (a real
-- /usr/bin/python3 subprocess).
--
-- Documented behaviour pinned here: integers beyond 64 bits decode as the
-- nearest float; an empty unmarked table encodes as {} (json.array({}) for
-- []); decode error offsets are 0-based byte offsets.
local json = require "springrun.json"
local core = require "springrun.core"
local cjson = require "cjson"

local codec = require "helpers.codec"

-- ---------------------------------------------------------------- helpers

local python, lines, tohex = codec.python, codec.lines, codec.tohex
local raises, ends_with = codec.raises, codec.ends_with
-- Deep equality that also checks integer vs float (array marks are not compared).
local _, assert_same = codec.comparer()

-- Test names on one line: control bytes and non-ASCII shown as escapes.
local function shown(s)
  return '"' .. s:gsub("[%c\128-\255]", function(c) return string.format("\\x%02x", c:byte()) end) .. '"'
end

-- ---------------------------------------------------------------- specs

describe("springrun.json #unit", function()
  describe("encode", function()
    local arr = json.array
    local cases = {
      { "nil", nil, "null" },
      { "null", json.null, "null" },
      { "true", true, "true" },
      { "false", false, "false" },
      { "zero", 0, "0" },
      { "maxinteger", math.maxinteger, "9223372036854775807" },
      { "mininteger", math.mininteger, "-9223372036854775808" },
      { "float 1.0 keeps .0", 1.0, "1.0" },
      { "float -2.0", -2.0, "-2.0" },
      { "0.1 + 0.2 exactly", 0.1 + 0.2, "0.30000000000000004" },
      { "0.1", 0.1, "0.1" },
      { "1e15 fixed", 1e15, "1000000000000000.0" },
      { "1e16 exponent", 1e16, "1e+16" },
      { "1e-4 fixed", 1e-4, "0.0001" },
      { "1e-5 exponent", 1e-5, "1e-05" },
      { "2^63 as float", 2.0 ^ 63, "9.223372036854776e+18" },
      { "largest double", 1.7976931348623157e308, "1.7976931348623157e+308" },
      { "smallest subnormal", 5e-324, "5e-324" },
      { "negative zero", -0.0, "-0.0" },
      { "NaN", 0 / 0, "NaN" },
      { "Infinity", math.huge, "Infinity" },
      { "-Infinity", -math.huge, "-Infinity" },
      { "empty string", "", '""' },
      { "escapes", "a\"b\\c/d\n\r\t\b\f", [["a\"b\\c/d\n\r\t\b\f"]] },
      { "other control chars as \\u00xx, DEL kept", "\0\1\31\127", [["\u0000\u0001\u001f]] .. "\127" .. '"' },
      { "non-ASCII kept (ensure_ascii=False)", "h\u{e9}llo \u{1F600}", '"h\u{e9}llo \u{1F600}"' },
      { "array", { 1, 2.5, "x", true }, '[1, 2.5, "x", true]' },
      { "object", { a = 1 }, '{"a": 1}' },
      { "nested", { a = { { b = json.null } } }, '{"a": [{"b": null}]}' },
      { "empty unmarked table is {}", {}, "{}" },
      { "marked empty array is []", arr({}), "[]" },
      { "array(nil) is a new []", arr(), "[]" },
      { "marked with n keeps holes", arr({ n = 4, 1, nil, 3 }), "[1, null, 3, null]" },
      { "table.pack of no arguments", arr(table.pack()), "[]" },
      { "table.pack keeps trailing nils", arr(table.pack(1, nil, nil)), "[1, null, null]" },
      { "marked without n: up to the highest index", arr({ [1] = 1, [3] = 3 }), "[1, null, 3]" },
      { "binary form", json.binary("hello"), nil }, -- key order is free: checked below
    }
    for _, c in ipairs(cases) do
      if c[3] then
        it("writes " .. c[1] .. " as " .. c[3], function()
          assert.are.equal(c[3], json.encode(c[2]))
        end)
      end
    end

    it("writes object keys with Pyro4's separators in any order", function()
      local s = json.encode({ data = "aGVsbG8=", encoding = "base64" })
      assert.is_true(s == '{"data": "aGVsbG8=", "encoding": "base64"}'
        or s == '{"encoding": "base64", "data": "aGVsbG8="}', s)
    end)

    local errors = {
      { "a function at a path", function() return { 1, { cb = print } } end,
        "cannot encode a function value at [2].cb", "SR_ETYPE" },
      { "a function at top level", function() return print end,
        "cannot encode a function value", "SR_ETYPE" },
      { "a coroutine", function() return { co = coroutine.create(print) } end,
        "cannot encode a thread value at co", "SR_ETYPE" },
      { "a full userdata", function() return { f = io.stdout } end,
        "cannot encode a userdata value at f", "SR_ETYPE" },
      { "a key that is not an identifier", function() return { ["my key"] = { print } } end,
        'cannot encode a function value at ["my key"][1]', "SR_ETYPE" },
      { "a cycle", function() local t = {}; t.x = t; return t end,
        "cannot encode a circular reference at x", "SR_ECYCLE" },
      { "a deeper cycle", function() local t = { a = { b = {} } }; t.a.b.c = t.a; return t end,
        "cannot encode a circular reference at a.b.c", "SR_ECYCLE" },
      { "array and map keys mixed", function() return { 1, 2, x = 3 } end,
        'cannot encode a table mixing array and map keys (key "x")', "SR_ETYPE" },
      { "a sparse array", function() return { v = { [1] = 1, [3] = 3 } } end,
        "cannot encode a sparse array (2 items, highest index 3; mark it with json.array(t) " ..
        "and set t.n to send nils) at v", "SR_ETYPE" },
      { "index 0", function() return { [0] = "x" } end,
        "cannot encode an array index below 1 (key 0)", "SR_ETYPE" },
      { "a boolean key", function() return { [true] = 1 } end,
        "cannot encode a table key that is not a string (key of type boolean)", "SR_ETYPE" },
      { "a float key", function() return { [1.5] = 1 } end,
        "cannot encode a table key that is not a string (key 1.5)", "SR_ETYPE" },
      { "a table key", function() return { [{}] = 1 } end,
        "cannot encode a table key that is not a string (key of type table)", "SR_ETYPE" },
      { "a string key in a marked array", function() return json.array({ 1, x = 2 }) end,
        'cannot encode a non-index key in an array (key "x")', "SR_ETYPE" },
      { "an item beyond n", function() return json.array({ n = 1, 1, 2 }) end,
        "cannot encode an array item beyond its n (key 2)", "SR_ETYPE" },
      { "invalid UTF-8 in a value", function() return { name = "ab\xff" } end,
        "invalid UTF-8 at byte 3 of the string at name (send raw bytes with json.binary(s))", "SR_EUTF8" },
      { "a UTF-16 surrogate encoded in UTF-8", function() return { "\xed\xa0\x80" } end,
        "invalid UTF-8 at byte 1 of the string at [1] (send raw bytes with json.binary(s))", "SR_EUTF8" },
      { "an overlong sequence", function() return "\xc0\xaf" end,
        "invalid UTF-8 at byte 1 of the string (send raw bytes with json.binary(s))", "SR_EUTF8" },
      { "invalid UTF-8 in a key", function() return { ["k\xfe"] = 1 } end,
        "invalid UTF-8 at byte 2 of a table key", "SR_EUTF8" },
    }
    for _, c in ipairs(errors) do
      it("refuses " .. c[1] .. ": " .. c[3], function()
        codec.check_refusal(core.json_encode, json.encode, c[2], c[3], c[4])
      end)
    end

    it("refuses nesting deeper than 1000 levels, naming the path", function()
      local t = {}
      local cur = t
      for _ = 1, 1000 do cur[1] = {}; cur = cur[1] end
      local s, msg, name = core.json_encode(t)
      assert.is_nil(s)
      assert.are.equal("SR_EDEPTH", name)
      assert.is_truthy(msg:find("nesting too deep (more than 1000 levels) at [1][1][1]", 1, true), msg)
      cur = t
      for _ = 1, 999 do cur = cur[1] end
      cur[1] = nil -- the 1000th table is now the innermost: 1000 levels pass
      assert.are.equal(string.rep("[", 999) .. "{}" .. string.rep("]", 999), json.encode(t))
    end)

    it("encodes a table shared in two places (not a cycle) twice", function()
      local shared = { 1 }
      assert.are.equal("[[1], [1]]", json.encode({ shared, shared }))
    end)

    it("leaves the Lua stack and the caller's value unchanged after an error", function()
      local v = { 1, { print } }
      assert.is_nil(core.json_encode(v))
      assert.are.equal(print, v[2][1])
    end)
  end)

  describe("decode", function()
    local cases = {
      { "1", 1 },
      { "-0", 0 },
      { "1.0", 1.0 },
      { "-0.0", -0.0 },
      { "1e2", 100.0 },
      { "1E-2", 0.01 },
      { "9223372036854775807", math.maxinteger },
      { "-9223372036854775808", math.mininteger },
      { "9223372036854775808 (beyond 64 bits: a float)", 9223372036854775808.0, "9223372036854775808" },
      { "18446744073709551616 (2^64: a float)", 2.0 ^ 64, "18446744073709551616" },
      { "-9223372036854775809 (a float)", -9223372036854775808.0, "-9223372036854775809" },
      { "1e400 (Python reads inf)", math.huge, "1e400" },
      { "NaN", 0 / 0 },
      { "Infinity", math.huge },
      { "-Infinity", -math.huge },
      { "true", true },
      { "false", false },
      { '" \\"\\\\\\/\\b\\f\\n\\r\\t"', ' "\\/\b\f\n\r\t' },
      { '"\\u00e9\\u20AC"', "\u{e9}\u{20ac}" },
      { '"\\ud83d\\ude00" (surrogate pair)', "\u{1F600}", '"\\ud83d\\ude00"' },
      { '"\\u0000"', "\0" },
      { '"h\u{e9}llo"', "h\u{e9}llo" },
      { ' \t\r\n[ 1 , 2 ] \n', json.array({ 1, 2 }) },
      { '{"a": {"b": [null, {}]}}', { a = { b = json.array({ json.null, {} }) } } },
      { '{"a": 1, "a": 2} (last wins, as Python)', { a = 2 }, '{"a": 1, "a": 2}' },
    }
    for _, c in ipairs(cases) do
      it("reads " .. shown(c[1]), function()
        local text = c[3] or c[1]
        assert_same(c[2], json.decode(text))
      end)
    end

    it("returns null as the same value as cjson.null", function()
      assert.are.equal(cjson.null, json.decode("null"))
      assert.are.equal(cjson.null, json.null)
      assert.are.equal(json.null, require("springrun").null)
      assert.are.equal("null", json.encode(cjson.null))
    end)

    it("marks decoded arrays so [] and {} survive a round trip", function()
      local v = json.decode('{"list": [], "map": {}}')
      assert.is_true(json.is_array(v.list))
      assert.is_false(json.is_array(v.map))
      assert.is_false(json.is_array(v))
      assert.is_true(json.encode(v) == '{"list": [], "map": {}}' or json.encode(v) == '{"map": {}, "list": []}')
    end)

    local errors = {
      { "", "expected a value at offset 0 (end of input)", "SR_ESYNTAX" },
      { "   ", "expected a value at offset 3 (end of input)", "SR_ESYNTAX" },
      { "[1,]", "expected a value at offset 3", "SR_ESYNTAX" },
      { "[1 2]", "expected ',' or ']' at offset 3", "SR_ESYNTAX" },
      { "[1", "expected ',' or ']' at offset 2 (end of input)", "SR_ESYNTAX" },
      { '{"a" 1}', "expected ':' at offset 5", "SR_ESYNTAX" },
      { '{"a": 1 "b": 2}', "expected ',' or '}' at offset 8", "SR_ESYNTAX" },
      { '{"handshake": "hello", "object" "x"}', "expected ':' at offset 32", "SR_ESYNTAX" },
      { "{1: 2}", "expected a string key in double quotes at offset 1", "SR_ESYNTAX" },
      { '{"a": 1,}', "expected a string key in double quotes at offset 8", "SR_ESYNTAX" },
      { '"abc', "unterminated string starting at offset 0", "SR_ESYNTAX" },
      { '"a\1"', "invalid control character 0x01 in string at offset 2", "SR_ESYNTAX" },
      { '"a\nb"', "invalid control character 0x0a in string at offset 2", "SR_ESYNTAX" },
      { '"\\x"', "invalid escape '\\x' in string at offset 1", "SR_ESYNTAX" },
      { '"\\u12"', "invalid \\u escape (expected 4 hex digits) at offset 1", "SR_ESYNTAX" },
      { '"ab\\ud800"', "lone surrogate \\ud800 in string (not valid UTF-8) at offset 3", "SR_EUTF8" },
      { '"\\udc00\\ud800"', "lone surrogate \\udc00 in string (not valid UTF-8) at offset 1", "SR_EUTF8" },
      { '["\xff"]', "invalid UTF-8 in string at offset 2", "SR_EUTF8" },
      { '"\xe2\x82"', "invalid UTF-8 in string at offset 1", "SR_EUTF8" },
      { '"\xf4\x90\x80\x80"', "invalid UTF-8 in string at offset 1", "SR_EUTF8" },
      { "01", "invalid number (leading zero) at offset 0", "SR_ESYNTAX" },
      { "-", "invalid number (expected a digit) at offset 1 (end of input)", "SR_ESYNTAX" },
      { "-NaN", "invalid number (expected a digit) at offset 1", "SR_ESYNTAX" },
      { "1.", "invalid number (expected a digit after '.') at offset 2 (end of input)", "SR_ESYNTAX" },
      { "1e+", "invalid number (expected a digit in the exponent) at offset 3 (end of input)", "SR_ESYNTAX" },
      { ".5", "expected a value at offset 0", "SR_ESYNTAX" },
      { "nul", "expected a value at offset 0", "SR_ESYNTAX" },
      { "nan", "expected a value at offset 0", "SR_ESYNTAX" },
      { "Inf", "expected a value at offset 0", "SR_ESYNTAX" },
      { "'x'", "expected a value at offset 0", "SR_ESYNTAX" },
      { "\xef\xbb\xbf[]", "expected a value at offset 0", "SR_ESYNTAX" },
      { "[] x", "expected end of input at offset 3", "SR_ESYNTAX" },
      { "1 2", "expected end of input at offset 2", "SR_ESYNTAX" },
    }
    for _, c in ipairs(errors) do
      it("refuses " .. shown(c[1]) .. ": " .. c[2], function()
        codec.check_refusal(core.json_decode, json.decode, function() return c[1] end, c[2], c[3])
      end)
    end

    it("limits nesting depth to 200 by default, naming the offset", function()
      local ok200 = string.rep("[", 200) .. string.rep("]", 200)
      assert.is_table(json.decode(ok200))
      local deep = string.rep("[", 201) .. string.rep("]", 201)
      local v, msg, name = core.json_decode(deep)
      assert.is_nil(v)
      assert.are.equal("nesting too deep (more than 200 levels) at offset 200", msg)
      assert.are.equal("SR_EDEPTH", name)
      local err = raises(json.decode, '{"a": {"b": 1}}', { max_depth = 1 })
      assert.is_true(ends_with(err, "nesting too deep (more than 1 levels) at offset 6"), err)
    end)

    it("limits the total number of values, naming the offset", function()
      local v, msg, name = core.json_decode("[1, 2, 3]", nil, 3)
      assert.is_nil(v)
      assert.are.equal("too many elements (more than 3) at offset 7", msg)
      assert.are.equal("SR_EELEMENTS", name)
      assert_same(json.array({ 1, 2 }), json.decode("[1, 2]", { max_elements = 3 }))
      local big = "[" .. string.rep("0,", 1000000) .. "0]"
      v, msg = core.json_decode(big)
      assert.is_nil(v)
      assert.are.equal("too many elements (more than 1000000) at offset 1999999", msg)
    end)

    it("builds long lists, maps with repeated keys and deep big lists exactly", function()
      codec.check_big_containers(json.decode, core.json_is_array, '"')
    end)

    it("refuses a non-string argument clearly", function()
      local err = raises(json.decode, 42)
      assert.is_true(ends_with(err, "json.decode: expected a string, got number"), err)
    end)
  end)

  describe("round trip", function()
    local values = {
      { 1, -1, 0, math.maxinteger, math.mininteger, 2 ^ 53, 1.5, -0.0, 1e300, 5e-324 },
      { name = "x", list = json.array({}), map = {}, nested = json.array({ { a = json.array({ json.null }) } }) },
      "\u{10FFFF}\0 \u{7F}",
      json.array({ n = 3 }),
    }
    for i, v in ipairs(values) do
      it("decode(encode(v)) gives v back, integers and floats apart (#" .. i .. ")", function()
        local back = json.decode(json.encode(v))
        if type(v) == "table" and v.n then
          assert.are.equal("[null, null, null]", json.encode(v))
          assert_same(json.array({ json.null, json.null, json.null }), back)
        else
          assert_same(v, back)
        end
      end)
    end
  end)

  describe("arrays", function()
    it("marks in place and returns the same table", function()
      local t = { 1 }
      assert.are.equal(t, json.array(t))
      assert.is_true(json.is_array(t))
      assert.is_false(json.is_array({}))
      assert.is_false(json.is_array("x"))
    end)

    it("refuses to mark a table that has another metatable", function()
      local err = raises(json.array, setmetatable({}, {}))
      assert.is_truthy(err:find("json.array: the table already has a metatable", 1, true), err)
      err = raises(json.array, "x")
      assert.is_true(ends_with(err, "json.array: expected a table, got string"), err)
    end)

    it("uses the same marker through core.json_array_mt", function()
      assert.are.equal(core.json_array_mt, getmetatable(json.array({})))
      assert.are.equal(core.json_array_mt, getmetatable(json.decode("[]")))
    end)

    it("writes a serpent tuple as a list, empty or with nil holes", function()
      local serpent = require "springrun.serpent"
      assert.are.equal("[]", json.encode(serpent.tuple({})))
      assert.are.equal("[1, null, null]", json.encode(serpent.tuple({ 1, n = 3 })))
    end)
  end)

  describe("binary data", function()
    it("wraps bytes as Pyro's {data = base64, encoding = 'base64'} and unwraps them", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      for _, s in ipairs({ "", "a", "ab", "abc", "abcd", all, "\xff\xfe\0" }) do
        local b = json.binary(s)
        assert.are.equal("base64", b.encoding)
        assert.are.equal(s, json.bytes(b))
        assert.are.equal(s, json.bytes(json.decode(json.encode(b))))
      end
      assert.are.equal("aGVsbG8=", json.binary("hello").data)
    end)

    it("refuses what is not the binary form", function()
      local err = raises(json.bytes, { data = "x" })
      assert.is_truthy(err:find('json.bytes: expected a table {data = <base64 string>, encoding = "base64"}', 1, true), err)
      err = raises(json.bytes, { data = "abc", encoding = "base64" })
      assert.is_true(ends_with(err, "json.bytes: invalid base64: length 3 is not a multiple of 4"), err)
      err = raises(json.bytes, { data = "ab!=", encoding = "base64" })
      assert.is_true(ends_with(err, "json.bytes: invalid base64 character at offset 2"), err)
      err = raises(json.binary, 5)
      assert.is_true(ends_with(err, "json.binary: expected a string, got number"), err)
    end)

    it("produces the same base64 as Python's base64.b64encode", function()
      local inputs = {}
      for i = 0, 40 do
        local t = {}
        for j = 1, i do t[j] = string.char((i * 37 + j * 101) % 256) end
        inputs[#inputs + 1] = table.concat(t)
      end
      local input = {}
      for _, s in ipairs(inputs) do input[#input + 1] = tohex(s) end
      local out = lines(python([[
import sys, base64
for line in sys.stdin.read().split("\n")[:-1]:
    print(base64.b64encode(bytes.fromhex(line)).decode())
]], table.concat(input, "\n") .. "\n"))
      for i, s in ipairs(inputs) do assert.are.equal(out[i], json.binary(s).data) end
    end)
  end)

  describe("CONNECT handshake scan (Lua-free, for the daemon thread)", function()
    local hs = core.json_handshake_object
    local cases = {
      { '{"handshake": "hello", "object": "example.test"}', "example.test" },
      { ' {"object":"a\\u00e9\\"b"} ', 'a\u{e9}"b' },
      { '{"handshake": {"x": [1, 2.5, {"y": null}], "z": NaN}, "object": "x"}', "x" },
      { '{"object": "first", "object": "last"}', "last" },
      { '{"handshake": "hello"}', nil, 'handshake has no "object" key', "SR_ENOTFOUND" },
      { "{}", nil, 'handshake has no "object" key', "SR_ENOTFOUND" },
      { '{"object": 5}', nil, 'handshake "object" is not a string at offset 11', "SR_ETYPE" },
      { "[]", nil, "expected '{' (a handshake map) at offset 0", "SR_ESYNTAX" },
      { '{"object": "x"', nil, "expected ',' or '}' at offset 14 (end of input)", "SR_ESYNTAX" },
      { '{"object": "x"} x', nil, "expected end of input at offset 16", "SR_ESYNTAX" },
      { '{"a": [1,], "object": "x"}', nil, "expected a value at offset 9", "SR_ESYNTAX" },
      { '{"object": "\xff"}', nil, "invalid UTF-8 in string at offset 12", "SR_EUTF8" },
      { '{"object": "S\\u0000junk"}', nil, "handshake object id contains a NUL at offset 11", "SR_ETYPE" },
    }
    for _, c in ipairs(cases) do
      it("reads " .. shown(c[1]), function()
        local id, msg, name = hs(c[1])
        assert.are.equal(c[2], id)
        assert.are.equal(c[3], msg)
        assert.are.equal(c[4], name)
      end)
    end

    it("refuses an id that does not fit the caller's buffer", function()
      assert.are.equal("abc", hs('{"object": "abc"}', 4))
      local id, msg, name = hs('{"object": "abcd"}', 4)
      assert.is_nil(id)
      assert.are.equal("handshake object id too long (4 bytes, at most 3) at offset 11", msg)
      assert.are.equal("SR_ETOOBIG", name)
    end)

    it("refuses a handshake nested deeper than 200 levels", function()
      local id, msg, name = hs('{"h": ' .. string.rep("[", 201) .. string.rep("]", 201) .. ', "object": "x"}')
      assert.is_nil(id)
      assert.are.equal("nesting too deep at offset 206", msg)
      assert.are.equal("SR_EDEPTH", name)
    end)
  end)

  describe("against lua-cjson (oracle)", function()
    local docs = {
      '{"a": [1, 2, 3], "b": {"c": "d"}, "e": null, "f": true, "g": false}',
      '["h\u{e9}llo", "\\u00e9\\ud83d\\ude00", "tab\\there", "slash\\/", "", 0, -5, 12345678]',
      '[[], {}, [[[]]], {"x": {}}]',
      '[0.5, -0.25, 1e10, 3.14159, 1.5e-7]',
      '{"object": "Pyro.NameServer", "method": "lookup", "params": ["example.test"], "kwargs": {}}',
    }
    -- cjson gives floats for every number and plain tables for arrays;
    -- compare numerically and structurally.
    local function agree(a, b, path)
      path = path or "doc"
      if type(a) == "number" and type(b) == "number" then
        assert(a == b, path .. string.format(": %.17g vs %.17g", a, b))
        return
      end
      assert(type(a) == type(b), path .. ": " .. type(a) .. " vs " .. type(b))
      if type(a) ~= "table" then assert(a == b, path); return end
      for k, v in pairs(a) do agree(v, b[k], path .. "." .. tostring(k)) end
      for k in pairs(b) do assert(a[k] ~= nil, path .. "." .. tostring(k) .. " missing") end
    end
    for i, d in ipairs(docs) do
      it("decodes document #" .. i .. " to the same values as cjson", function()
        agree(cjson.decode(d), json.decode(d))
      end)
      it("writes document #" .. i .. " so that cjson reads the same values back", function()
        local v = json.decode(d)
        agree(v, cjson.decode(json.encode(v)))
        agree(v, json.decode(cjson.encode(cjson.decode(d))))
      end)
    end

    it("shares cjson's null and keeps what cjson loses (integers, exact floats)", function()
      assert.are.equal("9223372036854775807", json.encode(math.maxinteger))
      assert.are_not.equal(json.encode(math.maxinteger), cjson.encode(math.maxinteger))
      assert.are.equal("0.30000000000000004", json.encode(0.1 + 0.2))
      assert.are.equal("integer", math.type(json.decode("1")))
      assert.are.equal("float", math.type(cjson.decode("1")))
    end)
  end)

  describe("against Python's json module (oracle, real python3)", function()
    it("writes every float exactly as Python's json.dumps (repr), and Python reads it back to the same double", function()
      math.randomseed(20261125)
      local specials = { 0.0, -0.0, 1.0, 0.1, 0.1 + 0.2, 1 / 3, 2 / 3, 1e15, 1e16, 1e17, 123456789012345678.0,
        1e-4, 1e-5, 5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, 1.7976931348623157e308,
        9007199254740993.0, 9007199254740991.0, 2.0 ^ 52, 12345.0, -7.0, 0.0001234, 100.0, 1e22, 1e23,
        0 / 0, math.huge, -math.huge, math.pi, -math.pi }
      local ds = {}
      for _, d in ipairs(specials) do ds[#ds + 1] = d end
      for i = 1, 200000 do
        local d
        if i % 3 == 0 then
          d = string.unpack("<d", string.pack("<i8", math.random(math.mininteger, math.maxinteger)))
        elseif i % 3 == 1 then
          d = math.random() * 10 ^ math.random(-25, 25)
        else
          d = math.random(-1000000, 1000000) / 100
        end
        ds[#ds + 1] = d
      end
      local input = {}
      for _, d in ipairs(ds) do input[#input + 1] = string.format("%a %s", d, json.encode(d)) end
      local out = python([[
import sys, json, math
bad = []
for line in sys.stdin.read().split("\n")[:-1]:
    h, ours = line.split(" ")
    d = float.fromhex(h) if h not in ("nan", "-nan", "inf", "-inf") else float(h)
    theirs = json.dumps(d)
    back = json.loads(ours)
    same = (math.isnan(d) and math.isnan(back)) or (back == d and math.copysign(1, back) == math.copysign(1, d))
    if theirs != ours or not same:
        bad.append("%s ours=%s python=%s" % (h, ours, theirs))
print(len(bad))
print("\n".join(bad[:5]))
]], table.concat(input, "\n") .. "\n")
      assert.are.equal("0", lines(out)[1], out)
      assert.is_true(#ds > 200000)
    end)

    it("reads Python's floats to the very same double", function()
      local out = python([[
import json, random
random.seed(7)
for i in range(2000):
    d = random.uniform(-1, 1) * 10 ** random.randint(-300, 300)
    print(d.hex(), json.dumps(d))
for d in (5e-324, 1.7976931348623157e308, 0.1, 1e16, -0.0):
    print(d.hex(), json.dumps(d))
]])
      local n = 0
      for _, l in ipairs(lines(out)) do
        local h, text = l:match("^(%S+) (%S+)$")
        local want = tonumber(h)
        local got = json.decode(text)
        assert(math.type(got) == "float" and got == want and 1 / got == 1 / want,
          l .. " decoded as " .. string.format("%a", got))
        n = n + 1
      end
      assert.are.equal(2005, n)
    end)

    it("agrees on NaN, Infinity, big integers, control characters and non-ASCII text both ways", function()
      -- Python writes a document; springrun reads it and writes it again
      -- byte-identically (single-key objects: no key order question).
      local out = python([[
import json
docs = [
  [float("nan"), float("inf"), float("-inf"), 1.0, -0.0, 1e16, 1e-05],
  [2**63 - 1, -2**63, 0, 12345678901234567],
  ["h\u00e9llo \U0001F600 \u20ac", "\x00\x01\x1f\x7f", "quote\" back\\ slash/", "\n\r\t\b\f"],
  [{"k": [[], {}, None, True, False]}],
  {"object": "example.test", "method": "echo", "params": [], "kwargs": {}},
]
for d in docs:
    print(json.dumps(d, ensure_ascii=False))
]])
      local docs = lines(out)
      assert.are.equal(5, #docs)
      for i = 1, 4 do
        assert.are.equal(docs[i], json.encode(json.decode(docs[i])))
      end
      local call = json.decode(docs[5])
      assert.are.equal("example.test", call.object)
      assert.is_true(json.is_array(call.params))
      assert.are.equal("{}", json.encode(call.kwargs))
      assert.are.equal(math.maxinteger, json.decode(docs[2])[1])
      assert.are.equal("integer", math.type(json.decode(docs[2])[4]))
    end)

    it("turns Python's integers beyond 64 bits into the float Python itself would give", function()
      local out = python([[
import json
for n in (2**63, 2**64, -2**63 - 1, 10**30, -(10**25) + 7, 2**70 + 1):
    print(json.dumps(n), json.dumps(float(n)))
]])
      for _, l in ipairs(lines(out)) do
        local big, asfloat = l:match("^(%S+) (%S+)$")
        local v = json.decode(big)
        assert.are.equal("float", math.type(v))
        assert.are.equal(asfloat, json.encode(v))
      end
    end)

    it("reads what Python writes with ensure_ascii=True (\\u escapes, surrogate pairs) as the same UTF-8", function()
      local out = python([[
import json
s = "a\u00e9\u20ac\U0001F600\U0010FFFF\x00z"
print(json.dumps(s, ensure_ascii=True))
print(s.encode("utf-8").hex())
]])
      local l = lines(out)
      local want = l[2]:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end)
      assert.are.equal(want, json.decode(l[1]))
    end)

    it("accepts and refuses exactly the UTF-8 that Python accepts and refuses", function()
      local samples = {
        "ascii", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf",
        "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xe0\x9f\xbf", "\xed\xa0\x80", "\xed\xbf\xbf",
        "\xed\x9f\xbf", "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\x80",
        "\xc3", "\xe2\x82", "\xf0\x9f\x98", "a\xc3(", "\xee\x80\x80", "\xef\xbf\xbf",
      }
      local input = {}
      for _, s in ipairs(samples) do input[#input + 1] = tohex(s) end
      local out = lines(python([[
import sys
for line in sys.stdin.read().split("\n")[:-1]:
    try:
        bytes.fromhex(line).decode("utf-8")
        print("ok")
    except UnicodeDecodeError:
        print("bad")
]], table.concat(input, "\n") .. "\n"))
      for i, s in ipairs(samples) do
        local enc_ok = core.json_encode(s) ~= nil
        local dec_ok = core.json_decode('"' .. s .. '"') ~= nil
        local want = out[i] == "ok"
        assert(enc_ok == want and dec_ok == want,
          string.format("%s: python %s, encode %s, decode %s", tohex(s), out[i], tostring(enc_ok), tostring(dec_ok)))
      end
    end)

    it("writes documents Python reads back to equal values", function()
      local v = { object = "x", params = json.array({ 1, 2.5, "\u{e9}", json.null, json.array({}), {} }),
        kwargs = { big = math.maxinteger, neg = math.mininteger, f = 0.1 } }
      local out = python([[
import sys, json
d = json.loads(sys.stdin.read())
assert d == {"object": "x", "params": [1, 2.5, "\u00e9", None, [], {}],
             "kwargs": {"big": 2**63 - 1, "neg": -2**63, "f": 0.1}}, d
assert type(d["params"][0]) is int and type(d["params"][1]) is float
print("equal")
]], json.encode(v))
      assert.are.equal("equal\n", out)
    end)
  end)
end)
