-- springrun.nameserver: springrun's own name server, a service object with
-- the API of Pyro4's Pyro.NameServer (Pyro4 4.82, Pyro4/naming.py), so that
-- Python's `python3 -m Pyro4.nsc` and PYRONAME: lookups work against it.
-- `springrun ns` exports it (springrun.cmd.ns); it can also be exported like
-- any service:
--
--   local nameserver = require "springrun.nameserver"
--   local ns = nameserver.new()        -- registers "Pyro.NameServer" itself
--   springrun.PyroServiceExporter { service_name = "Pyro.NameServer", service = ns,
--     service_host = "127.0.0.1", service_port = 9090 }:after_properties_set()
--   ns:set_own_uri("PYRO:Pyro.NameServer@127.0.0.1:9090")
--
-- Remote methods (results and errors exactly as Pyro4's; "None" below is
-- nil or springrun.null; "false-ish" is Python's truthiness: None, false, 0,
-- "", an empty list/map):
--   lookup(name, return_metadata=false)
--       -> {"__class__": "Pyro4.core.URI", "state": [...]}, or
--          [uri dict, [metadata...]] when return_metadata is true-ish;
--       unknown name -> Pyro4.errors.NamingError "unknown name: X"
--   register(name, uri, safe=false, metadata=None) -> None
--       uri: a string (checked as Pyro4 parses URIs, stored as given) or a
--       URI class dict (stored as its string); safe and name taken ->
--       NamingError "name already registered: X"; metadata: a list of strings
--       (a string -> TypeError "metadata should not be a str, but another
--       iterable (set, list, etc)")
--   remove(name=None, prefix=None, regex=None) -> number removed; the
--       name server's own entry "Pyro.NameServer" is never removed
--   list(prefix=None, regex=None, metadata_all=None, metadata_any=None,
--        return_metadata=false) -> {name: uri} or {name: [uri, [metadata]]};
--       more than one filter that is not None -> builtins.ValueError "you can
--       only filter on one thing at a time"
--   set_metadata(name, metadata) -> None (unknown -> NamingError)
--   count() -> number of registrations (including "Pyro.NameServer")
--   ping() -> None
-- Keyword arguments (Python's ns.list(prefix="x", return_metadata=True)) are
-- bound to these parameter names (nameserver.PARAMS) the way Python binds
-- them: unknown keyword -> TypeError "NameServer.list() got an unexpected
-- keyword argument 'x'", a parameter given twice -> "... got multiple values
-- for argument 'x'", too many positional -> "... takes from 1 to 6
-- positional arguments but 7 were given". springrun's exporter hands a
-- call's non-empty kwargs over as one extra trailing table; the methods take
-- a trailing map with only string keys (not a list, no "__class__") for
-- kwargs, as no positional argument of this API is such a map (or tag it:
-- nameserver.kwargs(t)). nameserver.call(ns, method, params, kwargs) applies
-- a Pyro4 INVOKE directly.
--
-- Regular expressions (list(regex=...), remove(regex=...)): Pyro4 uses
-- Python's re.match, i.e. anchored at the start of the name and not at the
-- end. springrun implements this subset of Python's syntax, with the same
-- meaning: literals; '.' (any byte but "\n"); classes [abc] [a-z] [^...]
-- (with \d \w \s inside); escapes \d \D \w \W \s \S (ASCII) and \ + any
-- punctuation for itself, \t \n \r; groups (...) (?:...) (?P<name>...);
-- alternation |; quantifiers * + ? {m} {m,} {m,n} {,n} and their lazy forms
-- (*? +? ?? {m,n}?); anchors ^ $ (end or before a final newline) \A \Z.
-- Not supported (-> NamingError "invalid regex: ..." naming the
-- construct): backreferences, lookahead/lookbehind, inline flags (?i),
-- \b \B. Matching works on bytes: '.' and classes see one byte of a UTF-8
-- character at a time, so use them on ASCII names. A regex that needs more
-- than nameserver.MAX_REGEX_STEPS (1,000,000) backtracking steps for one
-- name fails with NamingError "regex too expensive: ..." instead of
-- stalling the server (Python would grind on: "(a*)*b" on 30 a's).
local errors = require "springrun.errors"
local naming = require "springrun.naming"

local M = {}

M.NAMESERVER_NAME = naming.NAMESERVER_NAME
M.NAMESERVER_METADATA = "class:Pyro4.naming.NameServer"

local json
local function get_json()
  json = json or require "springrun.json"
  return json
end

-- ---- Python-style errors -----------------------------------------------------------

local function raise(class, message)
  error(errors.new("remote", message, { class = class, args = { message } }), 0)
end

local function naming_error(message) raise("Pyro4.errors.NamingError", message) end
local function type_error(message) raise("builtins.TypeError", message) end
local function value_error(message) raise("builtins.ValueError", message) end

-- ---- Python truthiness and types -------------------------------------------------------

local function is_none(v)
  return v == nil or v == get_json().null
end

local function truthy(v)
  if is_none(v) or v == false or v == 0 or v == "" then return false end
  if type(v) == "table" then return next(v) ~= nil end
  return true
end

local function py_type(v)
  if is_none(v) then return "NoneType" end
  local t = type(v)
  if t == "boolean" then return "bool" end
  if t == "number" then return math.type(v) == "integer" and "int" or "float" end
  if t == "string" then return "str" end
  if t == "table" then
    if type(v.__class__) == "string" then return v.__class__ end
    if get_json().is_array and get_json().is_array(v) then return "list" end
    if next(v) == nil or rawget(v, 1) ~= nil then return "list" end
    return "dict"
  end
  return t
end

-- A metadata argument -> a sorted list of strings (a set), or raises as
-- Python's `metadata and iter(metadata)` + set(metadata) would.
local function metadata_set(v, what)
  if not truthy(v) then return {} end
  if type(v) == "string" then
    type_error(what .. " should not be a str, but another iterable (set, list, etc)")
  end
  if type(v) ~= "table" then
    type_error(string.format("'%s' object is not iterable", py_type(v)))
  end
  local seen, out = {}, {}
  local items = {}
  if rawget(v, 1) ~= nil or (get_json().is_array and get_json().is_array(v)) then
    for i = 1, #v do items[#items + 1] = v[i] end
  else
    for k in pairs(v) do items[#items + 1] = k end -- a dict iterates over its keys
  end
  for _, m in ipairs(items) do
    if type(m) ~= "string" then
      type_error(string.format("metadata items must be strings, got '%s'", py_type(m)))
    end
    if not seen[m] then
      seen[m] = true
      out[#out + 1] = m
    end
  end
  table.sort(out)
  return out
end

local function list_of(t)
  local j = get_json()
  local out = {}
  for i, v in ipairs(t) do out[i] = v end
  return j.array(out)
end

-- ---- a Python re.match subset (see the header) -----------------------------------------

local function class_digit(c) return c:match("^%d$") ~= nil end
local function class_word(c) return c:match("^[%w_]$") ~= nil end
local function class_space(c) return c:match("^[ \t\n\r\f\v]$") ~= nil end

local ESCAPE_CLASS = {
  d = class_digit, w = class_word, s = class_space,
  D = function(c) return not class_digit(c) end,
  W = function(c) return not class_word(c) end,
  S = function(c) return not class_space(c) end,
}
local ESCAPE_CHAR = { t = "\t", n = "\n", r = "\r", f = "\f", v = "\v", a = "\a" }

local function regex_error(msg, pos)
  error({ regex_error = string.format("%s at position %d", msg, pos - 1) }, 0)
end

-- Parses pattern p into a node tree. Nodes:
--   { t = "one", test = fn(byte-string) }      one byte
--   { t = "seq", items }  { t = "alt", alts }  { t = "rep", node, min, max, lazy }
--   { t = "bol" }  { t = "eol" }  { t = "eos" }
local function parse_regex(p)
  local pos = 1
  local n = #p
  local parse_alt

  local function peek() return p:sub(pos, pos) end

  local function escape_in(inclass)
    local c = p:sub(pos + 1, pos + 1)
    if c == "" then regex_error("bad escape (end of pattern)", pos) end
    pos = pos + 2
    if ESCAPE_CLASS[c] then return nil, ESCAPE_CLASS[c] end
    if ESCAPE_CHAR[c] then return ESCAPE_CHAR[c] end
    if c:match("^%d$") then regex_error("backreferences are not supported: \\" .. c, pos - 2) end
    if not inclass and (c == "b" or c == "B") then
      regex_error("word boundaries are not supported: \\" .. c, pos - 2)
    end
    if not inclass and (c == "A" or c == "Z") then return nil, nil, c end
    if c:match("^%a$") then regex_error("bad escape \\" .. c, pos - 2) end
    return c
  end

  local function parse_class()
    local start = pos
    pos = pos + 1
    local negate = false
    if peek() == "^" then negate = true pos = pos + 1 end
    local tests = {}
    local first = true
    while true do
      if pos > n then regex_error("unterminated character set", start) end
      local c = peek()
      if c == "]" and not first then pos = pos + 1 break end
      first = false
      local lo, fn
      if c == "\\" then
        lo, fn = escape_in(true)
      else
        lo = c
        pos = pos + 1
      end
      if fn then
        tests[#tests + 1] = fn
      elseif peek() == "-" and p:sub(pos + 1, pos + 1) ~= "]" and pos + 1 <= n then
        pos = pos + 1
        local hi
        if peek() == "\\" then
          local h, hfn = escape_in(true)
          if hfn then regex_error("bad character range", pos) end
          hi = h
        else
          hi = peek()
          pos = pos + 1
        end
        if hi:byte() < lo:byte() then regex_error("bad character range " .. lo .. "-" .. hi, pos) end
        local a, b = lo:byte(), hi:byte()
        tests[#tests + 1] = function(ch) local x = ch:byte() return x >= a and x <= b end
      else
        local lit = lo
        tests[#tests + 1] = function(ch) return ch == lit end
      end
    end
    return { t = "one", test = function(ch)
      for _, f in ipairs(tests) do
        if f(ch) then return not negate end
      end
      return negate
    end }
  end

  local function parse_atom()
    local c = peek()
    if c == "(" then
      local start = pos
      pos = pos + 1
      if p:sub(pos, pos) == "?" then
        if p:sub(pos, pos + 1) == "?:" then
          pos = pos + 2
        elseif p:sub(pos, pos + 2) == "?P<" then
          local close = p:find(">", pos, true)
          if not close then regex_error("missing >, unterminated name", pos) end
          pos = close + 1
        else
          regex_error("unsupported group '(" .. p:sub(pos, pos + 1) .. "'", start)
        end
      end
      local node = parse_alt()
      if peek() ~= ")" then regex_error("missing ), unterminated subpattern", start) end
      pos = pos + 1
      return node
    elseif c == "[" then
      return parse_class()
    elseif c == "." then
      pos = pos + 1
      return { t = "one", test = function(ch) return ch ~= "\n" end }
    elseif c == "^" then
      pos = pos + 1
      return { t = "bol" }
    elseif c == "$" then
      pos = pos + 1
      return { t = "eol" }
    elseif c == "\\" then
      local lit, fn, anchor = escape_in(false)
      if anchor == "A" then return { t = "bol" } end
      if anchor == "Z" then return { t = "eos" } end
      if fn then return { t = "one", test = fn } end
      return { t = "one", test = function(ch) return ch == lit end }
    elseif c == "*" or c == "+" or c == "?" then
      regex_error("nothing to repeat", pos)
    elseif c == "{" and p:sub(pos):match("^{%d*,?%d*}") and p:sub(pos):match("^{%d") then
      regex_error("nothing to repeat", pos)
    else
      pos = pos + 1
      return { t = "one", test = function(ch) return ch == c end }
    end
  end

  local function parse_quant(node)
    while true do
      local c = peek()
      local min, max
      local qpos = pos
      if c == "*" then min, max = 0, math.huge pos = pos + 1
      elseif c == "+" then min, max = 1, math.huge pos = pos + 1
      elseif c == "?" then min, max = 0, 1 pos = pos + 1
      elseif c == "{" then
        local a, comma, b, after = p:match("^{(%d*)(,?)(%d*)}()", pos)
        if a == nil or (a == "" and comma == "" ) then return node end -- a literal '{'
        min = a == "" and 0 or tonumber(a)
        if comma == "" then max = min else max = b == "" and math.huge or tonumber(b) end
        if max < min then regex_error("min repeat greater than max repeat", pos + 1) end
        pos = after
      else
        return node
      end
      if node.t == "rep" or node.t == "bol" or node.t == "eol" or node.t == "eos" then
        if node.t == "rep" and not node.lazy_checked then
          regex_error("multiple repeat", qpos)
        end
        regex_error("nothing to repeat", qpos)
      end
      local lazy = false
      if peek() == "?" then lazy = true pos = pos + 1 end
      node = { t = "rep", node = node, min = min, max = max, lazy = lazy }
      if peek() == "*" or peek() == "+" or (peek() == "?" ) then
        regex_error("multiple repeat", pos)
      end
    end
  end

  local function parse_seq()
    local items = {}
    while pos <= n do
      local c = peek()
      if c == "|" or c == ")" then break end
      items[#items + 1] = parse_quant(parse_atom())
    end
    return { t = "seq", items = items }
  end

  function parse_alt()
    local alts = { parse_seq() }
    while peek() == "|" do
      pos = pos + 1
      alts[#alts + 1] = parse_seq()
    end
    if #alts == 1 then return alts[1] end
    return { t = "alt", alts = alts }
  end

  local root = parse_alt()
  if pos <= n then
    if peek() == ")" then regex_error("unbalanced parenthesis", pos) end
    regex_error("unexpected '" .. peek() .. "'", pos)
  end
  return root
end

-- Backtracking matcher with continuations: m(node, s, i, k) -> true | false.
local match_node

local function match_seq(items, idx, s, i, k)
  if idx > #items then return k(i) end
  return match_node(items[idx], s, i, function(j) return match_seq(items, idx + 1, s, j, k) end)
end

local function match_rep(node, s, i, k, count)
  local child = node.node
  local function more()
    if count >= node.max then return false end
    return match_node(child, s, i, function(j)
      if j == i and count >= node.min then return false end -- an empty iteration ends the loop
      return match_rep(node, s, j, k, count + 1)
    end)
  end
  if node.lazy then
    if count >= node.min and k(i) then return true end
    return more()
  end
  if more() then return true end
  return count >= node.min and k(i)
end

-- Steps left for the match in progress: a backtracking matcher can take
-- exponential time ("(a*)*b"), and the name server runs on the Lua thread.
local budget = 0
local BUDGET_EXHAUSTED = {}

function match_node(node, s, i, k)
  budget = budget - 1
  if budget < 0 then error(BUDGET_EXHAUSTED, 0) end
  local t = node.t
  if t == "one" then
    if i <= #s and node.test(s:sub(i, i)) then return k(i + 1) end
    return false
  elseif t == "seq" then
    return match_seq(node.items, 1, s, i, k)
  elseif t == "alt" then
    for _, a in ipairs(node.alts) do
      if match_node(a, s, i, k) then return true end
    end
    return false
  elseif t == "rep" then
    return match_rep(node, s, i, k, 0)
  elseif t == "bol" then
    return i == 1 and k(i)
  elseif t == "eol" then
    return (i == #s + 1 or (i == #s and s:sub(i, i) == "\n")) and k(i)
  elseif t == "eos" then
    return i == #s + 1 and k(i)
  end
  error("regex: unknown node " .. tostring(t))
end

-- Most matching steps one name may take (nameserver.MAX_REGEX_STEPS).
M.MAX_REGEX_STEPS = 1000000

-- nameserver.compile_regex(pattern) -> matcher fn(name) -> boolean (Python's
-- re.match(pattern, name) is not None) | nil, "invalid regex: ..." message.
-- The matcher raises the string "regex too expensive: ..." when a name
-- takes more than nameserver.MAX_REGEX_STEPS steps.
function M.compile_regex(pattern)
  if type(pattern) ~= "string" then
    return nil, "invalid regex: expected a string, got " .. py_type(pattern)
  end
  local ok, root = pcall(parse_regex, pattern)
  if not ok then
    if type(root) == "table" and root.regex_error then return nil, "invalid regex: " .. root.regex_error end
    error(root, 0)
  end
  return function(name)
    budget = M.MAX_REGEX_STEPS
    local mok, r = pcall(match_node, root, name, 1, function() return true end)
    if mok then return r == true end
    if r == BUDGET_EXHAUSTED then
      error(string.format("regex too expensive: more than %d steps matching '%s' against '%s'",
        M.MAX_REGEX_STEPS, pattern, name), 0)
    end
    error(r, 0)
  end
end

-- ---- keyword arguments ------------------------------------------------------------------

-- Parameter names of the remote methods, in order (Pyro4's signatures).
M.PARAMS = {
  lookup = { "name", "return_metadata" },
  register = { "name", "uri", "safe", "metadata" },
  remove = { "name", "prefix", "regex" },
  list = { "prefix", "regex", "metadata_all", "metadata_any", "return_metadata" },
  set_metadata = { "name", "metadata" },
  count = {},
  ping = {},
}
local REQUIRED = { lookup = 1, register = 2, set_metadata = 2, remove = 0, list = 0, count = 0, ping = 0 }

-- nameserver.bind(method, params, kwargs) -> n, args: binds a Pyro4 call's
-- positional params (a list; may hold springrun.null) and kwargs (a map or
-- None) to the method's parameter list as Python would, or raises
-- builtins.TypeError with Python's message.
function M.bind(method, params, kwargs)
  local names = M.PARAMS[method]
  if names == nil then
    raise("builtins.AttributeError", string.format("'NameServer' object has no attribute '%s'", tostring(method)))
  end
  local args = {}
  local np = 0
  if type(params) == "table" then np = params.n or #params end
  if np > #names then
    local lo, hi = REQUIRED[method] + 1, #names + 1
    local takes = lo == hi and string.format("%d positional argument%s", hi, hi == 1 and "" or "s")
      or string.format("from %d to %d positional arguments", lo, hi)
    type_error(string.format("NameServer.%s() takes %s but %d were given", method, takes, np + 1))
  end
  local given = {}
  for i = 1, np do
    args[i] = params[i]
    given[i] = true
  end
  if type(kwargs) == "table" then
    local keys = {}
    for k in pairs(kwargs) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      local idx
      for i, nm in ipairs(names) do if nm == k then idx = i end end
      if idx == nil then
        type_error(string.format("NameServer.%s() got an unexpected keyword argument '%s'", method, tostring(k)))
      end
      if given[idx] then
        type_error(string.format("NameServer.%s() got multiple values for argument '%s'", method, k))
      end
      args[idx] = kwargs[k]
      given[idx] = true
    end
  end
  local missing = {}
  for i = 1, REQUIRED[method] do
    if not given[i] then missing[#missing + 1] = "'" .. names[i] .. "'" end
  end
  if #missing > 0 then
    local list = missing[1]
    if #missing == 2 then list = missing[1] .. " and " .. missing[2] end
    type_error(string.format("NameServer.%s() missing %d required positional argument%s: %s",
      method, #missing, #missing == 1 and "" or "s", list))
  end
  for i = 1, #names do
    if is_none(args[i]) then args[i] = nil end
  end
  return #names, args
end

-- ---- the service object ----------------------------------------------------------------

-- The remote methods live in this table only (the exporter exposes every
-- function reachable through the object's __index): nothing else is here.
local NameServer = {}
NameServer.__index = NameServer
NameServer.__name = "springrun.NameServer"

-- Private state per name server object (kept outside so that no field of the
-- object itself is reachable remotely).
local STATE = setmetatable({}, { __mode = "k" })

local function state(self)
  local st = STATE[self]
  if st == nil then error("springrun.NameServer: call the methods with ':' on a name server object", 3) end
  return st
end

local function check_name(name)
  if type(name) ~= "string" then type_error("name must be a str") end
end

-- Entries sorted by name (a stable order for list results and removal).
local function sorted_names(st)
  local out = {}
  for k in pairs(st.entries) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- Is v the keyword-argument map of a call? springrun's exporter passes a
-- Pyro4 call's non-empty kwargs as one extra trailing table argument. The
-- last argument is taken for kwargs when it is tagged with
-- nameserver.kwargs(t), or when it is a non-empty map (not a list, no
-- "__class__" key) with only string keys: no positional argument of these
-- methods is such a map (URIs come as strings or class dicts, metadata as
-- lists).
local function is_kwargs(v)
  if type(v) ~= "table" then return false end
  if getmetatable(v) == M.Kwargs then return true end
  if v.__class__ ~= nil or next(v) == nil then return false end
  if get_json().is_array(v) or rawget(v, 1) ~= nil then return false end
  for k in pairs(v) do
    if type(k) ~= "string" then return false end
  end
  return true
end

local function args_of(method, ...)
  local n = select("#", ...)
  local params = table.pack(...)
  local kwargs
  if n > 0 and is_kwargs(params[n]) then
    kwargs = params[n]
    params[n] = nil
    params.n = n - 1
  end
  local _, args = M.bind(method, params, kwargs)
  return args
end

function NameServer.lookup(self, ...)
  local st = state(self)
  local a = args_of("lookup", ...)
  local name, return_metadata = a[1], a[2]
  local e = type(name) == "string" and st.entries[name] or nil
  if e == nil then
    if type(name) ~= "string" then
      type_error(string.format('can only concatenate str (not "%s") to str', py_type(name)))
    end
    naming_error("unknown name: " .. name)
  end
  local u = naming.parse_uri(e.uri)
  local dict = naming.uri_dict(u)
  if truthy(return_metadata) then
    return get_json().array({ dict, list_of(e.metadata) })
  end
  return dict
end

function NameServer.register(self, ...)
  local st = state(self)
  local a = args_of("register", ...)
  local name, uri, safe, metadata = a[1], a[2], a[3], a[4]
  if type(uri) == "table" and uri.__class__ == "Pyro4.core.URI" then
    local s, why = naming.to_url(uri)
    if not s then raise("Pyro4.errors.PyroError", why) end
    uri = s
  elseif type(uri) ~= "string" then
    type_error("only URIs or strings can be registered")
  else
    local ok, why = naming.parse_uri(uri)
    if not ok then raise("Pyro4.errors.PyroError", why) end
  end
  check_name(name)
  local meta = metadata_set(metadata, "metadata")
  if truthy(safe) and st.entries[name] ~= nil then
    naming_error("name already registered: " .. name)
  end
  st.entries[name] = { uri = uri, metadata = meta }
  st.count = nil
  if st.log then st.log:debug("registered %s -> %s", name, uri) end
  return nil
end

function NameServer.set_metadata(self, ...)
  local st = state(self)
  local a = args_of("set_metadata", ...)
  local name, metadata = a[1], a[2]
  check_name(name)
  local meta = metadata_set(metadata, "metadata")
  local e = st.entries[name]
  if e == nil then naming_error("unknown name: " .. name) end
  e.metadata = meta
  return nil
end

-- list() on the state with already bound arguments; returns a map.
local function do_list(st, prefix, regex, metadata_all, metadata_any, return_metadata)
  local filters = 0
  for _, v in ipairs({ prefix, regex, metadata_all, metadata_any }) do
    if v ~= nil then filters = filters + 1 end
  end
  if filters > 1 then value_error("you can only filter on one thing at a time") end
  local select_fn
  if truthy(prefix) then
    if type(prefix) ~= "string" then
      type_error(string.format("startswith first arg must be str or a tuple of str, not %s", py_type(prefix)))
    end
    select_fn = function(name) return name:sub(1, #prefix) == prefix end
  elseif truthy(regex) then
    local m, why = M.compile_regex(regex)
    if not m then naming_error(why) end
    select_fn = function(name)
      local mok, r = pcall(m, name)
      if not mok then naming_error(tostring(r)) end
      return r
    end
  elseif truthy(metadata_all) then
    local want = metadata_set(metadata_all, "metadata_all")
    select_fn = function(_, e)
      local have = {}
      for _, x in ipairs(e.metadata) do have[x] = true end
      for _, x in ipairs(want) do if not have[x] then return false end end
      return true
    end
  elseif truthy(metadata_any) then
    local want = metadata_set(metadata_any, "metadata_any")
    select_fn = function(_, e)
      for _, x in ipairs(e.metadata) do
        for _, y in ipairs(want) do if x == y then return true end end
      end
      return false
    end
  else
    select_fn = function() return true end
  end
  local out = {}
  for _, name in ipairs(sorted_names(st)) do
    local e = st.entries[name]
    if select_fn(name, e) then
      if truthy(return_metadata) then
        out[name] = get_json().array({ e.uri, list_of(e.metadata) })
      else
        out[name] = e.uri
      end
    end
  end
  return out
end

function NameServer.list(self, ...)
  local st = state(self)
  local a = args_of("list", ...)
  return do_list(st, a[1], a[2], a[3], a[4], a[5])
end

function NameServer.remove(self, ...)
  local st = state(self)
  local a = args_of("remove", ...)
  local name, prefix, regex = a[1], a[2], a[3]
  if truthy(name) and type(name) == "string" and st.entries[name] ~= nil and name ~= M.NAMESERVER_NAME then
    st.entries[name] = nil
    if st.log then st.log:debug("removed %s", name) end
    return 1
  end
  local items
  if truthy(prefix) then
    items = do_list(st, prefix, nil, nil, nil, nil)
  elseif truthy(regex) then
    items = do_list(st, nil, regex, nil, nil, nil)
  else
    return 0
  end
  local n = 0
  for k in pairs(items) do
    if k ~= M.NAMESERVER_NAME then
      st.entries[k] = nil
      n = n + 1
    end
  end
  return n
end

function NameServer.count(self, ...)
  local st = state(self)
  args_of("count", ...)
  local n = 0
  for _ in pairs(st.entries) do n = n + 1 end
  return n
end

function NameServer.ping(self, ...)
  state(self)
  args_of("ping", ...)
  return nil
end

-- ---- construction and local (non-remote) helpers -------------------------------------------

-- Marker metatable for a keyword-argument map passed as the last argument:
-- ns:list(nameserver.kwargs { prefix = "a.", return_metadata = true }).
M.Kwargs = { __name = "springrun.nameserver.kwargs" }
function M.kwargs(t) return setmetatable(t or {}, M.Kwargs) end

-- nameserver.new([opts]) -> a name server object. opts.uri: the name
-- server's own URI ("PYRO:Pyro.NameServer@host:port"), registered under
-- "Pyro.NameServer" with metadata {"class:Pyro4.naming.NameServer"} (as
-- Pyro4's NameServerDaemon does); it can be given later with
-- nameserver.set_own_uri(ns, uri). opts.logger: a springrun.log logger.
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, NameServer)
  STATE[self] = { entries = {}, log = opts.logger }
  if opts.uri then M.set_own_uri(self, opts.uri) end
  return self
end

-- nameserver.set_own_uri(ns, uri): (re)registers ns's own entry.
function M.set_own_uri(ns, uri)
  local st = STATE[ns]
  if st == nil then error("nameserver.set_own_uri: not a name server object", 2) end
  local ok, why = naming.parse_uri(uri)
  if not ok then error(string.format("nameserver.set_own_uri: invalid uri '%s': %s", tostring(uri), why), 2) end
  st.entries[M.NAMESERVER_NAME] = { uri = uri, metadata = { M.NAMESERVER_METADATA } }
end

-- nameserver.call(ns, method, params, kwargs) -> result: a Pyro4 INVOKE
-- (positional params list + kwargs map) applied to ns, as an exporter that
-- hands over kwargs would do it.
function M.call(ns, method, params, kwargs)
  if M.PARAMS[method] == nil then
    raise("builtins.AttributeError", string.format("'NameServer' object has no attribute '%s'", tostring(method)))
  end
  local n, args = M.bind(method, params, kwargs)
  return NameServer[method](ns, table.unpack(args, 1, n))
end

-- True when v is a name server object made here.
function M.is_nameserver(v) return STATE[v] ~= nil end

M.NameServer = NameServer

return M
