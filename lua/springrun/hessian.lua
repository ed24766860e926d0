-- springrun.hessian: Hessian 2 values and messages as Caucho Hessian 4.0.38
-- (Java) writes and reads them; Hessian 1 replies and calls are read too.
-- The codec is C (springrun.core); this module gives it its Lua API.
--
-- Java -> Lua (decode)
--   null                  -> hessian.null (== json.null); an object's null
--                            field is left out of its table (reads as nil)
--   boolean               -> boolean
--   int, long             -> integer (Short/Byte boxes, sent as
--                            ShortHandle/ByteHandle objects, too)
--   double, Float         -> float
--   String, char          -> string (UTF-8; surrogate pairs joined)
--   byte[]                -> hessian.binary table: v.data is the bytes
--   Date                  -> hessian.date table: v.ms is ms since the epoch (UTC)
--   ArrayList, iterator   -> list (marked like json.array: stays a list, [] too)
--   arrays, other lists   -> list with its Java type: hessian.type_of(v) ==
--                            "[int", "java.util.LinkedList", ...
--   HashMap               -> table (marked as a map: stays a map, {} too)
--   TreeMap etc.          -> table with its Java type (hessian.type_of)
--   an object (bean)      -> table of its fields; hessian.type_of(v) is the
--                            class, hessian.fields_of(v) the field order
--   a shared or cyclic object graph comes back as the same shared or cyclic
--   Lua tables.
--
-- Lua -> Java (encode)
--   nil, hessian.null -> null; booleans; integers -> int when they fit in
--   32 bits, else long (hessian.long(n) forces long); floats -> double;
--   strings -> String (must be UTF-8: raw bytes go as hessian.binary(s));
--   hessian.binary(s) -> byte[]; hessian.date(ms) -> Date;
--   tables with keys exactly 1..n, json.array-marked or hessian.list(t) ->
--   list (hessian.list(t, "[int") typed, e.g. an int[]); other tables ->
--   HashMap (hessian.map(t, "java.util.TreeMap") typed; an empty unmarked
--   table is an empty map); hessian.object("com.example.Bean", t [, fields])
--   -> an instance of that class with t's fields (in the order `fields`
--   gives, else t's string keys sorted). Decoded values keep their marks, so
--   they encode back to what they were. A table met twice (shared or in a
--   cycle) is sent once and then as a back-reference.
--   Functions, threads and userdata are refused naming the path:
--   "hessian: cannot encode a function value at [2].cb".
--
-- Errors raise; decode errors name the byte offset ("hessian: unknown
-- Hessian 2 code 0x40 at offset 4"). Limits (opts of decode, decode_reply,
-- decode_call): max_depth (200), max_elements (1,000,000), max_bytes (the
-- message, 64 MiB), max_string (one string or binary, 16 MiB).
local core = require "springrun.core"

local M = {}

local type, error, select, setmetatable, getmetatable, rawget =
  type, error, select, setmetatable, getmetatable, rawget
local math_type = math.type
local mt = core.hessian_mt
local c_encode, c_decode = core.hessian_encode, core.hessian_decode
local c_call, c_reply, c_fault = core.hessian_encode_call, core.hessian_encode_reply,
  core.hessian_encode_fault
local c_decode_reply, c_decode_call = core.hessian_decode_reply, core.hessian_decode_call

--- The null value (the same lightuserdata as json.null).
M.null = core.null

local function check_string(fname, s, what)
  if type(s) ~= "string" then
    error(fname .. ": expected a string" .. (what or "") .. ", got " .. type(s), 3)
  end
end

local function limits(opts)
  if opts == nil then return end
  if type(opts) ~= "table" then error("hessian: opts must be a table", 3) end
  return opts.max_depth, opts.max_elements, opts.max_bytes, opts.max_string
end

--- Encodes one value as Hessian 2; raises naming the path of a bad value.
function M.encode(v)
  local s, err = c_encode(v)
  if s == nil then error(err, 2) end
  return s
end

--- Decodes one Hessian value; opts: limits, and version = 1 for Hessian 1 bytes.
function M.decode(bytes, opts)
  check_string("hessian.decode", bytes)
  local v, err = c_decode(bytes, opts and opts.version or 2, limits(opts))
  if v == nil and err ~= nil then error(err, 2) end
  return v
end

--- A Hessian 2 call: encode_call("add", 2, 3) -> H 02 00 C "add" 2 args.
-- Trailing nil arguments count (they go as null).
function M.encode_call(method, ...)
  check_string("hessian.encode_call", method, " method name")
  local s, err = c_call(method, { ... }, select("#", ...))
  if s == nil then error(err, 2) end
  return s
end

--- A Hessian 2 reply carrying v.
function M.encode_reply(v)
  local s, err = c_reply(v)
  if s == nil then error(err, 2) end
  return s
end

--- A Hessian 2 fault: code ("ServiceException"), message and an optional
-- detail value (e.g. hessian.exception("java.lang.RuntimeException", msg),
-- which a Java client throws as that exception).
function M.encode_fault(code, message, detail)
  check_string("hessian.encode_fault", code, " code")
  check_string("hessian.encode_fault", message, " message")
  local s, err = c_fault(code, message, detail)
  if s == nil then error(err, 2) end
  return s
