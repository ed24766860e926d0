-- Replays every file of the fuzz corpora (spec/fixtures/fuzz/<target>/, the
-- seeds of `make fuzz` plus any crash input found since) through the
-- decoder its target exercises, via springrun.core: wire -> the framer (fed
-- whole and byte by byte, with a small and the default limit) and
-- wire_decode; json -> json_decode (with small limits) and the CONNECT
-- handshake scan; serpent -> serpent_decode and its handshake scan; hessian
-- -> hessian_decode (both versions), hessian_decode_call and _reply; http
-- -> the HTTP listeners' request reader (http_scan), whole and byte by
-- byte, with the daemon's and with small limits. Each must return a value
-- or fail with an error message: never crash, never raise. So a crash fixed
-- once stays fixed.
local core = require "springrun.core"

local ROOT = "spec/fixtures/fuzz"

local function files(dir)
  local out = {}
  local p = assert(io.popen("find " .. dir .. " -type f 2>/dev/null | sort"))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- A decoder result is fine when it is a value, or nil with a string message.
local function clean(ok, v, msg)
  if not ok then return false, "raised: " .. tostring(v) end
  if v == nil and type(msg) ~= "string" then return false, "failed without a message" end
  return true
end

-- Drains a framer: every outcome is a message, "need more" or an error.
local function drain(f)
  for _ = 1, 100000 do
    local m, err = f:next()
    if m == nil then return err == nil or type(err) == "string" end
  end
  return false
end

describe("springrun fuzz corpora replay #unit", function()
  it("has corpora for the wire, json, serpent, hessian and http targets", function()
    for _, t in ipairs({ "wire", "json", "serpent", "hessian", "http" }) do
      assert.is_true(#files(ROOT .. "/" .. t) > 0, "no corpus files for " .. t)
    end
  end)

  it("frames every wire corpus file whole, byte by byte and with a small limit", function()
    for _, path in ipairs(files(ROOT .. "/wire")) do
      local data = read(path)
      for _, max in ipairs({ 4096, core.WIRE_DEFAULT_MAX_MESSAGE }) do
        local ok, res = pcall(function()
          local f = core.framer(max)
          f:feed(data)
          assert(drain(f))
          local g = core.framer(max)
          for i = 1, math.min(#data, 4096) do
            g:feed(data:sub(i, i))
            assert(drain(g))
          end
          return true
        end)
        assert.is_true(ok and res, path .. ": " .. tostring(res))
        local fine, why = clean(pcall(core.wire_decode, data, max))
        assert.is_true(fine, path .. ": " .. tostring(why))
      end
    end
  end)

  -- json and serpent: the decoder with default and small limits (depth 3,
  -- 10 elements), and the CONNECT handshake scan.
  for _, t in ipairs({
    { "json", core.json_decode, core.json_handshake_object },
    { "serpent", core.serpent_decode, core.serpent_handshake_object },
  }) do
    local target, decode, handshake_object = t[1], t[2], t[3]
    it("decodes or cleanly refuses every " .. target .. " corpus file", function()
      for _, path in ipairs(files(ROOT .. "/" .. target)) do
        local data = read(path)
        local fine, why = clean(pcall(decode, data))
        assert.is_true(fine, path .. ": " .. tostring(why))
        fine, why = clean(pcall(decode, data, 3, 10))
        assert.is_true(fine, path .. ": " .. tostring(why))
        local ok, err = pcall(handshake_object, data)
        assert.is_true(ok, path .. ": handshake scan raised " .. tostring(err))
      end
    end)
  end

  -- hessian: each file as a value (Hessian 2 and 1), a call and a reply,
  -- with default and small limits.
  it("decodes or cleanly refuses every hessian corpus file", function()
    local paths = files(ROOT .. "/hessian")
    assert.is_true(#paths > 0, "no corpus files for hessian")
    for _, path in ipairs(paths) do
      local data = read(path)
      for _, lim in ipairs({ {}, { 3, 10, 4096, 64 } }) do
        for _, f in ipairs({
          function() return core.hessian_decode(data, 2, table.unpack(lim, 1, 4)) end,
          function() return core.hessian_decode(data, 1, table.unpack(lim, 1, 4)) end,
          function() return core.hessian_decode_call(data, table.unpack(lim, 1, 4)) end,
          function() return core.hessian_decode_reply(data, table.unpack(lim, 1, 4)) end,
        }) do
          local fine, why = clean(pcall(f))
          assert.is_true(fine, path .. ": " .. tostring(why))
        end
      end
    end
  end)

  -- http: the requests read do not depend on how the bytes were split, and
  -- a refusal ends them either way (its status may differ: a path too long
  -- is seen before or after a bad byte in it).
  it("reads or cleanly refuses every http corpus file, whole and byte by byte", function()
    local paths = files(ROOT .. "/http")
    assert.is_true(#paths > 0, "no corpus files for http")
    local function requests(list)
      local out, refused = {}, false
      for _, line in ipairs(list) do
        if line:match("^refused ") then refused = true else out[#out + 1] = line end
      end
      return out, refused
    end
    for _, path in ipairs(paths) do
      local data = read(path)
      for _, lim in ipairs({ {}, { 64, 8, 16 } }) do
        local ok, whole = pcall(core.http_scan, data, 0, table.unpack(lim, 1, 3))
        assert.is_true(ok, path .. ": " .. tostring(whole))
        local ok2, bytewise = pcall(core.http_scan, data, 1, table.unpack(lim, 1, 3))
        assert.is_true(ok2, path .. ": " .. tostring(bytewise))
        local r1, f1 = requests(whole)
        local r2, f2 = requests(bytewise)
        assert.same(r1, r2, path)
        assert.equal(f1, f2, path)
        for _, line in ipairs(whole) do
          assert.truthy(line:match("^refused %d+ .+") or line:match("^%S+ .- [%a-]+ %d+$"), path .. ": " .. line)
        end
      end
    end
  end)
end)
