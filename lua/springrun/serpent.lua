-- springrun.serpent: Pyro4's default payload format (serializer id 1), the
-- Python literals that Python's serpent module writes and ast.literal_eval
-- reads. The codec is C (springrun.core); nothing is ever evaluated.
--
-- The value mapping is springrun.json's (same null, same array marker, same
-- refusals and error texts), plus what serpent has and JSON lacks:
--
-- Lua -> serpent (what a Python peer's serpent.loads gets)
--   nil, springrun.null   -> None
--   true / false          -> True / False
--   integer               -> int (all 64 bits)
--   float                 -> float in repr form (0.1, 1.0, 1e+16, -0.0), the
--                            shortest text that reads back to the same double;
--                            +/-inf -> 1e30000 / -1e30000, NaN ->
--                            {'__class__':'float','value':'nan'} (Pyro4 turns
--                            that back into float('nan'))
--   string                -> str as Python's repr writes it; must be valid UTF-8
--                            (raises otherwise: send raw bytes with
--                            serpent.binary(s))
--   table with keys 1..n, or marked with springrun.json.array(t) -> list
--   table marked with serpent.tuple(t)                           -> tuple
--                            (both honour an integer field t.n: length n, nil
--                            holes -> None, as json.array(table.pack(...)))
--   table with string keys -> dict;  empty unmarked table -> {} (a dict)
--   anything else (functions, userdata, threads, cycles, mixed or sparse
--   keys, non-string keys) raises naming the path: "cannot encode a function
--   value at [2].cb". Nesting is limited to 200 levels (Python's parser
--   refuses deeper brackets).
--   Output: the line "# serpent utf-8 python3.2\n", then the literal with
--   serpent's compact separators ("[1,2]", "{'a':1}", "(1,)").
--
-- serpent -> Lua
--   None -> springrun.null; True/False -> booleans; ints -> integers, and
--   ints beyond 64 bits -> floats (the nearest double, as springrun.json);
--   floats -> floats (1e30000 -> inf; the nan class dict -> NaN); str ->
--   string (escapes decoded; must be UTF-8); list, tuple, set -> arrays marked
--   like decoded JSON arrays ((1,) -> {1}, () and an empty set -> {});
--   dict -> table (keys may be strings, numbers or booleans; a float key
--   with an integral value becomes an integer key, as in any Lua table; a
--   tuple key is refused). Bytes arrive as serpent writes them, the table
--   {data = "<base64>", encoding = "base64"}: serpent.bytes(v) gives the raw
--   string (the same form as springrun.json.binary / json.bytes).
--   Complex numbers, bytes literals, names other than None/True/False and
--   any expression are refused naming the 0-based byte offset:
--   "serpent: complex numbers and arithmetic are not supported at offset 4".
--   Limits: nesting depth (default 200) and total values (default
--   1,000,000), see decode(text, opts).
local core = require "springrun.core"
local json = require "springrun.json"
local codec = require "springrun.codec"

local M = {}

local c_encode, c_decode = core.serpent_encode, core.serpent_decode
local c_tuple, c_is_tuple = core.serpent_tuple, core.serpent_is_tuple

--- Python's None (the same value as springrun.null and cjson.null).
M.null = core.null

--- The header line every serpent document starts with.
M.HEADER = "# serpent utf-8 python3.2\n"

--- Encodes value as a serpent document (bytes); raises with the path of
-- the offending value.
M.encode = codec.encoder(c_encode)

--- Decodes a serpent document; raises naming the byte offset on bad input.
-- opts (optional): { max_depth = 200, max_elements = 1000000 }.
M.decode = codec.decoder("serpent", c_decode)

--- Marks t (a new table when nil) as a tuple and returns it: it encodes as
-- "(a,b)" ("(a,)" with one item). An integer field t.n fixes the length.
-- An array marked with json.array may be re-marked as a tuple.
M.tuple = codec.marker("serpent.tuple", c_tuple)

--- True when t is marked with serpent.tuple.
function M.is_tuple(t)
  return c_is_tuple(t)
end

--- Marks t as an array (list); the same as springrun.json.array.
M.array = json.array
--- True when t is marked as an array (json.array, or decoded).
M.is_array = json.is_array

--- Raw bytes as serpent sends them: {data = <base64>, encoding = "base64"}.
M.binary = json.binary
--- The raw string of a {data = <base64>, encoding = "base64"} table.
M.bytes = json.bytes

return M
