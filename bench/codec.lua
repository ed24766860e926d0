-- bench/codec.lua -- the Lua half of the codec benchmark (bench/codec.py runs
-- it): encode and decode times of springrun.json, springrun.serpent and
-- lua-cjson on the shapes bench/codec.py writes, no sockets.
--   bin/springrun bench/codec.lua --shapes FILE [--reps N] [--batch_ms MS]
-- FILE is JSON text {"name": value, ...} (read with springrun.json, so
-- integers stay integers); every codec gets the same Lua values. Prints one
-- JSON line per codec, shape and operation: the lowest and the median
-- process CPU time per operation (os.clock) over the runs, and the size of
-- the codec's text. Runs are interleaved (run 1 of every codec, then run
-- 2, ...), each a batch of about --batch_ms after a full garbage collection.
local json = require "springrun.json"
local serpent = require "springrun.serpent"
local cjson = require "cjson"

local opts = { reps = 7, batch_ms = 40 }
do
  local i = 1
  while arg[i] do
    local k, v = arg[i]:match("^%-%-(.+)$"), arg[i + 1]
    if not k or v == nil then error("codec.lua: bad argument " .. tostring(arg[i])) end
    opts[k] = tonumber(v) or v
    i = i + 2
  end
end
if not opts.shapes then error("codec.lua: --shapes FILE is required") end

local f = assert(io.open(opts.shapes, "rb"))
local doc = json.decode(f:read("a"), { max_elements = 10000000 })
f:close()

local codecs = {
  { name = "springrun.json", encode = json.encode, decode = json.decode },
  { name = "springrun.serpent", encode = serpent.encode, decode = serpent.decode },
  { name = "lua-cjson", encode = cjson.encode, decode = cjson.decode },
}

local shape_names = {}
for name in pairs(doc) do shape_names[#shape_names + 1] = name end
table.sort(shape_names)

-- springrun's codecs must give back what they were given (cjson keeps 14
-- digits and turns integers into floats: it is timed, not checked).
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then
    return a == b and math.type(a) == math.type(b)
  end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local clock = os.clock

-- Times fn(arg) k times; returns CPU seconds per call.
local function batch(fn, arg, k)
  collectgarbage("collect")
  local t0 = clock()
  for _ = 1, k do fn(arg) end
  return (clock() - t0) / k
end

local jobs = {}
for _, shape in ipairs(shape_names) do
  local value = doc[shape]
  for _, c in ipairs(codecs) do
    local text = c.encode(value)
    if c.name ~= "lua-cjson" and not same(c.decode(text), value) then
      error(c.name .. " does not round-trip the " .. shape .. " shape")
    end
    for _, op in ipairs { "encode", "decode" } do
      local fn, arg = c[op], op == "encode" and value or text
      -- calibrate: calls per batch of about batch_ms
      local one = batch(fn, arg, 1)
      local k = 1
      while one * k < opts.batch_ms / 1000 / 4 do
        k = k * 2
        one = batch(fn, arg, k)
      end
      k = math.max(1, math.floor(opts.batch_ms / 1000 / math.max(one, 1e-9)))
      jobs[#jobs + 1] = { codec = c.name, shape = shape, op = op, fn = fn, arg = arg, k = k,
                          bytes = #text, times = {} }
    end
  end
end

for _ = 1, opts.reps do
  for _, j in ipairs(jobs) do j.times[#j.times + 1] = batch(j.fn, j.arg, j.k) end
end

for _, j in ipairs(jobs) do
  table.sort(j.times)
  io.stdout:write(string.format(
    '{"codec":"%s","shape":"%s","op":"%s","min_us":%.3f,"median_us":%.3f,"calls":%d,"bytes":%d}\n',
    j.codec, j.shape, j.op, j.times[1] * 1e6, j.times[(#j.times + 1) // 2] * 1e6, j.k, j.bytes))
end
