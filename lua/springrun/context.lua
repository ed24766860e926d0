-- springrun.context: the application context, the Lua DSL that replaces
-- Spring Python's XML. The graph work (definitions, dependency edges, cycle
-- and unknown-ref checks, eager order, creation stack, singleton cache and
-- creation order) is done by the C container (core.container(), src/container.c);
-- this module parses definitions, resolves classes, builds values and calls
-- user code.
--
--   local springrun = require "springrun"
--   local ctx = springrun.context {
--     remoteService = { class = "server.Service" },
--     exporter = { class = springrun.PyroServiceExporter,
--                  props = { service_name = "ServiceName",
--                            service = springrun.ref "remoteService" } },
--   }
--   ctx:get_object("exporter"); ctx:has_object(id); ctx:object_ids(); ctx:close()
--
-- springrun.context(defs [, defs2, ...]) takes tables keyed by object id (or
-- configs made by M.config, e.g. from springrun.xml); a later table overrides
-- an earlier id. Within one Lua table ids are read in sorted order (a Lua
-- table has no writing order); eager singletons are created in dependency
-- order, otherwise in that order.
--
-- Definition keys (anything else is an error naming the valid ones):
--   class          a table, a constructor function, or "module.Class" (see below)
--   factory        a function or "module.function"; its return value is the object
--   args           constructor/factory arguments: the array part positionally
--                  (args.n, when given, is the count, so nils can be passed),
--                  the other keys together as one extra, final table argument
--   props          name -> value, assigned as obj[name] = value after creation
--   scope          "singleton" (default: one object, cached) or "prototype"
--                  (a new object on every get_object and every ref)
--   lazy_init      true: a singleton is created on first use, not with the context
--   init_method    name of a method called (obj:name()) after after_properties_set
--   destroy_method name of a method called on close (singletons only)
--   depends_on     id or list of ids created before this object
--   parent         id of a definition whose class/factory, args, props,
--                  init_method and destroy_method are inherited (child entries
--                  override; props per name, args as a whole); scope,
--                  lazy_init, depends_on and abstract are never inherited
--   abstract       true: only a parent; get_object on it is an error
--
-- Values in args and props: plain values; springrun.ref(id) (the other object;
-- a prototype gives a new one each time); springrun.object{...} (an inner,
-- anonymous definition, created anew with its owner); and plain tables (no
-- metatable), copied with refs and inner definitions inside them resolved,
-- recursively. A table with a metatable is passed as it is.
--
-- Classes: a function is called with the args. A table with a `new` function
-- is instantiated through it: when new's first parameter is named `self`
-- (written `function C:new(...)`) it is called as C:new(...), otherwise as
-- C.new(...). A table without `new` but with a __call metamethod is called:
-- C(...). A string "a.b.C" is resolved as require("a.b").C (or require("a.b.C")
-- when there is no module "a.b"); a name without a dot is require(name).
-- "springpython.X" names map to "springrun.X" (so the seed's
-- springpython.remoting.pyro.PyroServiceExporter works); a mapped class that
-- springrun does not have yet fails with "not implemented yet".
--
-- Lifecycle of each object: construct, assign props, (a singleton is stored
-- here, so the log reads as the seed's), obj:after_properties_set() when it
-- has that method, then the init_method. A singleton whose initialisation
-- fails is dropped again and never destroyed. On ctx:close() created
-- singletons are destroyed newest first: the destroy_method if named,
-- otherwise obj:destroy() when obj._disposable is truthy (exporters and
-- proxies); a failing destroy is logged and the others still run. Inner
-- objects built for a singleton are destroyed right after it, newest first.
-- M.close_all() closes every open context, newest first.
--
-- Errors are raised as strings starting "springrun.context: " and naming the
-- object id; an error from user code (constructor, factory, property setter,
-- after_properties_set, init_method) keeps its message and traceback.
local M = {}

local core = require "springrun.core"
local log = require "springrun.log"
local errors = require "springrun.errors"

local container_log = log.get("springrun.container.ObjectContainer")
local ctx_log = log.get("springrun.context.ApplicationContext")
local factory_log = log.get("springrun.factory.ReflectiveObjectFactory")

local format = string.format
local traceback = debug.traceback

local VALID_KEYS = {
  "abstract", "args", "class", "depends_on", "destroy_method", "factory",
  "init_method", "lazy_init", "parent", "props", "scope",
}
local VALID = {}
for _, k in ipairs(VALID_KEYS) do VALID[k] = true end

-- Configuration mistakes raise errors.config_error objects (printed without
-- a traceback by the CLI; tostring and string methods see the message).
local function fail(fmt, ...)
  error(errors.config_error("springrun.context: " .. format(fmt, ...)), 0)
end

---------------------------------------------------------------------------
-- Markers: refs, inner definitions, configs

local Ref = { __name = "springrun.Ref" }
Ref.__index = Ref
function Ref:__tostring() return "ref(" .. self.id .. ")" end

-- springrun.ref(id): a reference to the object `id` of the same context.
function M.ref(id)
  if type(id) ~= "string" or id == "" then
    error("springrun.ref: object id must be a non-empty string, got " .. tostring(id), 2)
  end
  return setmetatable({ id = id }, Ref)
end

function M.is_ref(v) return getmetatable(v) == Ref end

local Inner = { __name = "springrun.InnerObject" }
Inner.__index = Inner
function Inner:__tostring() return "object(" .. tostring(self.def.class or self.def.factory) .. ")" end

-- springrun.object{ class = ..., props = ... }: an inner, anonymous definition
-- usable as a value in props/args (lists and maps too). It is created anew
-- each time its owner is created.
function M.object(def)
  if type(def) ~= "table" then
    error("springrun.object: expected a definition table, got " .. type(def), 2)
  end
  return setmetatable({ def = def }, Inner)
end

local Config = { __name = "springrun.Config" }
Config.__index = Config
function Config:__tostring() return self.name end

-- A named, ordered set of definitions: entries = { {id, def}, ... }. Used by
-- springrun.xml; springrun.context accepts it wherever it accepts a table.
function M.config(name, entries)
  return setmetatable({ name = tostring(name), entries = entries or {} }, Config)
end

function M.is_config(v) return getmetatable(v) == Config end

---------------------------------------------------------------------------
-- Definition parsing

local function edit_distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function suggestion(key)
  if type(key) ~= "string" then return "" end
  local best, bestd
  for _, k in ipairs(VALID_KEYS) do
    local d = edit_distance(key:lower(), k)
    if not bestd or d < bestd then best, bestd = k, d end
  end
  if bestd and bestd <= math.max(2, #key // 3) then return format(" (did you mean '%s'?)", best) end
  for _, k in ipairs(VALID_KEYS) do
    if #key >= 4 and key:lower():sub(1, 4) == k:sub(1, 4) then return format(" (did you mean '%s'?)", k) end
  end
  return ""
end

-- Checks one definition's keys and value types; returns a normalized copy.
-- `label` names it in errors ("object 'x'" or "object 'x', inner object at props.y").
local function parse_def(label, def, inner)
  if type(def) ~= "table" or getmetatable(def) ~= nil then
    fail("%s: a definition must be a plain table, got %s", label,
      getmetatable(def) == Ref and "a ref (use it inside props or args)" or type(def))
  end
  for k in pairs(def) do
    if not VALID[k] then
      fail("%s: unknown definition key '%s'%s; valid keys: %s", label, tostring(k), suggestion(k),
        table.concat(VALID_KEYS, ", "))
    end
  end
  local d = {}
  if def.class ~= nil and def.factory ~= nil then
    fail("%s: give either class or factory, not both", label)
  end
  local c = def.class
  if c ~= nil and type(c) ~= "string" and type(c) ~= "table" and type(c) ~= "function"
      and type(c) ~= "userdata" then
    fail("%s: class must be a table, a function or a \"module.Class\" string, got %s", label, type(c))
  end
  local f = def.factory
  if f ~= nil and type(f) ~= "string" and type(f) ~= "function" and type(f) ~= "table" then
    fail("%s: factory must be a function or a \"module.function\" string, got %s", label, type(f))
  end
  d.class, d.factory = c, f
  if def.args ~= nil and (type(def.args) ~= "table" or getmetatable(def.args) ~= nil) then
    fail("%s: args must be a plain table, got %s", label, type(def.args))
  end
  d.args = def.args
  if def.props ~= nil then
    if type(def.props) ~= "table" or getmetatable(def.props) ~= nil then
      fail("%s: props must be a plain table of name = value, got %s", label, type(def.props))
    end
    for k in pairs(def.props) do
      if type(k) ~= "string" then
        fail("%s: props keys must be property names (strings), got %s %s", label, type(k), tostring(k))
      end
    end
  end
  d.props = def.props
  local scope = def.scope
  if scope == nil then scope = "singleton" end
  if scope ~= "singleton" and scope ~= "prototype" then
    fail("%s: scope must be \"singleton\" or \"prototype\", got %s", label, tostring(scope))
  end
  d.scope = scope
  for _, k in ipairs({ "lazy_init", "abstract" }) do
    if def[k] ~= nil and type(def[k]) ~= "boolean" then
      fail("%s: %s must be a boolean, got %s", label, k, type(def[k]))
    end
  end
  d.lazy_init = def.lazy_init == true
  d.abstract = def.abstract == true
  if inner and d.abstract then fail("%s: an inner object cannot be abstract", label) end
  for _, k in ipairs({ "init_method", "destroy_method", "parent" }) do
    if def[k] ~= nil and (type(def[k]) ~= "string" or def[k] == "") then
      fail("%s: %s must be a non-empty string, got %s", label, k, tostring(def[k]))
    end
  end
  d.init_method, d.destroy_method, d.parent = def.init_method, def.destroy_method, def.parent
  local deps = def.depends_on
  if deps == nil then
    d.depends_on = {}
  elseif type(deps) == "string" then
    d.depends_on = { deps }
  elseif type(deps) == "table" then
    d.depends_on = {}
    for i, v in ipairs(deps) do
      if type(v) ~= "string" then
        fail("%s: depends_on[%d] must be an object id (string), got %s", label, i, type(v))
      end
      d.depends_on[i] = v
    end
  else
    fail("%s: depends_on must be an id or a list of ids, got %s", label, type(deps))
  end
  return d
end

-- Merges `d` over its parent chain (already validated: no unknown parents, no
-- loops). `defs` holds the parsed named definitions, `merged` memoizes.
local function merge(d, defs, merged, id)
  if id and merged[id] then return merged[id] end
  local out = {}
  for k, v in pairs(d) do out[k] = v end
  if d.parent then
    local p = merge(defs[d.parent], defs, merged, d.parent)
    if out.class == nil and out.factory == nil then out.class, out.factory = p.class, p.factory end
    if out.args == nil then out.args = p.args end
    if p.props then
      local props = {}
      for k, v in pairs(p.props) do props[k] = v end
      for k, v in pairs(d.props or {}) do props[k] = v end
      out.props = props
    end
    if out.init_method == nil then out.init_method = p.init_method end
    if out.destroy_method == nil then out.destroy_method = p.destroy_method end
  end
  if id then merged[id] = out end
  return out
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end

local function key_path(path, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return path .. "." .. k end
  if type(k) == "string" then return format("%s[%q]", path, k) end
  return path .. "[" .. tostring(k) .. "]"
end

---------------------------------------------------------------------------
-- Class resolution

local function require_error_kind(err, modname)
  return type(err) == "string" and err:find("module '" .. modname .. "' not found", 1, true) ~= nil
end

-- Requires modname; returns mod | nil, "notfound", msg | nil, "error", msg.
local function try_require(modname)
  local ok, mod = pcall(require, modname)
  if ok then return mod end
  if require_error_kind(mod, modname) then return nil, "notfound", mod end
  return nil, "error", tostring(mod)
end

-- Resolves "a.b.C" to a value; raises naming the object (label) and the
-- difference between a missing module, a module that fails to load, and a
-- missing field.
local function resolve_name(label, what, name)
  if name == "" then fail("%s: %s name is empty", label, what) end
  local mapped = name:gsub("^springpython%.", "springrun.")
  local function nyi(detail)
    fail("%s: %s '%s' maps to springrun's '%s', which is not implemented yet (%s)", label, what, name,
      mapped, detail)
  end
  local modname, field = mapped:match("^(.*)%.([^.]+)$")
  if not modname then
    local mod, kind, msg = try_require(mapped)
    if mod ~= nil then return mod end
    if kind == "notfound" then
      fail("%s: cannot resolve %s '%s': module '%s' not found:%s", label, what, name, mapped,
        msg:match("not found:(.*)$") or "")
    end
    fail("%s: cannot resolve %s '%s': loading module '%s' failed: %s", label, what, name, mapped, msg)
  end
  local mod, kind, msg = try_require(modname)
  if mod == nil and kind == "notfound" then
    -- "a.b.C" may also be a module that returns the class itself.
    local whole, kind2, msg2 = try_require(mapped)
    if whole ~= nil then return whole end
    if kind2 == "error" then
      fail("%s: cannot resolve %s '%s': loading module '%s' failed: %s", label, what, name, mapped, msg2)
    end
    if mapped ~= name then nyi("module '" .. modname .. "' not found") end
    fail("%s: cannot resolve %s '%s': module '%s' not found:%s", label, what, name, modname,
      msg:match("not found:(.*)$") or "")
  elseif mod == nil then
    fail("%s: cannot resolve %s '%s': loading module '%s' failed: %s", label, what, name, modname, msg)
  end
  if type(mod) ~= "table" and not (type(mod) == "userdata" and getmetatable(mod)) then
    fail("%s: cannot resolve %s '%s': module '%s' returned a %s, not a table with field '%s'",
      label, what, name, modname, type(mod), field)
  end
  local ok, v = pcall(function() return mod[field] end)
  if not ok then
    if mapped ~= name and type(v) == "string" and v:find("module 'springrun%.[^']*' not found") then
      nyi((v:match("^[^\n]*"):gsub(":$", "")))
    end
    fail("%s: cannot resolve %s '%s': reading field '%s' of module '%s' failed: %s", label, what,
      name, field, modname, tostring(v))
  end
  if v == nil then
    if mapped ~= name then nyi("module '" .. modname .. "' has no field '" .. field .. "'") end
    fail("%s: cannot resolve %s '%s': module '%s' has no field '%s'", label, what, name, modname, field)
  end
  return v
end

local function callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

local function safe_index(obj, key)
  local t = type(obj)
  if t ~= "table" and t ~= "userdata" and t ~= "string" then return nil end
  local ok, v = pcall(function() return obj[key] end)
  if ok then return v end
  return nil
end

-- A name for a class or factory in log lines and errors.
local function class_name(cls)
  if type(cls) == "string" then return cls end
  if type(cls) == "table" then
    local n = rawget(cls, "__name") or rawget(cls, "_NAME")
    if type(n) == "string" then return n end
  end
  local mt = getmetatable(cls)
  if type(mt) == "table" and type(rawget(mt, "__name")) == "string" then return mt.__name end
  return tostring(cls)
end

-- True when f is a Lua function whose first parameter is `self`.
local function method_syntax(f)
  if type(f) ~= "function" then return false end
  local info = debug.getinfo(f, "u")
  if not info or info.nparams < 1 then return false end
  return debug.getlocal(f, 1) == "self"
end

-- Returns constructor(...) -> obj and a display name for the log.
local function constructor_for(label, cls)
  local shown = class_name(cls)
  if type(cls) == "string" then cls = resolve_name(label, "class", cls) end
  if type(cls) == "function" then return cls, tostring(shown) end
  if type(cls) == "table" or type(cls) == "userdata" then
    local new = safe_index(cls, "new")
    if type(new) == "function" or (new ~= nil and callable(new)) then
      if method_syntax(new) then
        return function(...) return new(cls, ...) end, tostring(shown)
      end
      return new, tostring(shown)
    end
    if callable(cls) then return cls, tostring(shown) end
    fail("%s: class %s has neither a 'new' function nor a __call metamethod", label, tostring(shown))
  end
  fail("%s: class '%s' resolved to a %s, which cannot be instantiated", label, tostring(shown), type(cls))
end

local function factory_for(label, f)
  local shown = class_name(f)
  if type(f) == "string" then f = resolve_name(label, "factory", f) end
  if not callable(f) then
    fail("%s: factory %s is a %s, not a function", label, tostring(shown), type(f))
  end
  return f, tostring(shown)
end

-- Calls user code; on error raises "springrun.context: <label>: <what> failed: msg + traceback".
-- A configuration error from it (an unknown property of a springrun class,
-- an address in use) is passed on as one, naming the object, without the
-- traceback.
local function call_user(label, what, fn, ...)
  local tb
  local res = table.pack(xpcall(fn, function(e)
    if errors.is_config(e) then return e end
    local msg = type(e) == "string" and e or tostring(e)
    tb = traceback(msg, 2)
    return e
  end, ...))
  if not res[1] then
    if errors.is_config(res[2]) then fail("%s: %s", label, tostring(res[2].message)) end
    fail("%s: %s failed: %s", label, what, tb or tostring(res[2]))
  end
  return table.unpack(res, 2, res.n)
end

---------------------------------------------------------------------------
-- The context

local ApplicationContext = {}
ApplicationContext.__index = ApplicationContext
ApplicationContext.__name = "springrun.ApplicationContext"

local open_contexts = {} -- oldest first

local function check_ctx(self, fname)
  if getmetatable(self) ~= ApplicationContext then
    error(format("ApplicationContext:%s: call it with ':' on a context", fname), 3)
  end
end

-- Collects dependency edges of a value (refs and inner definitions inside
-- plain tables) into `out` as {id, via}; validates inner definitions.
local function collect(self, owner, value, path, out, seen)
  local mt = getmetatable(value)
  if mt == Ref then
    out[#out + 1] = { value.id, path }
  elseif mt == Inner then
    local label = format("object '%s', inner object at %s", owner, path)
    local d = parse_def(label, value.def, true)
    if d.parent then
      if not self._parsed[d.parent] then fail("%s: unknown parent '%s'", label, d.parent) end
    end
    local m = merge(d, self._parsed, self._merged, nil)
    if m.class == nil and m.factory == nil then fail("%s: has neither class nor factory", label) end
    self._inner[value] = m
    for _, dep in ipairs(m.depends_on) do out[#out + 1] = { dep, path .. ".depends_on" } end
    if m.args then collect(self, owner, m.args, path .. ".args", out, seen) end
    if m.props then collect(self, owner, m.props, path .. ".props", out, seen) end
  elseif type(value) == "table" and mt == nil then
    if seen[value] then return end
    seen[value] = true
    for _, k in ipairs(sorted_keys(value)) do
      collect(self, owner, value[k], key_path(path, k), out, seen)
    end
  end
end

local instantiate -- forward

-- Builds the runtime value of a definition value (see the header).
local function resolve(self, owner, value, path, copies)
  local mt = getmetatable(value)
  if mt == Ref then
    return self:get_object(value.id)
  elseif mt == Inner then
    local m = self._inner[value]
    if not m then -- an inner object reached at run time only (cannot normally happen)
      m = parse_def(format("object '%s', inner object at %s", owner, path), value.def, true)
    end
    local label = format("object '%s', inner object at %s", owner, path)
    local obj = instantiate(self, label, owner, m)
    local inner = self._collect
    if inner then inner[#inner + 1] = { label, m, obj } end
    return obj
  elseif type(value) == "table" and mt == nil then
    if copies[value] then return copies[value] end
    local out = {}
    copies[value] = out
    for k, v in pairs(value) do out[k] = resolve(self, owner, v, key_path(path, k), copies) end
    return out
  end
  return value
end

local function describe_props(d)
  if not d.props then return "[]" end
  return "[" .. table.concat(sorted_keys(d.props), ", ") .. "]"
end

-- Builds the object for a merged definition `d`: depends_on, construct, props.
local function build(self, label, owner, d)
  local copies = {}
  for _, dep in ipairs(d.depends_on) do self:get_object(dep) end
  local ctor, shown
  if d.factory ~= nil then
    ctor, shown = factory_for(label, d.factory)
  elseif d.class ~= nil then
    ctor, shown = constructor_for(label, d.class)
  else
    fail("%s: has neither class nor factory", label)
  end
  local argv, n = {}, 0
  if d.args then
    local args = d.args
    n = type(args.n) == "number" and args.n or #args
    for i = 1, n do argv[i] = resolve(self, owner, args[i], "args[" .. i .. "]", copies) end
    local named
    for k, v in pairs(args) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) and k ~= "n" then
        named = named or {}
        named[k] = resolve(self, owner, v, key_path("args", k), copies)
      end
    end
    if named then n = n + 1; argv[n] = named end
  end
  factory_log:debug("Creating an instance of %s", shown)
  local obj
  if d.factory ~= nil then
    obj = call_user(label, "factory " .. shown, ctor, table.unpack(argv, 1, n))
    if obj == nil then fail("%s: factory %s returned nil", label, shown) end
  else
    obj = call_user(label, "constructor of class " .. shown, ctor, table.unpack(argv, 1, n))
    if obj == nil then fail("%s: constructor of class %s returned nil", label, shown) end
  end
  if d.props then
    for _, name in ipairs(sorted_keys(d.props)) do
      local v = resolve(self, owner, d.props[name], "props." .. name, copies)
      call_user(label, format("setting property '%s'", name), function() obj[name] = v end)
    end
  end
  return obj
end

-- Initialises a built object: after_properties_set when it has one, then init_method.
local function initialize(label, d, obj)
  local aps = safe_index(obj, "after_properties_set")
  if type(aps) == "function" then
    call_user(label, "after_properties_set", aps, obj)
  end
  if d.init_method then
    local m = safe_index(obj, d.init_method)
    if type(m) ~= "function" then
      fail("%s: init_method '%s' not found on the object (got %s)", label, d.init_method, type(m))
    end
    call_user(label, format("init_method '%s'", d.init_method), m, obj)
  end
end

-- Builds and initialises an object (inner objects; get_object splits the two
-- so a singleton is stored before it is initialised, as in the seed's log).
function instantiate(self, label, owner, d)
  local obj = build(self, label, owner, d)
  initialize(label, d, obj)
  return obj
end

-- Adds one config's definitions (ordered {id, def} list) to the context.
local function add_entries(self, name, entries)
  container_log:debug("=== Scanning configuration %s for object definitions ===", name)
  for _, e in ipairs(entries) do
    local id, def = e[1], e[2]
    if type(id) ~= "string" or id == "" then
      fail("object ids must be non-empty strings, got %s %s", type(id), tostring(id))
    end
    local d = parse_def(format("object '%s'", id), def, false)
    local replaced = self._c:define(id, {
      prototype = d.scope == "prototype", lazy = d.lazy_init, abstract = d.abstract, parent = d.parent,
    })
    if replaced then
      container_log:debug("%s object definition already exists. Overriding with the new definition.", id)
    else
      container_log:debug("%s object definition does not exist. Adding to list of definitions.", id)
    end
    self._parsed[id] = d
  end
end

local function entries_of(i, defs)
  if M.is_config(defs) then return defs.name, defs.entries end
  if type(defs) ~= "table" or getmetatable(defs) ~= nil then
    fail("argument #%d must be a table of definitions keyed by object id, got %s", i,
      getmetatable(defs) and tostring(defs) or type(defs))
  end
  local entries = {}
  for _, id in ipairs(sorted_keys(defs)) do entries[#entries + 1] = { id, defs[id] } end
  return format("LuaConfig(#%d)", i), entries
end

-- springrun.context(defs [, defs2, ...]) -> ApplicationContext
function M.context(...)
  local nargs = select("#", ...)
  if nargs == 0 then fail("context() needs at least one table of definitions") end
  local self = setmetatable({
    _c = core.container(),
    _parsed = {},  -- id -> parsed definition (as written)
    _merged = {},  -- id -> definition merged over its parents
    _inner = setmetatable({}, { __mode = "k" }), -- inner marker -> merged definition
    _inner_objs = {}, -- singleton id -> { {label, def, obj}, ... } inner objects built for it
    _collect = false, -- the list collecting inner objects of the singleton being built
    _closed = false,
  }, ApplicationContext)
  for i = 1, nargs do
    local name, entries = entries_of(i, (select(i, ...)))
    add_entries(self, name, entries)
  end
  container_log:debug("=== Done reading object definitions. ===")
  local c = self._c
  -- Parents first (unknown parent, loops), then merge and add every edge.
  local ok, msg = c:validate()
  if not ok then fail("%s", msg) end
  for _, id in ipairs(c:ids()) do
    local m = merge(self._parsed[id], self._parsed, self._merged, id)
    if not m.abstract then
      if m.class == nil and m.factory == nil then
        fail("object '%s' has neither class nor factory%s", id,
          m.parent and format(" (nor does its parent chain from '%s')", m.parent) or "")
      end
      local edges = {}
      for _, dep in ipairs(m.depends_on) do edges[#edges + 1] = { dep, "depends_on" } end
      if m.args then collect(self, id, m.args, "args", edges, {}) end
      if m.props then collect(self, id, m.props, "props", edges, {}) end
      for _, e in ipairs(edges) do c:add_dep(id, e[1], e[2]) end
    end
  end
  ok, msg = c:validate()
  if not ok then fail("%s", msg) end
  local order
  order, msg = c:eager_order()
  if not order then fail("%s", msg) end
  open_contexts[#open_contexts + 1] = self
  local created_ok, err = pcall(function()
    for _, id in ipairs(order) do
      ctx_log:debug("Eagerly fetching %s", id)
      self:get_object(id)
    end
  end)
  if not created_ok then
    ctx_log:debug("Creating the context failed; destroying the objects created so far")
    self:close()
    error(err, 0)
  end
  return self
end

-- ApplicationContext(defs...) is springrun.context(defs...).
M.ApplicationContext = setmetatable({
  new = function(...) return M.context(...) end,
  is_context = function(v) return getmetatable(v) == ApplicationContext end,
}, {
  __call = function(_, ...) return M.context(...) end,
  __index = ApplicationContext,
})

function M.is_context(v) return getmetatable(v) == ApplicationContext end

-- object -> { context, id } of the prototype definition it was made from
-- (weak keys: remembering does not keep an object alive)
local made_from = setmetatable({}, { __mode = "k" })

-- ctx:get_object(id): the singleton (created on first use when lazy), or a
-- new object for a prototype.
function ApplicationContext:get_object(id)
  check_ctx(self, "get_object")
  if type(id) ~= "string" then fail("get_object: object id must be a string, got %s", type(id)) end
  if self._closed then fail("get_object('%s'): the context is closed", id) end
  local c = self._c
  local info = c:info(id)
  if not info then
    fail("no object named '%s' (defined: %s)", id, table.concat(self:object_ids(), ", "))
  end
  if info.abstract then
    fail("object '%s' is abstract and cannot be created directly (it only serves as a parent)", id)
  end
  if not info.prototype then
    local found, obj = c:get(id)
    if found then return obj end
    ctx_log:debug("Did NOT find object '%s' in the singleton storage.", id)
  end
  local depth = c:depth()
  local ok, msg = c:enter(id)
  if not ok then fail("%s", msg) end
  local d = self._merged[id]
  ctx_log:debug("Creating an instance of id=%s props=%s scope=%s factory=%s", id, describe_props(d),
    d.scope == "prototype" and "scope.PROTOTYPE" or "scope.SINGLETON",
    "ReflectiveObjectFactory(" .. class_name(d.factory or d.class) .. ")")
  -- Inner objects built for a singleton are destroyed with it; a prototype's are not.
  local prev_collect = self._collect
  self._collect = not info.prototype and {} or false
  local label = format("object '%s'", id)
  local built, obj = pcall(build, self, label, id, d)
  local inner = self._collect
  self._collect = prev_collect
  if not built then
    c:unwind(depth)
    error(obj, 0)
  end
  if not info.prototype then
    if inner and #inner > 0 then self._inner_objs[id] = inner end
    c:store(id, obj)
    ctx_log:debug("Stored object '%s' in container's singleton storage", id)
  end
  -- Still on the creation stack: an init that needs this prototype again is a cycle.
  local inited, err = pcall(initialize, label, d, obj)
  if not inited then
    if not info.prototype then
      c:forget(id)
      self._inner_objs[id] = nil
    end
    c:unwind(depth)
    error(err, 0)
  end
  c:leave(id)
  if info.prototype and (type(obj) == "table" or type(obj) == "userdata") then
    made_from[obj] = { self, id }
  end
  return obj
end

-- M.factory_of(obj): for an object a context made from a prototype-scoped
-- definition, a function that makes another one from the same definition
-- (what an exporter with instance_mode "session" or "percall" calls for
-- service = springrun.ref "id"); nil for anything else.
function M.factory_of(obj)
  local from = made_from[obj]
  if not from then return nil end
  local ctx, id = from[1], from[2]
  return function() return ctx:get_object(id) end
end

-- True when `id` names a definition get_object can create (not abstract).
function ApplicationContext:has_object(id)
  check_ctx(self, "has_object")
  local info = type(id) == "string" and self._c:info(id)
  return info ~= nil and info ~= false and not info.abstract
end

-- The ids get_object accepts (abstract definitions left out), in definition order.
function ApplicationContext:object_ids()
  check_ctx(self, "object_ids")
  local out = {}
  for _, id in ipairs(self._c:ids()) do
    if not self._c:info(id).abstract then out[#out + 1] = id end
  end
  return out
end

function ApplicationContext:is_closed() return self._closed end

local function destroy_one(label, d, obj)
  if d and d.destroy_method then
    local m = safe_index(obj, d.destroy_method)
    if type(m) ~= "function" then
      ctx_log:error("%s: destroy_method '%s' not found on the object (got %s)", label,
        d.destroy_method, type(m))
      return
    end
    ctx_log:debug("Destroying %s with %s()", label, d.destroy_method)
    local ok, err = xpcall(m, traceback, obj)
    if not ok then
      ctx_log:error("%s: destroy_method '%s' failed: %s", label, d.destroy_method, tostring(err))
    end
  elseif safe_index(obj, "_disposable") then
    local m = safe_index(obj, "destroy")
    if type(m) ~= "function" then
      ctx_log:error("%s: is _disposable but has no destroy method", label)
      return
    end
    ctx_log:debug("Destroying %s with destroy()", label)
    local ok, err = xpcall(m, traceback, obj)
    if not ok then ctx_log:error("%s: destroy failed: %s", label, tostring(err)) end
  end
end

-- ctx:close(): destroys the created singletons, newest first; idempotent.
function ApplicationContext:close()
  check_ctx(self, "close")
  if self._closed then return end
  self._closed = true
  for i = #open_contexts, 1, -1 do
    if open_contexts[i] == self then table.remove(open_contexts, i) end
  end
  local c = self._c
  local ids = c:created()
  for i = #ids, 1, -1 do
    local id = ids[i]
    local _, obj = c:get(id)
    destroy_one(format("object '%s'", id), self._merged[id], obj)
    local inner = self._inner_objs[id]
    for k = #(inner or {}), 1, -1 do destroy_one(inner[k][1], inner[k][2], inner[k][3]) end
  end
  c:clear()
  self._inner_objs = {}
end

ApplicationContext.__close = ApplicationContext.close

function ApplicationContext:__tostring()
  return format("ApplicationContext(%d objects%s)", #self._c:ids(), self._closed and ", closed" or "")
end

-- Closes every context still open, newest first (SIGINT/SIGTERM path).
function M.close_all()
  while #open_contexts > 0 do
    local ctx = open_contexts[#open_contexts]
    local ok, err = pcall(ctx.close, ctx)
    if not ok then
      ctx_log:error("closing %s failed: %s", tostring(ctx), tostring(err))
      if open_contexts[#open_contexts] == ctx then open_contexts[#open_contexts] = nil end
    end
  end
end

-- How many contexts are open (for the runtime and tests).
function M.open_count() return #open_contexts end

-- springrun.load_context(path): runs a Lua file that returns a table of
-- definitions (or a config) or an ApplicationContext; returns the context.
function M.load_context(path)
  if type(path) ~= "string" then
    error("springrun.load_context: path must be a string, got " .. type(path), 2)
  end
  local chunk, err = loadfile(path)
  if not chunk then error("springrun.load_context: cannot load '" .. path .. "': " .. tostring(err), 2) end
  local res = chunk(path)
  if M.is_context(res) then return res end
  if type(res) == "table" then return M.context(res) end
  error(format("springrun.load_context: '%s' must return a table of definitions or a context, got %s",
    path, type(res)), 2)
end

return M