end

--- Decodes a reply (Hessian 2 H 02 00 R / F, or Hessian 1 r 01 00).
-- Returns true, value for a reply; false, fault for a fault, where fault is
-- { code = ..., message = ..., detail = <decoded value or nil>,
--   exception = <the detail's Java class, e.g. "java.lang.IllegalStateException"> };
-- a third result is the Hessian version of the reply (2 or 1).
function M.decode_reply(bytes, opts)
  check_string("hessian.decode_reply", bytes)
  local kind, v, version = c_decode_reply(bytes, limits(opts))
  if kind == nil then error(v, 2) end
  if kind == "reply" then return true, v, version end
  local detail = v.detail
  if detail == M.null then detail = nil end
  local message = v.message
  if message == M.null then message = nil end
  return false, {
    code = v.code,
    message = message,
    detail = detail,
    exception = type(detail) == "table" and M.type_of(detail) or nil,
  }, version
end

--- Decodes a call (Hessian 2 H 02 00 C, or Hessian 1 c 0x 00 m ... z).
-- Returns method, args (a list with args.n), version (2 or 1).
function M.decode_call(bytes, opts)
  check_string("hessian.decode_call", bytes)
  local method, args, version = c_decode_call(bytes, limits(opts))
  if method == nil then error(args, 2) end
  return method, args, version
end

-- Metatables of typed containers, one per (kind, Java type).
local typed = { list = {}, map = {} }

local function typed_mt(kind, jtype)
  local cache = typed[kind]
  local m = cache[jtype]
  if m == nil then
    m = { __hessian = kind, __jtype = jtype }
    cache[jtype] = m
  end
  return m
end

local function mark(fname, t, m)
  if t == nil then t = {} end
  if type(t) ~= "table" then error(fname .. ": expected a table, got " .. type(t), 3) end
  local old = getmetatable(t)
  if old ~= nil and old ~= m and (type(old) ~= "table" or rawget(old, "__hessian") == nil)
      and old ~= core.json_array_mt then
    error(fname .. ": the table already has a metatable", 3)
  end
  return setmetatable(t, m)
end

--- Marks t (a new table when nil) as a list, typed when jtype is given
-- ("[int", "java.util.LinkedList"); returns t.
function M.list(t, jtype)
  if jtype == nil then return mark("hessian.list", t, core.json_array_mt) end
  check_string("hessian.list", jtype, " type")
  return mark("hessian.list", t, typed_mt("list", jtype))
end

--- Marks t as a map, typed when jtype is given ("java.util.TreeMap").
function M.map(t, jtype)
  if jtype == nil then
    t = t or {}
    return mark("hessian.map", t, typed_mt("map", ""))
  end
  check_string("hessian.map", jtype, " type")
  return mark("hessian.map", t, typed_mt("map", jtype))
end
-- the untyped map mark (decoded HashMaps carry it too)
typed.map[""] = mt.map

--- Marks t as an instance of the Java class `class`; fields (optional) is
-- the field order sent, otherwise t's string keys sorted.
function M.object(class, t, fields)
  check_string("hessian.object", class, " class name")
  if fields ~= nil and type(fields) ~= "table" then
    error("hessian.object: fields must be a list of strings", 2)
  end
  return mark("hessian.object", t, { __hessian = "object", __jtype = class, __fields = fields })
end

--- The detail of a fault that a Java client throws as `class` (a Throwable
-- with a message constructor): an object with field detailMessage.
function M.exception(class, message)
  return M.object(class, { detailMessage = message }, { "detailMessage" })
end

--- byte[]: a table { data = s } the encoder writes as binary.
function M.binary(s)
  check_string("hessian.binary", s)
  return setmetatable({ data = s }, mt.binary)
end

--- java.util.Date: a table { ms = n } (ms since the epoch, UTC).
function M.date(ms)
  if math_type(ms) ~= "integer" then
    error("hessian.date: expected integer milliseconds, got " .. (math_type(ms) or type(ms)), 2)
  end
  return setmetatable({ ms = ms }, mt.date)
end

--- long: an integer sent as a Java long even when it fits in an int.
function M.long(n)
  if math_type(n) ~= "integer" then
    error("hessian.long: expected an integer, got " .. (math_type(n) or type(n)), 2)
  end
  return setmetatable({ value = n }, mt.long)
end

--- What v is on the wire: "object", "list", "map", "binary", "date",
-- "long", or nil for plain Lua values and unmarked tables.
function M.kind(v)
  if type(v) ~= "table" then return nil end
  local m = getmetatable(v)
  if m == core.json_array_mt then return "list" end
  return type(m) == "table" and rawget(m, "__hessian") or nil
end

--- The Java class of an object or the type of a typed list/map, else nil.
function M.type_of(v)
  if type(v) ~= "table" then return nil end
  local m = getmetatable(v)
  local j = type(m) == "table" and rawget(m, "__jtype") or nil
  if j == "" then return nil end
  return j
end

--- The field order of an object (a list of names), else nil.
function M.fields_of(v)
  if type(v) ~= "table" then return nil end
  local m = getmetatable(v)
  return type(m) == "table" and rawget(m, "__fields") or nil
end

return M
