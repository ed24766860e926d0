-- springrun.core's Pyro4 wire codec: captured Pyro4 4.82 vectors, every
-- validation error with its exact text, and the incremental framer.
local core = require "springrun.core"
local cjson = require "cjson"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local function fromhex(h)
  return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end))
end

local function tohex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function load_vectors()
  local f = assert(io.open(here .. "fixtures/pyro4-vectors.json", "rb"))
  local vs = cjson.decode(f:read("a"))
  f:close()
  return vs
end

local vectors = load_vectors()

-- The documented header fields of a vector, parsed from its note
-- ("... | hdr: type=CONNECT flags=0x10 seq=0 ser=2 annotations=['CORR']
-- data_len=48 checksum=0x355c"); nil for the garbage vector.
local function documented(v)
  local hdr = v.note:match("| hdr: (.*)$")
  if not hdr then return nil end
  local t, flags, seq, ser, anns, dlen, ck = hdr:match(
    "^type=(%u+) flags=0x(%x+) seq=(%d+) ser=(%d+) annotations=%[(.-)%] data_len=(%d+) checksum=0x(%x+)$")
  assert(t, "unparsed note of " .. v.name .. ": " .. hdr)
  local keys = {}
  for k in anns:gmatch("'(....)'") do keys[#keys + 1] = k end
  return {
    type = assert(core["MSG_" .. t], "unknown message type " .. t),
    flags = tonumber(flags, 16), seq = tonumber(seq), serializer = tonumber(ser),
    keys = keys, data_len = tonumber(dlen), checksum = tonumber(ck, 16),
  }
end

-- Pyro4's checksum, computed here independently of the C code.
local function checksum(h)
  return (h.type + 48 + h.data_len + h.ann_len + h.serializer + h.flags + h.seq + 0x34E9) & 0xFFFF
end

-- A raw 24-byte header with any field forced (magic, version, checksum...).
local function header(h)
  local f = setmetatable(h, { __index = { magic = "PYRO", version = 48, type = 4, flags = 0,
    seq = 1, data_len = 0, serializer = 2, ann_len = 0, reserved = 0 } })
  local ck = h.checksum or checksum(f)
  return f.magic .. string.pack(">I2I2I2I2I4I2I2I2I2", f.version, f.type, f.flags, f.seq,
    f.data_len, f.serializer, f.ann_len, f.reserved, ck)
end

local FIXED_CORR = fromhex("00112233445566778899aabbccddeeff")
local HMAC_CORR = fromhex("000102030405060708090a0b0c0d0e0f")

local V1 = fromhex(vectors[1].hex) -- pyro4client.connect: 72 bytes, no annotations
local ADD_RESPONSE -- raw.add.response: data 1 byte, one CORR annotation (22 bytes)
for _, v in ipairs(vectors) do
  if v.name == "raw.add.response" then ADD_RESPONSE = fromhex(v.hex) end
end

-- A comparable text for one framer/decoder outcome.
local function show(msg, err, name)
  if not msg then return "ERR " .. tostring(name) .. " " .. tostring(err) end
  local parts = {}
  for _, a in ipairs(msg.annotations) do parts[#parts + 1] = a[1] .. "=" .. tohex(a[2]) end
  return string.format("MSG t=%d f=%d s=%d ser=%d dl=%d al=%d ck=%d size=%d [%s] %s", msg.type,
    msg.flags, msg.seq, msg.serializer, msg.data_len, msg.ann_len, msg.checksum, msg.size,
    table.concat(parts, ","), tohex(msg.data))
end

-- Feeds chunks one by one, draining after each until the stream breaks;
-- returns every outcome and the bytes left pending.
local function run_framer(chunks, max_message)
  local f <close> = core.framer(max_message)
  local out, broken = {}, false
  for _, c in ipairs(chunks) do
    f:feed(c)
    while not broken do
      local msg, err, name = f:next()
      if msg then
        out[#out + 1] = show(msg)
      else
        if err then
          out[#out + 1] = show(nil, err, name)
          broken = true
        end
        break
      end
    end
  end
  return out, f:pending()
end

local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

-- Every two-piece split of s gives the outcome of feeding s whole; so does
-- feeding it one byte at a time. Returns the whole-feed outcome.
local function assert_split_invariant(s, label)
  local whole, pend = run_framer({ s })
  for cut = 0, #s do
    local got, p = run_framer({ s:sub(1, cut), s:sub(cut + 1) })
    if not same(whole, got) or p ~= pend then
      error(string.format("%s split at byte %d differs:\n%s\nvs whole:\n%s", label, cut,
        table.concat(got, "\n"), table.concat(whole, "\n")))
    end
  end
  local bytes = {}
  for i = 1, #s do bytes[i] = s:sub(i, i) end
  local got, p = run_framer(bytes)
  assert(same(whole, got) and p == pend, label .. " fed byte by byte differs")
  return whole, pend
end

describe("springrun.wire #unit", function()
  describe("captured Pyro4 vectors", function()
    it("has the 52 vectors of the fixture", function()
      assert.are.equal(52, #vectors)
    end)

    for _, v in ipairs(vectors) do
      local doc = documented(v)
      if doc then
        it("decodes " .. v.name .. " to its documented header and re-encodes it byte-identically", function()
          local bytes = fromhex(v.hex)
          local msg, err = core.wire_decode(bytes)
          assert.is_nil(err)
          assert.are.equal(doc.type, msg.type)
          assert.are.equal(doc.flags, msg.flags)
          assert.are.equal(doc.seq, msg.seq)
          assert.are.equal(doc.serializer, msg.serializer)
          assert.are.equal(doc.data_len, msg.data_len)
          assert.are.equal(doc.checksum, msg.checksum)
          assert.are.equal(doc.checksum, checksum(msg))
          assert.are.equal(#bytes, msg.size)
          assert.are.equal(24 + msg.ann_len + msg.data_len, #bytes)
          assert.are.equal(bytes:sub(#bytes - doc.data_len + 1), msg.data)
          assert.are.equal(doc.data_len, #msg.data)
          local keys, ann_total = {}, 0
          for i, a in ipairs(msg.annotations) do
            keys[i] = a[1]
            assert.are.equal(a[2], msg.ann[a[1]])
            ann_total = ann_total + 6 + #a[2]
          end
          assert.are.same(doc.keys, keys)
          assert.are.equal(msg.ann_len, ann_total)
          if msg.ann.CORR then assert.are.equal(16, #msg.ann.CORR) end
          if msg.ann.HMAC then assert.are.equal(20, #msg.ann.HMAC) end
          if v.name:match("^raw%..*%.request$") or v.name:match("^ns%..*%.request$") then
            if msg.ann.CORR then assert.are.equal(FIXED_CORR, msg.ann.CORR) end
          end
          if v.name:match("^hmac%.") then assert.are.equal(HMAC_CORR, msg.ann.CORR) end
          local again = core.wire_encode(msg.type, msg.flags, msg.seq, msg.serializer, msg.data,
            msg.annotations)
          assert.are.equal(v.hex, tohex(again))
        end)
      else
        it("rejects the garbage vector " .. v.name .. " as bad magic", function()
          local msg, err, name = core.wire_decode(fromhex(v.hex))
          assert.is_nil(msg)
          assert.are.equal('bad magic at offset 0: got 0x47455420, expected 0x5059524f ("PYRO")', err)
          assert.are.equal("SR_EMAGIC", name)
        end)
      end
    end

    it("encodes the spec's worked CONNECT example with checksum 0x355c", function()
      local s = core.wire_encode(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, core.SER_JSON,
        string.rep("x", 48))
      assert.are.equal("5059524f003000010010000000000030000200000000355c", tohex(s:sub(1, 24)))
    end)

    it("sums the full 32-bit data length into the checksum before masking", function()
      local data = string.rep("a", 0x1FFFF)
      local s = core.wire_encode(core.MSG_RESULT, 0, 7, core.SER_JSON, data)
      local expected = (5 + 48 + 0x1FFFF + 0 + 2 + 0 + 7 + 0x34E9) & 0xFFFF
      assert.are.equal(expected, string.unpack(">I2", s, 23))
      assert.are.equal(0x1FFFF, core.wire_decode(s).data_len)
    end)
  end)

  describe("validation errors", function()
    local too_big_header = header { data_len = 0x7FFFFFF0 }
    local cases = {
      { "wrong magic", "HTTP" .. V1:sub(5), nil,
        'bad magic at offset 0: got 0x48545450, expected 0x5059524f ("PYRO")', "SR_EMAGIC" },
      { "magic wrong in its last byte only", "PYRX" .. V1:sub(5), nil,
        'bad magic at offset 0: got 0x50595258, expected 0x5059524f ("PYRO")', "SR_EMAGIC" },
      { "unsupported version", V1:sub(1, 4) .. "\0\47" .. V1:sub(7), nil,
        "unsupported protocol version at offset 4: got 47, expected 48", "SR_EVERSION" },
      { "bad checksum", V1:sub(1, 22) .. "\x12\x34" .. V1:sub(25), nil,
        "header checksum mismatch at offset 22: got 0x1234, expected 0x355c", "SR_ECHECKSUM" },
      { "data length over the limit", V1, 47,
        "message too large at offset 12: data length 48 + annotations length 0 = 48 bytes, limit 47",
        "SR_ETOOBIG" },
      { "data + annotations over the limit", ADD_RESPONSE, 22,
        "message too large at offset 12: data length 1 + annotations length 22 = 23 bytes, limit 22",
        "SR_ETOOBIG" },
      { "a ~2 GB claim over the default limit", too_big_header, nil,
        "message too large at offset 12: data length 2147483632 + annotations length 0 = 2147483632 bytes, limit 67108864",
        "SR_ETOOBIG" },
      { "negative data length", header { data_len = 0x80000000 }, nil,
        "negative data length at offset 12: 0x80000000 has bit 31 set", "SR_ETOOBIG" },
      { "negative data length even under the largest limit", header { data_len = 0xFFFFFFFF },
        core.WIRE_MAX_MESSAGE_CAP,
        "negative data length at offset 12: 0xffffffff has bit 31 set", "SR_ETOOBIG" },
      { "truncated header", V1:sub(1, 10), nil,
        "truncated message at offset 10: header needs 24 bytes, got 10", "SR_ETRUNCATED" },
      { "empty input", "", nil,
        "truncated message at offset 0: header needs 24 bytes, got 0", "SR_ETRUNCATED" },
      { "truncated body", V1:sub(1, 71), nil,
        "truncated message at offset 71: message needs 72 bytes, got 71", "SR_ETRUNCATED" },
      { "annotation chunk shorter than its 6-byte header", header { ann_len = 4, data_len = 0 } .. "CORR",
        nil, "malformed annotation chunk at offset 24: 4 bytes left, a chunk header needs 6",
        "SR_EANNOTATION" },
      { "annotation value overrunning the annotations",
        header { ann_len = 22 } .. "CORR\0\20" .. string.rep("u", 16), nil,
        "malformed annotation chunk at offset 24: value length 20 overruns the annotations by 4 bytes",
        "SR_EANNOTATION" },
      { "second annotation chunk overrunning by 1 byte",
        header { ann_len = 22 + 7, data_len = 1 } .. "CORR\0\16" .. string.rep("u", 16) .. "HMAC\0\2" .. "h" .. "3",
        nil, "malformed annotation chunk at offset 46: value length 2 overruns the annotations by 1 byte",
        "SR_EANNOTATION" },
      { "trailing bytes after one message", V1 .. "P", nil,
        "trailing bytes at offset 72: 1 byte after a complete message", "SR_EINVAL" },
    }
    for _, c in ipairs(cases) do
      local what, bytes, max, text, name = c[1], c[2], c[3], c[4], c[5]
      it("wire_decode rejects " .. what .. " with its exact error", function()
        local msg, err, ename = core.wire_decode(bytes, max)
        assert.is_nil(msg)
        assert.are.equal(text, err)
        assert.are.equal(name, ename)
      end)
      if name ~= "SR_ETRUNCATED" and name ~= "SR_EINVAL" then
        it("the framer rejects " .. what .. " with the same error", function()
          local f <close> = core.framer(max)
          f:feed(bytes)
          local msg, err, ename = f:next()
          assert.is_nil(msg)
          assert.are.equal(text, err)
          assert.are.equal(name, ename)
          -- the stream stays broken: the same error again
          local _, err2, ename2 = f:next()
          assert.are.equal(text, err2)
          assert.are.equal(name, ename2)
        end)
      end
    end

    it("accepts data + annotations exactly at the limit", function()
      local msg = core.wire_decode(ADD_RESPONSE, 23)
      assert.are.equal("3", msg.data)
      assert.are.equal(FIXED_CORR, msg.ann.CORR)
    end)

    it("checks the checksum before the sign of the data length", function()
      local _, err, name = core.wire_decode(header { data_len = 0x80000000, checksum = 0 })
      assert.are.equal("SR_ECHECKSUM", name)
      assert.are.equal("header checksum mismatch at offset 22: got 0x0000, expected "
        .. string.format("0x%04x", (4 + 48 + 0x80000000 + 2 + 1 + 0x34E9) & 0xFFFF), err)
    end)

    it("ignores the reserved field, as Pyro4 does", function()
      local msg = core.wire_decode(header { reserved = 0xBEEF, data_len = 2 } .. "{}")
      assert.are.equal("{}", msg.data)
    end)
  end)

  describe("wire_encode", function()
    it("writes annotations in the given order and decodes them back", function()
      local anns = { { "HMAC", string.rep("\xff", 20) }, { "CORR", FIXED_CORR }, { "XTRA", "" } }
      local s = core.wire_encode(core.MSG_INVOKE, core.FLAG_ONEWAY, 65535, core.SER_JSON, "[]", anns)
      assert.are.equal(24 + 26 + 22 + 6 + 2, #s)
      local msg = assert(core.wire_decode(s))
      assert.are.same(anns, msg.annotations)
      assert.are.equal(65535, msg.seq)
      assert.are.equal(core.FLAG_ONEWAY, msg.flags)
      assert.are.equal("", msg.ann.XTRA)
    end)

    it("encodes an empty payload with no annotations", function()
      local s = core.wire_encode(core.MSG_PING, 0, 0, core.SER_PING, "")
      assert.are.equal(24, #s)
      assert.are.equal("", core.wire_decode(s).data)
    end)

    local misuse = {
      { "a type out of range", { 65536, 0, 0, 2, "" }, "type must be 0..65535, got 65536" },
      { "a negative seq", { 4, 0, -1, 2, "" }, "seq must be 0..65535, got -1" },
      { "a non-string payload", { 4, 0, 0, 2, {} }, "string expected, got table" },
      { "an annotation key that is not 4 bytes", { 4, 0, 0, 2, "", { { "COR", "x" } } },
        "wire_encode: anns[1] key must be a 4-byte string" },
      { "an annotation that is not a pair", { 4, 0, 0, 2, "", { "CORR" } },
        "wire_encode: anns[1] must be a {key, value} pair, got string" },
      { "an annotation value over 65535 bytes", { 4, 0, 0, 2, "", { { "BIGV", string.rep("v", 65536) } } },
        "wire_encode: anns[1] (BIGV) value is 65536 bytes, limit 65535" },
      { "annotations over 65535 bytes in total",
        { 4, 0, 0, 2, "", { { "AAAA", string.rep("v", 40000) }, { "BBBB", string.rep("v", 30000) } } },
        "wire_encode: annotations total 70012 bytes, limit 65535" },
    }
    for _, m in ipairs(misuse) do
      it("raises on " .. m[1], function()
        local ok, err = pcall(core.wire_encode, table.unpack(m[2], 1, 6))
        assert.is_false(ok)
        assert.truthy(err:find(m[3], 1, true), err)
      end)
    end

    it("raises on a max_message out of range", function()
      assert.has_error(function() core.wire_decode(V1, -1) end)
      assert.has_error(function() core.framer(core.WIRE_MAX_MESSAGE_CAP + 1) end)
    end)
  end)

  describe("framer", function()
    it("waits on a partial header, then yields the message", function()
      local f <close> = core.framer()
      f:feed(V1:sub(1, 10))
      assert.are.equal(nil, (f:next()))
      assert.are.equal(1, select("#", f:next()))
      assert.are.equal(10, f:pending())
      f:feed(V1:sub(11))
      local msg = f:next()
      assert.are.equal(core.MSG_CONNECT, msg.type)
      assert.are.equal(V1:sub(25), msg.data)
      assert.are.equal(0, f:pending())
      assert.is_nil(f:next())
    end)

    it("waits on a partial body, then yields the message", function()
      local f <close> = core.framer()
      f:feed(ADD_RESPONSE:sub(1, 30))
      assert.is_nil(f:next())
      assert.are.equal(30, f:pending())
      f:feed(ADD_RESPONSE:sub(31))
      local msg = f:next()
      assert.are.equal("3", msg.data)
      assert.are.equal(FIXED_CORR, msg.ann.CORR)
    end)

    it("yields several messages from one feed, in order", function()
      local f <close> = core.framer()
      f:feed(V1 .. ADD_RESPONSE .. V1 .. V1:sub(1, 3))
      assert.are.equal(core.MSG_CONNECT, f:next().type)
      assert.are.equal(core.MSG_RESULT, f:next().type)
      assert.are.equal(core.MSG_CONNECT, f:next().type)
      assert.is_nil(f:next())
      assert.are.equal(3, f:pending())
    end)

    it("gives identical results for every vector split at every byte boundary", function()
      for _, v in ipairs(vectors) do
        local whole, pend = assert_split_invariant(fromhex(v.hex), v.name)
        assert.are.equal(1, #whole)
        if documented(v) then
          assert.are.equal("MSG", whole[1]:sub(1, 3))
          assert.are.equal(0, pend)
        else
          assert.are.equal('ERR SR_EMAGIC bad magic at offset 0: got 0x47455420, expected 0x5059524f ("PYRO")', whole[1])
        end
      end
    end)

    it("gives identical results for a concatenation of vectors split at every byte boundary", function()
      local picks, parts = { 1, 2, 4, 10, 12, 14, 25, 49 }, {}
      for i, k in ipairs(picks) do parts[i] = fromhex(vectors[k].hex) end
      local whole, pend = assert_split_invariant(table.concat(parts), "concatenation")
      assert.are.equal(#picks, #whole)
      assert.are.equal(0, pend)
      for i, k in ipairs(picks) do
        assert.are.equal(show(core.wire_decode(fromhex(vectors[k].hex))), whole[i])
      end
    end)

    it("returns every valid message before a broken one, at any split", function()
      local s = V1 .. ADD_RESPONSE .. "HTTP" .. V1:sub(5)
      local whole = assert_split_invariant(s, "valid then bad magic")
      assert.are.equal(3, #whole)
      assert.are.equal('ERR SR_EMAGIC bad magic at offset 0: got 0x48545450, expected 0x5059524f ("PYRO")', whole[3])
    end)

    it("frames all vectors fed in irregular chunks like a real socket", function()
      local all, expected = {}, {}
      for _, v in ipairs(vectors) do
        if documented(v) then
          all[#all + 1] = fromhex(v.hex)
          expected[#expected + 1] = show(core.wire_decode(all[#all]))
        end
      end
      local s = table.concat(all)
      for _, size in ipairs { 1, 7, 23, 24, 25, 100, 1000, 4096 } do
        local chunks = {}
        for i = 1, #s, size do chunks[#chunks + 1] = s:sub(i, i + size - 1) end
        local got, pend = run_framer(chunks)
        assert.are.same(expected, got)
        assert.are.equal(0, pend)
      end
    end)

    it("refuses a header claiming ~2 GB as too large as soon as its 24 bytes arrive", function()
      local h = header { data_len = 0x7FFFFFF0 }
      local f <close> = core.framer()
      f:feed(h:sub(1, 23))
      assert.are.equal(1, select("#", f:next()))
      f:feed(h:sub(24))
      local msg, err, name = f:next()
      assert.is_nil(msg)
      assert.are.equal("message too large at offset 12: data length 2147483632 + annotations length 0 = 2147483632 bytes, limit 67108864", err)
      assert.are.equal("SR_ETOOBIG", name)
      assert.are.equal(24, f:pending())
    end)

    it("does not allocate for a ~2 GB claim it accepts under a raised limit", function()
      local function vmsize_kb()
        local fh = io.open("/proc/self/status")
        if not fh then return nil end
        local s = fh:read("a")
        fh:close()
        return tonumber(s:match("VmSize:%s*(%d+)"))
      end
      local before = vmsize_kb()
      local f <close> = core.framer(core.WIRE_MAX_MESSAGE_CAP)
      f:feed(header { data_len = 0x7FFFFFFF })
      assert.are.equal(1, select("#", f:next()))
      f:feed("abc")
      assert.are.equal(1, select("#", f:next()))
      assert.are.equal(27, f:pending())
      local after = vmsize_kb()
      if before and after then
        assert.is_true(after - before < 64 * 1024, "address space grew by " .. (after - before) .. " kB")
      end
    end)

    it("applies its max_message to data + annotations", function()
      local f <close> = core.framer(22)
      f:feed(ADD_RESPONSE)
      local _, err, name = f:next()
      assert.are.equal("SR_ETOOBIG", name)
      assert.are.equal("message too large at offset 12: data length 1 + annotations length 22 = 23 bytes, limit 22", err)
      local g <close> = core.framer(23)
      g:feed(ADD_RESPONSE)
      assert.are.equal("3", g:next().data)
    end)

    it("closes idempotently through close, __close and __gc, and refuses use after close", function()
      local f = core.framer()
      f:feed(V1)
      f:close()
      f:close()
      assert.are.equal("springrun.framer (closed)", tostring(f))
      assert.has_error(function() f:next() end, "attempt to use a closed framer")
      assert.has_error(function() f:feed("x") end, "attempt to use a closed framer")
      assert.has_error(function() f:pending() end, "attempt to use a closed framer")
      local g
      do
        local h <close> = core.framer()
        g = h
        h:feed(V1)
      end
      assert.are.equal("springrun.framer (closed)", tostring(g))
      g = nil
      collectgarbage()
      collectgarbage()
    end)

    it("exposes the protocol constants", function()
      assert.are.same({ 1, 2, 3, 4, 5, 6 }, { core.MSG_CONNECT, core.MSG_CONNECTOK,
        core.MSG_CONNECTFAIL, core.MSG_INVOKE, core.MSG_RESULT, core.MSG_PING })
      assert.are.same({ 1, 2, 4, 8, 16, 32, 64 }, { core.FLAG_EXCEPTION, core.FLAG_COMPRESSED,
        core.FLAG_ONEWAY, core.FLAG_BATCH, core.FLAG_META_ON_CONNECT, core.FLAG_ITEMSTREAMRESULT,
        core.FLAG_KEEPSERIALIZED })
      assert.are.same({ 1, 2, 3, 4, 42 }, { core.SER_SERPENT, core.SER_JSON, core.SER_MARSHAL,
        core.SER_PICKLE, core.SER_PING })
      assert.are.equal(24, core.WIRE_HEADER_SIZE)
      assert.are.equal(48, core.WIRE_PROTOCOL)
    end)
  end)
end)
