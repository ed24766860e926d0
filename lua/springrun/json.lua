-- springrun.json: exact JSON for Lua values, the way a Pyro4 peer (Python's
-- json module) writes and reads it. The codec itself is C (springrun.core).
--
-- Lua -> JSON
--   nil, json.null        -> null (json.null == cjson.null, a NULL lightuserdata)
--   true / false          -> true / false
--   integer               -> integer, all 64 bits (math.maxinteger -> 9223372036854775807)
--   float                 -> shortest text that reads back to the same double, as
--                            Python's repr: 0.1 -> 0.1, 1.0 -> 1.0 (an integral
--                            float keeps ".0" or an exponent: 1e+16), NaN, Infinity,
--                            -Infinity (bare, as Python's json writes them)
--   string                -> string; must be valid UTF-8 (raises otherwise: send
--                            raw bytes with json.binary(s))
--   table with keys exactly 1..n            -> array
--   table marked with json.array(t)         -> array, even when empty; with an
--                            integer field t.n the array has n items and nil holes
--                            become null (json.array(table.pack(...)))
--   table with string keys                  -> object
--   empty unmarked table  -> {} (an object: use json.array({}) for [])
--   anything else (functions, userdata, threads, coroutines, cycles, tables
--   mixing index and string keys, sparse indexes, non-string keys) raises,
--   naming the path: "cannot encode a function value at [2].cb".
--   Output is Pyro4's layout: separators ", " and ": ", non-ASCII kept as is
--   (ensure_ascii=False), control characters escaped.
--
-- JSON -> Lua
--   null -> json.null; numbers without fraction/exponent that fit in 64 bits
--   -> integers; other numbers -> floats, and so do integers beyond 64 bits
--   (18446744073709551616 -> 1.8446744073709552e+19: the nearest double);
--   NaN / Infinity / -Infinity accepted; arrays come back marked with
--   json.array (so they encode again as arrays, [] stays []); strings must be
--   valid UTF-8 (a lone \ud800 escape is refused).
--   Errors raise naming the 0-based byte offset and what was expected:
--   "expected ',' or '}' at offset 17". Limits: nesting depth (default 200)
--   and total values (default 1,000,000), see decode(text, opts).
--
-- Binary data: Pyro4 sends bytes as {"data": "<base64>", "encoding": "base64"}
-- (serpent does; its JSON serializer refuses bytes). json.binary(s) builds that
-- table and json.bytes(v) turns one back into the raw string.
local core = require "springrun.core"
local codec = require "springrun.codec"

local M = {}

local c_encode, c_decode = core.json_encode, core.json_decode
local c_array, c_is_array = core.json_array, core.json_is_array
local b64enc, b64dec = core.base64_encode, core.base64_decode
local type, error, tostring = type, error, tostring

--- The JSON null / Python None (the same value as cjson.null).
M.null = core.null

--- Encodes value as JSON text; raises with the path of the offending value.
M.encode = codec.encoder(c_encode)

--- Decodes JSON text; raises naming the byte offset on bad input.
-- opts (optional): { max_depth = 200, max_elements = 1000000 }.
M.decode = codec.decoder("json", c_decode)

--- Marks t (a new table when nil) as a JSON array and returns it.
-- An integer field t.n fixes the length (nil holes encode as null).
M.array = codec.marker("json.array", c_array)

--- True when t is marked as an array (json.array, or decoded from [...]).
function M.is_array(t)
  return c_is_array(t)
end

--- The documented form of raw bytes: {data = <base64>, encoding = "base64"}.
function M.binary(s)
  if type(s) ~= "string" then
    error("json.binary: expected a string, got " .. type(s), 2)
  end
  return { data = b64enc(s), encoding = "base64" }
end

--- The raw bytes of a {data = <base64>, encoding = "base64"} table; raises
-- when v is not one.
function M.bytes(v)
  if type(v) ~= "table" or v.encoding ~= "base64" or type(v.data) ~= "string" then
    error("json.bytes: expected a table {data = <base64 string>, encoding = \"base64\"}, got "
      .. (type(v) == "table" and "a table without that form" or type(v)), 2)
  end
  local s, err = b64dec(v.data)
  if s == nil then error("json.bytes: " .. tostring(err), 2) end
  return s
end

return M
