-- springrun.serpent and the C serpent payload codec (springrun.core): exact
-- text out, exact values in, every refusal with its exact message, and the
-- real peers: Python's serpent module (serpent.dumps / serpent.loads /
-- ast.literal_eval) and Pyro4's SerpentSerializer, run as /usr/bin/python3
-- subprocesses, plus payloads captured from Pyro4 4.82 in spec/fixtures/serpent.
--
-- Documented behaviour pinned here: tuples and sets decode as marked arrays;
-- ints beyond 64 bits decode as the nearest float; bytes stay the table
-- {data = <base64>, encoding = "base64"}; decode error offsets are 0-based.
local serpent = require "springrun.serpent"
local json = require "springrun.json"
local core = require "springrun.core"

local codec = require "helpers.codec"

local FIXTURES = "spec/fixtures/serpent/"
local H = "# serpent utf-8 python3.2\n"
local null = serpent.null
local A, T = json.array, serpent.tuple

-- ---------------------------------------------------------------- helpers

local isnan, python, lines, tohex = codec.isnan, codec.python, codec.lines, codec.tohex
local raises = codec.raises
-- Deep equality that also checks integer vs float, -0.0, and array/tuple marks.
local same, assert_same = codec.comparer({ marks = true })

local function readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function fromhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end

