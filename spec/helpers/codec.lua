-- Spec helpers for the payload codecs (json_spec, serpent_spec): deep
-- equality that tells integers from floats, -0.0 from 0.0 and (optionally)
-- the sequence marks apart, a Python subprocess for oracle checks, and small
-- text helpers.
--
--   local codec = require "helpers.codec"
--   local same, assert_same = codec.comparer({ marks = true })
--   local out = codec.python("print(1)")
local luassert = require "luassert"

local M = {}

M.PYTHON = "/usr/bin/python3"

function M.isnan(x) return x ~= x end

local isnan = M.isnan

-- Returns same(a, b [, path]) -> ok, why and assert_same(expected, got):
-- deep equality that also checks integer vs float and -0.0; with
-- opts.marks also the json.array and serpent.tuple marks.
function M.comparer(opts)
  local marks = opts and opts.marks
  local json, serpent
  if marks then
    json, serpent = require "springrun.json", require "springrun.serpent"
  end
  local function same(a, b, path)
    path = path or "value"
    if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
    if type(a) == "number" then
      if math.type(a) ~= math.type(b) then return false, path .. ": " .. math.type(a) .. " vs " .. math.type(b) end
      if isnan(a) and isnan(b) then return true end
      if a ~= b or (a == 0 and 1 / a ~= 1 / b) then
        return false, path .. ": " .. string.format("%a vs %a", a, b)
      end
      return true
    end
    if type(a) ~= "table" then
      if a ~= b then return false, path .. ": " .. tostring(a) .. " vs " .. tostring(b) end
      return true
    end
    if marks then
      if json.is_array(a) ~= json.is_array(b) then return false, path .. ": array mark differs" end
      if serpent.is_tuple(a) ~= serpent.is_tuple(b) then return false, path .. ": tuple mark differs" end
    end
    for k, v in pairs(a) do
      local ok, why = same(v, b[k], path .. "." .. tostring(k))
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
  return same, assert_same
end

-- Runs a Python program with `input` on its stdin (env: "VAR=x ..." put
-- before the command); returns stdout and stderr. Raises when it exits
-- non-zero, so a missing python3 or Python module fails the spec.
function M.python(prog, input, env)
  local src = os.tmpname()
  local inp = os.tmpname()
  local ok, out = pcall(function()
    local f = assert(io.open(src, "wb")); f:write(prog); f:close()
    f = assert(io.open(inp, "wb")); f:write(input or ""); f:close()
    local p = assert(io.popen((env or "") .. " " .. M.PYTHON .. " " .. src .. " < " .. inp .. " 2>&1", "r"))
    local o = p:read("a")
    local okc, _, code = p:close()
    assert(okc, "python failed (" .. tostring(code) .. "): " .. o)
    return o
  end)
  os.remove(src)
  os.remove(inp)
  if not ok then error(out, 2) end
  return out
end

-- The "\n"-terminated lines of s.
function M.lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

function M.tohex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end

-- The error fn(...) raises (asserts that it raises).
function M.raises(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

function M.ends_with(s, tail) return s:sub(-#tail) == tail end

-- A refusal pinned exactly: c_fn (core.<fmt>_encode/_decode) returns nil,
-- exactly msg and the error name errname; fn (the module's encode/decode)
-- raises an error ending with msg. make() gives a fresh input per call.
function M.check_refusal(c_fn, fn, make, msg, errname)
  local v, got, name = c_fn(make())
  luassert.is_nil(v)
  luassert.are.equal(msg, got)
  luassert.are.equal(errname, name)
  local err = M.raises(fn, make())
  luassert.is_true(M.ends_with(err, msg), err)
end

-- Containers big and deep enough for every way the decoders build tables
-- (src/lsr_tbuild.c: values wait on the Lua stack, the table is made at
-- their count; past 16,384 waiting slots, or deep in the stack, they are
-- flushed in chunks). decode(text) -> value; is_list(t) -> bool. Checks
-- that every item lands once and in order, that a repeated key keeps its
-- last value when flushes fall between its uses, and that 100 levels of
-- 1,000-item lists (more waiting values than the stack bound) come back
-- whole. quote is the codec's string quote.
function M.check_big_containers(decode, is_list, quote)
  local items = {}
  for i = 1, 40000 do items[i] = i end
  local t = decode("[" .. table.concat(items, ",") .. "]")
  luassert.is_true(is_list(t))
  luassert.are.equal(40000, #t)
  local bad
  for i = 1, 40000 do
    if t[i] ~= i or math.type(t[i]) ~= "integer" then bad = bad or i end
  end
  luassert.is_nil(bad)

  local kv = {}
  for i = 1, 30000 do kv[i] = string.format("%sk%d%s: %d", quote, i % 7000, quote, i) end
  local m = decode("{" .. table.concat(kv, ", ") .. "}")
  local n = 0
  for k, v in pairs(m) do
    n = n + 1
    local r = tonumber(k:sub(2))
    local last = r <= 2000 and 28000 + r or 21000 + r
    if v ~= last then bad = bad or k end
  end
  luassert.is_nil(bad)
  luassert.are.equal(7000, n)

  local deep = decode(("[" .. ("1,"):rep(999)):rep(100) .. "0" .. ("]"):rep(100))
  for level = 1, 100 do
    luassert.is_true(is_list(deep))
    luassert.are.equal(1000, #deep)
    for i = 1, 999 do
      if deep[i] ~= 1 then bad = bad or level end
    end
    deep = deep[1000]
  end
  luassert.is_nil(bad)
  luassert.are.equal(0, deep)
end

return M