-- Python side of the encode checks: reads [[hex, expr, pyro_expr], ...] as
-- JSON; decodes each payload with serpent.loads, ast.literal_eval and Pyro4's
-- SerpentSerializer.loads and compares (types included) with eval(expr)
-- (pyro_expr for Pyro4, which rebuilds the NaN class dict).
local PY_CHECK = [[
import sys, json, ast, math, struct, binascii, serpent, Pyro4.util
def same(a, b):
    if type(a) is not type(b): return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack('<d', a) == struct.pack('<d', b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b
pyro = Pyro4.util.SerpentSerializer()
for i, (h, expr, pexpr) in enumerate(json.loads(sys.stdin.read())):
    data = binascii.unhexlify(h)
    want, pwant = eval(expr), eval(pexpr)
    got = [serpent.loads(data), ast.literal_eval(data.decode('utf-8')), pyro.loads(data)]
    ok = same(got[0], want) and same(got[1], want) and same(got[2], pwant)
    print('ok' if ok else 'MISMATCH %d: %r / %r / %r, want %r' % (i, got[0], got[1], got[2], want))
]]

-- ---------------------------------------------------------------- specs

describe("springrun.serpent #unit", function()
  describe("encode", function()
    local cases = {
      { "nil", nil, "None" },
      { "null", null, "None" },
      { "true", true, "True" },
      { "false", false, "False" },
      { "zero", 0, "0" },
      { "maxinteger", math.maxinteger, "9223372036854775807" },
      { "mininteger", math.mininteger, "-9223372036854775808" },
      { "float 1.0 keeps .0", 1.0, "1.0" },
      { "0.1 + 0.2 exactly", 0.1 + 0.2, "0.30000000000000004" },
      { "1e16 in repr's exponent form", 1e16, "1e+16" },
      { "1e-5 in repr's exponent form", 1e-5, "1e-05" },
      { "negative zero", -0.0, "-0.0" },
      { "smallest subnormal", 5e-324, "5e-324" },
      { "inf as serpent's overflowing literal", math.huge, "1e30000" },
      { "-inf", -math.huge, "-1e30000" },
      { "NaN as serpent's float class dict", 0 / 0, "{'__class__':'float','value':'nan'}" },
      { "empty string", "", "''" },
      { "a single quote: double-quoted, as repr", "it's", [["it's"]] },
      { "a double quote", 'say "hi"', [['say "hi"']] },
      { "both quotes", [[both ' and "]], [['both \' and "']] },
      { "backslash", "a\\b", [['a\\b']] },
      { "control characters", "\0\a\b\t\n\r\27\127", [['\x00\x07\x08\t\n\r\x1b\x7f']] },
      { "non-printable Latin-1 escaped as repr does", "\u{85}\u{a0}\u{ad}", [['\x85\xa0\xad']] },
      { "line separator escaped", "\u{2028}", [['\u2028']] },
      { "printable non-ASCII kept as UTF-8", "h\u{e9}llo \u{20ac} \u{1F600}", "'h\u{e9}llo \u{20ac} \u{1F600}'" },
      { "list", { 1, 2.5, "x", true }, "[1,2.5,'x',True]" },
      { "dict", { a = 1 }, "{'a':1}" },
      { "nested", { a = { { b = null } } }, "{'a':[{'b':None}]}" },
      { "empty unmarked table is a dict", {}, "{}" },
      { "marked empty array is a list", A({}), "[]" },
      { "marked with n keeps holes", A({ n = 4, 1, nil, 3 }), "[1,None,3,None]" },
      { "empty tuple", T({}), "()" },
      { "one-tuple with its comma", T({ 1 }), "(1,)" },
      { "tuple", T({ 1, "a" }), "(1,'a')" },
      { "tuple of table.pack keeps trailing nils", T(table.pack(1, nil, nil)), "(1,None,None)" },
      { "Pyro4's INVOKE shape", T({ "obj", "meth", T({ 1 }), {} }), "('obj','meth',(1,),{})" },
    }
    for _, c in ipairs(cases) do
      it("writes " .. c[1] .. " as " .. c[3], function()
        assert.are.equal(H .. c[3], serpent.encode(c[2]))
        assert.are.equal(H .. c[3], core.serpent_encode(c[2]))
      end)
    end

    it("writes dicts with several keys in serpent's compact form, any order", function()
      local s = serpent.encode({ data = "aGVsbG8=", encoding = "base64" })
      assert.is_true(s == H .. "{'data':'aGVsbG8=','encoding':'base64'}"
        or s == H .. "{'encoding':'base64','data':'aGVsbG8='}", s)
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
      { "a function inside a tuple", function() return T({ 1, { print } }) end,
        "cannot encode a function value at [2][1]", "SR_ETYPE" },
      { "a key that is not an identifier", function() return { ["my key"] = { print } } end,
        'cannot encode a function value at ["my key"][1]', "SR_ETYPE" },
      { "a cycle", function() local t = {}; t.x = t; return t end,
        "cannot encode a circular reference at x", "SR_ECYCLE" },
      { "array and map keys mixed", function() return { 1, 2, x = 3 } end,
        'cannot encode a table mixing array and map keys (key "x")', "SR_ETYPE" },
      { "a sparse array", function() return { v = { [1] = 1, [3] = 3 } } end,
        "cannot encode a sparse array (2 items, highest index 3; mark it with json.array(t) " ..
        "and set t.n to send nils) at v", "SR_ETYPE" },
      { "a boolean key", function() return { [true] = 1 } end,
        "cannot encode a table key that is not a string (key of type boolean)", "SR_ETYPE" },
      { "a float key", function() return { [1.5] = 1 } end,
        "cannot encode a table key that is not a string (key 1.5)", "SR_ETYPE" },
      { "a string key in a tuple", function() return T({ 1, x = 2 }) end,
        'cannot encode a non-index key in an array (key "x")', "SR_ETYPE" },
      { "an item beyond n", function() return T({ n = 1, 1, 2 }) end,
        "cannot encode an array item beyond its n (key 2)", "SR_ETYPE" },
      { "invalid UTF-8 in a value", function() return { name = "ab\xff" } end,
        "invalid UTF-8 at byte 3 of the string at name (send raw bytes with serpent.binary(s))",
        "SR_EUTF8" },
      { "a UTF-16 surrogate encoded in UTF-8", function() return { "\xed\xa0\x80" } end,
        "invalid UTF-8 at byte 1 of the string at [1] (send raw bytes with serpent.binary(s))",
        "SR_EUTF8" },
      { "invalid UTF-8 in a key", function() return { ["k\xfe"] = 1 } end,
        "invalid UTF-8 at byte 2 of a table key", "SR_EUTF8" },
    }
    for _, c in ipairs(errors) do
      it("refuses " .. c[1] .. ": " .. c[3], function()
        codec.check_refusal(core.serpent_encode, serpent.encode, c[2], c[3], c[4])
      end)
    end

    it("refuses nesting deeper than Python's parser reads (200 levels)", function()
      local t = A({})
      for _ = 1, 199 do t = { t } end
      assert.are.equal(H .. ("["):rep(200) .. ("]"):rep(200), serpent.encode(t))
      local s, msg, name = core.serpent_encode({ t })
      assert.is_nil(s)
      -- the path is cut at 255 characters, as the JSON codec's
      assert.are.equal("nesting too deep (more than 200 levels)" .. (" at " .. ("[1]"):rep(200)):sub(1, 255), msg)
      assert.are.equal("SR_EDEPTH", name)
    end)
  end)

  describe("decode", function()
    local cases = {
      { "None", H .. "None", null },
      { "True", "True", true },
      { "False", "False", false },
      { "an int", "42", 42 },
      { "a negative int", "-7", -7 },
      { "a signed int with a space", "- 7", -7 },
      { "maxinteger", "9223372036854775807", math.maxinteger },
      { "mininteger", "-9223372036854775808", math.mininteger },
      { "2^63 as the nearest float", "9223372036854775808", 2.0 ^ 63 },
      { "a 30-digit int as the nearest float", "123456789012345678901234567890", 1.2345678901234568e+29 },
      { "hex, octal, binary, underscores", "[0x1F,0o17,0b101,1_000]", A({ 31, 15, 5, 1000 }) },
      { "a float", "2.5", 2.5 },
      { "an integral float stays a float", "1.0", 1.0 },
      { "float forms", "[1.,.5,1e3,1E-3,-0.0]", A({ 1.0, 0.5, 1000.0, 0.001, -0.0 }) },
      { "1e30000 as inf", "1e30000", math.huge },
      { "-1e30000 as -inf", "-1e30000", -math.huge },
      { "the nan class dict as NaN", "{'__class__':'float','value':'nan'}", 0 / 0 },
      { "the inf class dict", "{'__class__':'float','value':'-inf'}", -math.huge },
      { "a single-quoted string", "'abc'", "abc" },
      { "a double-quoted string", [["it's"]], "it's" },
      { "escapes", [['\\\'\"\a\b\f\n\r\t\v']], "\\'\"\a\b\f\n\r\t\v" },
      { "\\x, \\u, \\U and octal escapes as code points", [['\x41\xe9\u20ac\U0001F600\101\0']],
        "A\u{e9}\u{20ac}\u{1F600}A\0" },
      { "an unknown escape kept, as Python does", [['\d']], "\\d" },
      { "raw UTF-8", "'h\u{e9}llo'", "h\u{e9}llo" },
      { "u and r prefixes", [==[[u'a',r'\n',R"\"",U'b']]==], A({ "a", "\\n", '\\"', "b" }) },
      { "adjacent literals concatenated", "'ab' \"cd\"", "abcd" },
      { "a backslash-newline inside a string", "'a\\\nb'", "ab" },
      { "an empty list", "[]", A({}) },
      { "a list with a trailing comma", "[1,2,]", A({ 1, 2 }) },
      { "an empty tuple as an array", "()", A({}) },
      { "a one-tuple", "(1,)", A({ 1 }) },
      { "a tuple", "(1,'a',None)", A({ 1, "a", null }) },
      { "parentheses around a value", "((1))", 1 },
      { "a set as an array", "{3}", A({ 3 }) },
      { "an empty dict", "{}", {} },
      { "a dict", "{'a':1,'b':[True]}", { a = 1, b = A({ true }) } },
      { "number and boolean dict keys", "{1:'x',2.5:'y',False:'z'}", { [1] = "x", [2.5] = "y", [false] = "z" } },
      { "bytes as serpent's base64 dict", "{'data': 'aGVsbG8=', 'encoding': 'base64'}",
        { data = "aGVsbG8=", encoding = "base64" } },
      { "whitespace, newlines and comments", "# serpent utf-8 python3.2\n# more\n[\n  1, # one\n  2\n]\n",
        A({ 1, 2 }) },
      { "INVOKE's 4-tuple", H .. "('objid','method',(1,),{'k':None})",
        A({ "objid", "method", A({ 1 }), { k = null } }) },
    }
    for _, c in ipairs(cases) do
      it("reads " .. c[1], function()
        assert_same(c[3], serpent.decode(c[2]))
      end)
    end

    local errors = {
      { "nothing", "", "serpent: unexpected end of data (expected a value) at offset 0", "SR_ESYNTAX" },
      { "a header only", H, "serpent: unexpected end of data (expected a value) at offset 26", "SR_ESYNTAX" },
      { "a complex number", H .. "(1.5+2j)",
        "serpent: complex numbers and arithmetic are not supported at offset 30", "SR_ESYNTAX" },
      { "an imaginary literal", "2j", "serpent: complex numbers are not supported at offset 0", "SR_ESYNTAX" },
      { "a name", "[1,foo]", "serpent: unsupported name 'foo' (only None, True and False) at offset 3",
        "SR_ESYNTAX" },
      { "a call", "None()",
        "serpent: unexpected character '(' (expected end of data after the value) at offset 4", "SR_ESYNTAX" },
      { "a second value", "1 2",
        "serpent: unexpected character '2' (expected end of data after the value) at offset 2", "SR_ESYNTAX" },
      { "an unterminated list", "[1,2", "serpent: unexpected end of data (expected ',' or ']') at offset 4",
        "SR_ESYNTAX" },
      { "an unterminated tuple", "(1,2 3)", "serpent: unexpected character '3' (expected ',' or ')') at offset 5",
        "SR_ESYNTAX" },
      { "an empty element", "[1,,2]", "serpent: unexpected character ',' (expected a value) at offset 3",
        "SR_ESYNTAX" },
      { "a dict without ':'", "{'a':1,'b' 2}", "serpent: unexpected character '2' (expected ':') at offset 11",
        "SR_ESYNTAX" },
      { "a set with a ':'", "{1,2:3}", "serpent: unexpected character ':' (expected ',' or '}') at offset 4",
        "SR_ESYNTAX" },
      { "an unterminated string", "['abc]", "serpent: unterminated string starting at offset 1", "SR_ESYNTAX" },
      { "a newline in a string", "'a\nb'", "serpent: unterminated string starting at offset 0", "SR_ESYNTAX" },
      { "a truncated \\x escape", [['ab\x4']], "serpent: truncated \\xXX escape at offset 3", "SR_ESYNTAX" },
      { "a truncated \\u escape", [['\u12']], "serpent: truncated \\uXXXX escape at offset 1", "SR_ESYNTAX" },
      { "a \\U escape beyond Unicode", [['\U00110000']],
        "serpent: illegal Unicode character in \\U escape at offset 1", "SR_ESYNTAX" },
      { "a lone surrogate escape", [['\ud800']],
        "serpent: surrogate code point escape (not representable in UTF-8) at offset 1", "SR_EUTF8" },
      { "a \\N{} escape", [['\N{DASH}']], "serpent: \\N{...} escapes are not supported at offset 1",
        "SR_ESYNTAX" },
      { "a bytes literal", "b'abc'", "serpent: bytes literals are not supported at offset 0", "SR_ESYNTAX" },
      { "an f-string", "f'{x}'", "serpent: f-strings are not supported at offset 0", "SR_ESYNTAX" },
      { "a triple-quoted string", "'''x'''", "serpent: triple-quoted strings are not supported at offset 0",
        "SR_ESYNTAX" },
      { "invalid UTF-8 in a string", "'ab\xff'", "serpent: invalid UTF-8 in a string at offset 3", "SR_EUTF8" },
      { "invalid UTF-8 in a string after an escape", "'a\\nb\xff'",
        "serpent: invalid UTF-8 in a string at offset 5", "SR_EUTF8" },
      { "an overlong UTF-8 form", "'\xc0\xaf'", "serpent: invalid UTF-8 in a string at offset 1", "SR_EUTF8" },
      { "invalid UTF-8 in a comment", "# \xfe\n1", "serpent: invalid UTF-8 in a comment at offset 2", "SR_EUTF8" },
      { "a NUL byte", "[1,\0]", "serpent: NUL byte (serpent data never has one) at offset 3", "SR_ESYNTAX" },
      { "leading zeros", "0123", "serpent: leading zeros in a decimal integer are not permitted at offset 0",
        "SR_ESYNTAX" },
      { "a doubled underscore", "1__0", "serpent: invalid number at offset 0", "SR_ESYNTAX" },
      { "a sign without a number", "-'a'",
        "serpent: unexpected character ''' (expected a number after the sign) at offset 1", "SR_ESYNTAX" },
      { "a list as a dict key", "{[1]:2}", "serpent: unhashable list as a dict key or set element at offset 1",
        "SR_ESYNTAX" },
      { "a dict in a set", "{1,{}}", "serpent: unhashable dict or set as a dict key or set element at offset 3",
        "SR_ESYNTAX" },
      { "a tuple as a dict key", "{(1,2):3}", "serpent: unsupported dict key (a tuple) at offset 1", "SR_ETYPE" },
      { "a float class dict with another value", "{'__class__':'float','value':'x'}",
        "serpent: float class dict without value 'nan', 'inf' or '-inf' at offset 0", "SR_ESYNTAX" },
      { "a stray byte", "[1,\1]", "serpent: unexpected byte 0x01 (expected a value) at offset 3", "SR_ESYNTAX" },
    }
    for _, c in ipairs(errors) do
      it("refuses " .. c[1] .. ": " .. c[3], function()
        codec.check_refusal(core.serpent_decode, serpent.decode, function() return c[2] end, c[3], c[4])
      end)
    end

    it("limits nesting depth, naming the offset", function()
      assert_same(A({ A({}) }), serpent.decode("[[]]", { max_depth = 2 }))
      local v, msg, name = core.serpent_decode("[[({1:[]})]]", 3)
      assert.is_nil(v)
      assert.are.equal("serpent: nesting too deep (more than 3 levels) at offset 3", msg)
      assert.are.equal("SR_EDEPTH", name)
      v, msg = core.serpent_decode(("["):rep(201) .. ("]"):rep(201))
      assert.is_nil(v)
      assert.are.equal("serpent: nesting too deep (more than 200 levels) at offset 200", msg)
    end)

    it("caps the depth a caller may ask for at 10000 levels (C stack)", function()
      local v, msg = core.serpent_decode(("["):rep(10001) .. ("]"):rep(10001), 1000000)
      assert.is_nil(v)
      assert.are.equal("serpent: nesting too deep (more than 10000 levels) at offset 10000", msg)
      v = serpent.decode(("["):rep(10000) .. ("]"):rep(10000), { max_depth = 1000000 })
      for _ = 1, 9999 do v = v[1] end
      assert_same(A({}), v)
    end)

    it("limits the number of values, naming the offset", function()
      assert_same(A({ 1, 2 }), serpent.decode("[1,2]", { max_elements = 3 }))
      local v, msg, name = core.serpent_decode("[1,2,3]", 200, 3)
      assert.is_nil(v)
      assert.are.equal("serpent: too many elements (more than 3) at offset 5", msg)
      assert.are.equal("SR_EELEMENTS", name)
      -- dict keys are not counted
      assert_same({ a = 1, b = 2 }, serpent.decode("{'a':1,'b':2}", { max_elements = 3 }))
    end)

    it("stays linear on nested dict/set look-ahead", function()
      -- each '{' looks ahead over its first element; keys are hashable, so
      -- look-aheads never nest
      local doc = ("{'k':"):rep(150) .. "1" .. ("}"):rep(150)
      local t0 = os.clock()
      for _ = 1, 50 do serpent.decode(doc) end
      assert.is_true(os.clock() - t0 < 1)
      local v = serpent.decode(doc)
      for _ = 1, 150 do v = v.k end
      assert.are.equal(1, v)
    end)

    it("builds long lists, dicts with repeated keys and deep big lists exactly", function()
      codec.check_big_containers(serpent.decode, core.json_is_array, "'")
    end)

    it("raises with a clear message on a non-string", function()
      local err = raises(serpent.decode, 42)
      assert.truthy(err:find("serpent.decode: expected a string, got number", 1, true))
    end)
  end)

  describe("round trip", function()
    it("keeps values, integer/float kinds and list marks through encode and decode", function()
      local v = { ints = A({ 0, -1, math.maxinteger, math.mininteger }),
        floats = A({ 0.1, 1.0, -0.0, 1e300, 5e-324, math.huge, -math.huge }),
        strs = A({ "", "it's", 'q"', "\0\n\u{85}\u{2028}\u{1F600}" }),
        empty_list = A({}), empty_dict = {}, nested = A({ A({ A({ null, true, false }) }) }) }
      assert_same(v, serpent.decode(serpent.encode(v)))
      local nan = serpent.decode(serpent.encode(0 / 0))
      assert.is_true(nan ~= nan)
    end)

    it("reads a tuple back as a marked array", function()
      local v = serpent.decode(serpent.encode(T({ 1, T({}) })))
      assert_same(A({ 1, A({}) }), v)
      assert.is_false(serpent.is_tuple(v))
    end)
  end)

  describe("markers", function()
    it("tuple() marks a new or given table and may re-mark an array", function()
      local t = serpent.tuple()
      assert.is_true(serpent.is_tuple(t))
      local a = json.array({ 1 })
      assert.are.equal(a, serpent.tuple(a))
      assert.is_true(serpent.is_tuple(a))
      assert.is_false(serpent.is_tuple({}))
      assert.is_false(serpent.is_tuple(5))
    end)

    it("tuple() refuses a table with another metatable and a non-table", function()
      local err = raises(serpent.tuple, setmetatable({}, {}))
      assert.truthy(err:find("serpent.tuple: the table already has a metatable", 1, true), err)
      err = raises(serpent.tuple, "x")
      assert.truthy(err:find("serpent.tuple: expected a table, got string", 1, true), err)
    end)

    it("shares the JSON array marker", function()
      assert.are.equal(json.array, serpent.array)
      assert.is_true(json.is_array(serpent.decode("[1]")))
      assert.are.equal("[1]", json.encode(serpent.decode("(1,)")))
      assert.are.equal("[]", json.encode(serpent.decode("()")))
    end)

    it("is reachable as springrun.serpent with springrun.null as None", function()
      local springrun = require "springrun"
      assert.are.equal(serpent, springrun.serpent)
      assert.are.equal(springrun.null, serpent.null)
    end)
  end)

  describe("binary data", function()
    it("sends bytes in serpent's base64 dict and reads them back with bytes()", function()
      local raw = "\0\255\1hi"
      local v = serpent.decode(serpent.encode({ blob = serpent.binary(raw) }))
      assert.are.same({ data = "AP8BaGk=", encoding = "base64" }, v.blob)
      assert.are.equal(raw, serpent.bytes(v.blob))
    end)
  end)

  describe("CONNECT handshake scan (Lua-free, for the daemon thread)", function()
    local ok_cases = {
      { "Pyro4's handshake", H .. "{'handshake':'hello','object':'example.test'}", "example.test" },
      { "escapes decoded", "{'object':'a\\x41\\u00e9'}", "aA\u{e9}" },
      { "a nested 'object' ignored", "{'handshake':{'object':'no'},'object':'yes'}", "yes" },
      { "keys of other types skipped", "{1:'object',(1,2):'x','object':\"o'k\"}", "o'k" },
    }
    for _, c in ipairs(ok_cases) do
      it("finds the object id in " .. c[1], function()
        assert.are.equal(c[3], core.serpent_handshake_object(c[2]))
      end)
    end
    local bad_cases = {
      { "no object key (METADATA off)", H .. "{'handshake':'hello'}", nil,
        "serpent: handshake has no 'object' key", "SR_ENOTFOUND" },
      { "only a nested object key", "{'h':{'object':'x'}}", nil,
        "serpent: handshake has no 'object' key", "SR_ENOTFOUND" },
      { "a non-string id", "{'object':5}", nil,
        "serpent: handshake 'object' is not a string at offset 10", "SR_ESYNTAX" },
      { "not a dict", "['object','x']", nil,
        "serpent: handshake payload is not a dict at offset 0", "SR_ESYNTAX" },
      { "a malformed payload", "{'object':'x'", nil,
        "serpent: unexpected end of data (expected ',' or '}') at offset 13", "SR_ESYNTAX" },
      { "an id with a NUL in it", "{'object':'S\\x00junk'}", nil,
        "serpent: handshake object id contains a NUL at offset 10", "SR_ESYNTAX" },
      { "an id longer than the buffer", "{'object':'abc'}", 3,
        "serpent: handshake object id of 3 bytes is too long at offset 10", "SR_ETOOBIG" },
    }
    for _, c in ipairs(bad_cases) do
      it("reports " .. c[1], function()
        local id, msg, name = core.serpent_handshake_object(c[2], c[3])
        assert.is_nil(id)
        assert.are.equal(c[4], msg)
        assert.are.equal(c[5], name)
      end)
    end
  end)
end)

describe("springrun.serpent against Python serpent and Pyro4 #interop", function()
  it("has the real peers (python3-serpent, python3-pyro4)", function()
    local out = python("import serpent, Pyro4; print(serpent.__version__, Pyro4.__version__)")
    assert.truthy(out:match("^%d+%.%d+ %d+%.%d+"), out)
  end)

  -- Python value (an expression) -> serpent.dumps -> springrun decode
  local from_python = {
    { "None", null },
    { "[True, False]", A({ true, false }) },
    { "[0, -1, 2**63 - 1, -2**63]", A({ 0, -1, math.maxinteger, math.mininteger }) },
    { "[2**63, 2**64, 10**30, -10**30]", A({ 2.0 ^ 63, 2.0 ^ 64, 1e30, -1e30 }) },
    { "[0.1, 1.0, -0.0, 1e16, 1e-05, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]",
      A({ 0.1, 1.0, -0.0, 1e16, 1e-05, 5e-324, 1.7976931348623157e308, 0.1 + 0.2 }) },
    { "[float('inf'), float('-inf'), float('nan')]", A({ math.huge, -math.huge, 0 / 0 }) },
    { "['', 'it\\'s', 'say \"hi\"', 'both \\' and \"', 'back\\\\slash']",
      A({ "", "it's", 'say "hi"', "both ' and \"", "back\\slash" }) },
    { "'\\x00\\x01\\x07\\t\\n\\r\\x1b\\x7f\\x85\\xa0\\xad'", "\0\1\a\t\n\r\27\127\u{85}\u{a0}\u{ad}" },
    { "'h\\xe9llo \\u20ac \\U0001f600 \\u2028 \\ufeff \\U000e0001 \\U0010ffff'",
      "h\u{e9}llo \u{20ac} \u{1F600} \u{2028} \u{feff} \u{e0001} \u{10ffff}" },
    { "[[], [1, [2, [3]]]]", A({ A({}), A({ 1, A({ 2, A({ 3 }) }) }) }) },
    { "[(), (1,), (1, 'a', None)]", A({ A({}), A({ 1 }), A({ 1, "a", null }) }) },
    { "[set(), {3}, frozenset([5])]", A({ A({}), A({ 3 }), A({ 5 }) }) },
    { "{}", {} },
    { "{'a': 1, 'b': [1.5, None], 'c': {'d': (True,)}}", { a = 1, b = A({ 1.5, null }), c = { d = A({ true }) } } },
    { "{1: 'x', 2.5: 'y', False: 'z'}", { [1] = "x", [2.5] = "y", [false] = "z" } },
    { "b'hello'", { data = "aGVsbG8=", encoding = "base64" } },
    { "bytearray(b'\\x00\\xff')", { data = "AP8=", encoding = "base64" } },
    { "uuid.UUID('12345678-1234-5678-1234-567812345678')", "12345678-1234-5678-1234-567812345678" },
    { "datetime.datetime(2020, 1, 2, 3, 4, 5)", "2020-01-02T03:04:05" },
    { "decimal.Decimal('1.10')", "1.10" },
    { "ValueError('boom', 2)", { __class__ = "builtins.ValueError", __exception__ = true,
      args = A({ "boom", 2 }), attributes = {} } },
  }

  it("reads what Python's serpent.dumps writes, type by type", function()
    local exprs = {}
    for i, c in ipairs(from_python) do exprs[i] = c[1] end
    local out = python([[
import sys, json, serpent, uuid, datetime, decimal
for expr in json.loads(sys.stdin.read()):
    print(serpent.dumps(eval(expr), module_in_classname=True).hex())
]], json.encode(A(exprs)))
    local got = lines(out)
    assert.are.equal(#from_python, #got, out)
    for i, c in ipairs(from_python) do
      local ok, why = same(c[2], serpent.decode(fromhex(got[i])))
      assert(ok, c[1] .. ": " .. tostring(why))
    end
  end)

  it("reads 2000 random nested values from serpent.dumps exactly as Python reads them", function()
    -- both sides print a canonical text per document: type tags, hex of
    -- strings and of float bits, lists/tuples/sets as L[...] (sets of at
    -- most one item here: their order is Python's hash order), dicts as
    -- M{...} with sorted entries
    local out = python([[
import random, serpent, struct, math, uuid
random.seed(20261125)
def val(d=0):
    r = random.random()
    if d > 3 or r < 0.5:
        return random.choice([None, True, False, random.randint(-10**20, 10**20), random.randint(-5, 5),
            random.random() * 10 ** random.randint(-30, 30), float('inf'), -0.0, float('nan'),
            ''.join(chr(random.choice([random.randint(0, 0x7f), random.randint(0x80, 0x3000),
                random.randint(0x10000, 0x10ffff)])) for _ in range(random.randint(0, 6))),
            "'", '"', "'\"", '\\', b'\x00\xff', uuid.UUID(int=random.getrandbits(128))])
    k = random.randint(0, 3)
    if r < 0.65: return [val(d + 1) for _ in range(k)]
    if r < 0.8: return tuple(val(d + 1) for _ in range(k))
    if r < 0.85: return set([random.choice([1, 'a', 2.5, True])] if k else [])
    return {random.choice(['a', 'b', 'c\n', 1, 2.5, False]): val(d + 1) for _ in range(k)}
def canon(v):
    if v is None: return 'N'
    if v is True: return 'T'
    if v is False: return 'F'
    if isinstance(v, int):
        if -2**63 <= v < 2**63: return 'I%d' % v
        v = float(v)
    if isinstance(v, float):
        return 'NaN' if math.isnan(v) else 'D%016x' % struct.unpack('<Q', struct.pack('<d', v))[0]
    if isinstance(v, str): return 'S' + v.encode('utf-8').hex()
    if isinstance(v, (set, frozenset)): return 'L[' + ','.join(sorted(canon(x) for x in v)) + ']'
    if isinstance(v, (list, tuple)): return 'L[' + ','.join(canon(x) for x in v) + ']'
    if v.get('__class__') == 'float': return canon(float(v['value']))
    return 'M{' + ','.join(sorted(canon(k) + ':' + canon(x) for k, x in v.items())) + '}'
for i in range(2000):
    v = val()
    data = serpent.dumps(v, indent=(i % 5 == 0))
    print(data.hex(), canon(serpent.loads(data)))
]])
    local function canon(v)
      if v == null then return "N" end
      if v == true then return "T" end
      if v == false then return "F" end
      if math.type(v) == "integer" then return "I" .. v end
      if type(v) == "number" then
        if v ~= v then return "NaN" end
        return string.format("D%016x", string.unpack("<I8", string.pack("<d", v)))
      end
      if type(v) == "string" then return "S" .. tohex(v) end
      local p = {}
      if json.is_array(v) then
        for i = 1, #v do p[i] = canon(v[i]) end
        return "L[" .. table.concat(p, ",") .. "]"
      end
      for k, x in pairs(v) do p[#p + 1] = canon(k) .. ":" .. canon(x) end
      table.sort(p)
      return "M{" .. table.concat(p, ",") .. "}"
    end
    local n = 0
    for _, l in ipairs(lines(out)) do
      local hex, want = l:match("^(%x+) (%S+)$")
      assert(hex, l)
      local data = fromhex(hex)
      local got = canon(serpent.decode(data))
      assert.are.equal(want, got, data)
      n = n + 1
    end
    assert.are.equal(2000, n)
  end)

  it("reads a set of several items as an array of them (in Python's order)", function()
    local v = serpent.decode(fromhex(lines(python("import serpent; print(serpent.dumps({3, 1, 2, 'x'}).hex())"))[1]))
    assert.is_true(json.is_array(v))
    assert.are.equal(4, #v)
    local seen = {}
    for _, x in ipairs(v) do seen[x] = true end
    assert.are.same({ [1] = true, [2] = true, [3] = true, x = true }, seen)
  end)

  it("reads serpent's indented output too", function()
    local out = python([[
import serpent
print(serpent.dumps({'a': [1, (2, 3), {'b': None}], 'c': {4}}, indent=True).hex())
]])
    assert_same({ a = A({ 1, A({ 2, 3 }), { b = null } }), c = A({ 4 }) }, serpent.decode(fromhex(lines(out)[1])))
  end)

  -- springrun value -> encode -> serpent.loads, ast.literal_eval and Pyro4
  local to_python = {
    { null, "None" },
    { A({ true, false }), "[True, False]" },
    { A({ 0, -1, math.maxinteger, math.mininteger }), "[0, -1, 2**63 - 1, -2**63]" },
    { A({ 0.1, 1.0, -0.0, 1e16, 1e-05, 5e-324, 1.7976931348623157e308, 0.1 + 0.2 }),
      "[0.1, 1.0, -0.0, 1e16, 1e-05, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]" },
    { A({ math.huge, -math.huge }), "[float('inf'), float('-inf')]" },
    { 0 / 0, "{'__class__': 'float', 'value': 'nan'}", "float('nan')" },
    { A({ "", "it's", 'say "hi"', "both ' and \"", "back\\slash" }),
      "['', 'it\\'s', 'say \"hi\"', 'both \\' and \"', 'back\\\\slash']" },
    { "\0\1\a\t\n\r\27\127\u{85}\u{a0}\u{ad}", "'\\x00\\x01\\x07\\t\\n\\r\\x1b\\x7f\\x85\\xa0\\xad'" },
    { "h\u{e9}llo \u{20ac} \u{1F600} \u{2028} \u{feff} \u{e0001} \u{10ffff}",
      "'h\\xe9llo \\u20ac \\U0001f600 \\u2028 \\ufeff \\U000e0001 \\U0010ffff'" },
    { A({ A({}), A({ 1, A({ 2, A({ 3 }) }) }) }), "[[], [1, [2, [3]]]]" },
    { A({ T({}), T({ 1 }), T({ 1, "a", null }) }), "[(), (1,), (1, 'a', None)]" },
    { {}, "{}" },
    { { a = 1, b = A({ 1.5, null }), c = { d = T({ true }) } }, "{'a': 1, 'b': [1.5, None], 'c': {'d': (True,)}}" },
    { serpent.binary("\0\255"), "{'data': 'AP8=', 'encoding': 'base64'}" },
    { T(table.pack("obj", "method", T(table.pack(1, nil)), { k = "v" })),
      "('obj', 'method', (1, None), {'k': 'v'})" },
  }

  it("writes what Python's serpent.loads, ast.literal_eval and Pyro4 read back exactly", function()
    local cases = {}
    for i, c in ipairs(to_python) do
      cases[i] = A({ tohex(serpent.encode(c[1])), c[2], c[3] or c[2] })
    end
    local out = python(PY_CHECK, json.encode(A(cases)))
    local got = lines(out)
    assert.are.equal(#to_python, #got, out)
    for i = 1, #got do assert.are.equal("ok", got[i]) end
  end)

  it("writes every Unicode scalar value so that Python reads the same str", function()
    -- all of U+0000..U+10FFFF except surrogates, in chunks of 4096 code points
    local parts = {}
    for base = 0, 0x10FFFF, 4096 do
      local cps = {}
      for cp = base, math.min(base + 4095, 0x10FFFF) do
        if cp < 0xD800 or cp > 0xDFFF then cps[#cps + 1] = utf8.char(cp) end
      end
      parts[#parts + 1] = tohex(serpent.encode(table.concat(cps)))
    end
    local out = python([[
import sys, serpent
bad = 0
for i, h in enumerate(sys.stdin.read().split()):
    base = i * 4096
    want = ''.join(chr(c) for c in range(base, min(base + 4096, 0x110000)) if not 0xD800 <= c <= 0xDFFF)
    got = serpent.loads(bytes.fromhex(h))
    if got != want: bad += 1; print('chunk', i, 'differs')
print('bad', bad)
]], table.concat(parts, "\n"))
    assert.are.equal("bad 0\n", out)
  end)

  it("matches Python's repr byte for byte on ASCII and Latin-1", function()
    local cps = {}
    for cp = 0, 0xFF do cps[#cps + 1] = utf8.char(cp) end
    local s = table.concat(cps)
    local out = python([[
import sys, serpent
print(serpent.dumps(''.join(chr(c) for c in range(256)) + "'").hex())
print(serpent.dumps(''.join(chr(c) for c in range(256))).hex())
]])
    local want = lines(out)
    assert.are.equal(fromhex(want[1]), serpent.encode(s .. "'"))
    assert.are.equal(fromhex(want[2]), serpent.encode(s))
  end)

  it("writes and reads floats exactly as Python's repr, both ways (random doubles)", function()
    math.randomseed(20261125)
    local vals, texts = {}, {}
    for i = 1, 3000 do
      local d
      if i % 3 == 0 then
        d = math.random() * 10.0 ^ math.random(-30, 30)
      else
        d = string.unpack("<d", string.pack("<i8", math.random(math.mininteger, math.maxinteger)))
      end
      vals[i] = d
      texts[i] = string.format("%016x", string.unpack("<I8", string.pack("<d", d)))
    end
    local enc = serpent.encode(A(vals))
    local out = python([[
import sys, struct, serpent, math
bits, payload = sys.stdin.read().split('\n', 1)
vals = [struct.unpack('<d', bytes.fromhex(h)[::-1])[0] for h in bits.split()]
got = serpent.loads(bytes.fromhex(payload.strip()))
bad = 0
for v, g in zip(vals, got):
    if isinstance(g, dict): g = float(g['value'])
    if not (math.isnan(v) and math.isnan(g)) and struct.pack('<d', v) != struct.pack('<d', g): bad += 1
print('bad', bad, len(got))
print(serpent.dumps(vals).hex())
]], table.concat(texts, " ") .. "\n" .. tohex(enc))
    local l = lines(out)
    assert.are.equal("bad 0 3000", l[1])
    -- Python's own dumps of the same doubles is byte-identical to ours
    assert.are.equal(fromhex(l[2]), enc)
    assert_same(A(vals), serpent.decode(fromhex(l[2])))
  end)

  describe("Pyro4 payloads", function()
    local names = { "batch", "connect", "exception", "invoke", "invoke_noargs", "specials", "uri" }

    it("regenerates the captured fixtures byte for byte from Pyro4's SerpentSerializer", function()
      local out = python("import sys; sys.path.insert(0, '" .. FIXTURES .. "')\n" ..
        "import runpy; sys.argv = ['x', '--print']; runpy.run_path('" .. FIXTURES .. "make_fixtures.py', run_name='__main__')",
        nil, "PYTHONHASHSEED=0")
      local got = {}
      for _, l in ipairs(lines(out)) do
        local name, hex = l:match("^(%S+) (%x+)$")
        if name then got[name] = fromhex(hex) end
      end
      for _, name in ipairs(names) do
        assert.are.equal(readfile(FIXTURES .. name .. ".serpent"), got[name], name)
      end
    end)

    local expected = {
      invoke = A({ "example.test", "method",
        A({ 1, "two", 3.5, null, true, A({ 1, 2 }), { k = "v" }, A({ 4 }) }), { kw = "arg" } }),
      invoke_noargs = A({ "example.test", "ping", A({}), {} }),
      connect = { handshake = "hello", object = "example.test" },
      batch = A({ "example.test", "<batch>",
        A({ A({ "m", A({ 1 }), {} }), A({ "n", A({}), { k = 2 } }) }), null }),
      exception = { __class__ = "builtins.ValueError", __exception__ = true, args = A({ "boom" }),
        attributes = { _pyroTraceback = A({ "Traceback (most recent call last):\n", "ValueError: boom\n" }) } },
      specials = A({ 0 / 0, math.huge, -math.huge, { data = "AP9oaQ==", encoding = "base64" } }),
      uri = { __class__ = "Pyro4.core.URI", state = A({ "PYRO", "example.test", null, "127.0.0.1", 9999 }) },
    }
    for _, name in ipairs(names) do
      it("decodes Pyro4's " .. name .. " payload", function()
        assert_same(expected[name], serpent.decode(readfile(FIXTURES .. name .. ".serpent")))
      end)
    end

    it("finds the object id in Pyro4's CONNECT payload without Lua values", function()
      assert.are.equal("example.test", core.serpent_handshake_object(readfile(FIXTURES .. "connect.serpent")))
    end)

    it("writes an INVOKE that Pyro4's loadsCall unpacks, and a result Pyro4's loads rebuilds", function()
      local call = serpent.encode(T({ "example.test", "method",
        T(table.pack(1, "two", nil, 2.5, A({}), { k = 0 / 0 })), { kw = A({ true }) } }))
      -- byte-identical to Pyro4's own dumpsCall for the same call (one-key dicts)
      local result = serpent.encode(A({ 0 / 0, math.huge, "x" }))
      local out = python([[
import sys, math, Pyro4.util
call, result = [bytes.fromhex(h) for h in sys.stdin.read().split()]
ser = Pyro4.util.SerpentSerializer()
obj, method, vargs, kwargs = ser.loadsCall(call)
print(obj, method, type(vargs).__name__, vargs[:5], math.isnan(vargs[5]['k']), kwargs)
r = ser.loads(result)
print(math.isnan(r[0]), r[1], r[2])
print(ser.dumpsCall('example.test', 'method', (1, 'two', None, 2.5, [], {'k': float('nan')}), {'kw': [True]}).hex())
]], tohex(call) .. " " .. tohex(result))
      local l = lines(out)
      assert.are.equal("example.test method tuple (1, 'two', None, 2.5, []) True {'kw': [True]}", l[1])
      assert.are.equal("True inf x", l[2])
      assert.are.equal(fromhex(l[3]), call)
    end)
  end)
end)
