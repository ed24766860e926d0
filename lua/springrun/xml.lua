-- springrun.xml: migration path from Spring Python 1.1 XML application
-- contexts (the <objects> files of the seed) to springrun contexts, read with
-- Debian's lua-expat (require "lxp").
--
--   local ctx = springrun.context_from_xml("applicationContext.xml")
--   -- or, Spring Python style:
--   local xml = require "springrun.xml"
--   local ctx = springrun.ApplicationContext(xml.XMLConfig("server.xml"))
--
-- Supported (Spring Python 1.1 XMLConfig):
--   <object id= class= scope="singleton|prototype" lazy-init="True" abstract="True"
--           parent= init-method= destroy-method= depends-on="a, b">
--   <property name= value=|ref=> or one child: <value>text</value>,
--     <ref object="id"/>, <list>/<tuple>/<set>/<frozenset> (Lua arrays),
--     <dict><entry><key><value>k</value></key> value|ref|object|collection</entry></dict>,
--     <props><prop key="k">text</prop></props>, or an inner <object class=...>
--   <constructor-arg [name=] [index=] value=|ref=|child>: without name, a
--     positional argument (in order, or at index, 0-based as in Spring);
--     with name, a named argument (passed together as one table).
-- Values stay strings, as in Spring Python ("7000" is "7000"). Classes are
-- resolved by springrun.context: springpython.remoting.pyro.X becomes
-- springrun.remoting.pyro.X, other "module.Class" names are Lua modules.
-- Anything else (unknown element or attribute, missing id/name, two values
-- for one property) is an error naming the file and line.
local M = {}

local lxp = require "lxp"
local context = require "springrun.context"
local log = require "springrun.log"

local logger = log.get("springrun.config.XMLConfig")
local format = string.format

local OBJECT_ATTRS = {
  "abstract", "class", "depends-on", "destroy-method", "id", "init-method", "lazy-init",
  "parent", "scope",
}
local OBJECT_ATTR = {}
for _, a in ipairs(OBJECT_ATTRS) do OBJECT_ATTR[a] = true end
local COLLECTIONS = { list = true, tuple = true, set = true, frozenset = true }

-- Parses the file into a tree of {tag=, attr=, kids={}, text=, line=}.
local function parse_file(path)
  local f, ferr = io.open(path, "rb")
  if not f then error(format("springrun.xml: cannot open '%s': %s", path, tostring(ferr)), 0) end
  local src = f:read("a")
  f:close()
  local root
  local stack = {}
  local parser
  parser = lxp.new({
    StartElement = function(_, name, attrs)
      local line = parser:pos()
      local node = { tag = name:gsub("^.*:", ""), attr = {}, kids = {}, text = {}, line = line }
      for k, v in pairs(attrs) do
        if type(k) == "string" then node.attr[k] = v end
      end
      local top = stack[#stack]
      if top then top.kids[#top.kids + 1] = node else root = node end
      stack[#stack + 1] = node
    end,
    EndElement = function()
      local node = table.remove(stack)
      node.text = table.concat(node.text)
    end,
    CharacterData = function(_, s)
      local top = stack[#stack]
      if top then top.text[#top.text + 1] = s end
    end,
  })
  local ok, msg, line, col = parser:parse(src)
  if ok then ok, msg, line, col = parser:parse() end
  pcall(parser.close, parser) -- raises on an unfinished document; parse already said why
  if not ok then
    error(format("springrun.xml: %s:%s:%s: %s", path, tostring(line), tostring(col), tostring(msg)), 0)
  end
  return root
end

local function fail(path, node, fmt, ...)
  error(format("springrun.xml: %s:%d: ", path, node.line or 0) .. format(fmt, ...), 0)
end

local function truthy(path, node, attr)
  local v = node.attr[attr]
  if v == nil then return nil end
  local l = v:lower()
  if l == "true" or l == "1" or l == "yes" then return true end
  if l == "false" or l == "0" or l == "no" then return false end
  fail(path, node, "%s=\"%s\" is not a boolean (True or False)", attr, v)
end

local convert_value, convert_object

local function only_kid(path, node, what)
  if #node.kids > 1 then
    fail(path, node, "%s has %d child elements; expected one value", what, #node.kids)
  end
  return node.kids[1]
end

local function convert_ref(path, node)
  local id = node.attr.object
  if not id or id == "" then fail(path, node, "<ref> needs an object=\"id\" attribute") end
  return context.ref(id)
end

local function convert_collection(path, node)
  local out = {}
  for _, kid in ipairs(node.kids) do out[#out + 1] = convert_value(path, kid) end
  return out
end

local function convert_dict(path, node)
  local out = {}
  for _, entry in ipairs(node.kids) do
    if entry.tag ~= "entry" then fail(path, entry, "unexpected <%s> in <dict> (expected <entry>)", entry.tag) end
    local key, value, have
    for _, kid in ipairs(entry.kids) do
      if kid.tag == "key" then
        local kv = only_kid(path, kid, "<key>")
        if not kv or kv.tag ~= "value" then fail(path, kid, "<key> needs a <value> child") end
        key = kv.text
      else
        if have then fail(path, entry, "<entry> has more than one value") end
        value, have = convert_value(path, kid), true
      end
    end
    if entry.attr.key then key = entry.attr.key end
    if key == nil then fail(path, entry, "<entry> has no <key>") end
    if entry.attr.value then value, have = entry.attr.value, true end
    if not have then fail(path, entry, "<entry> for key '%s' has no value", key) end
    out[key] = value
  end
  return out
end

local function convert_props(path, node)
  local out = {}
  for _, p in ipairs(node.kids) do
    if p.tag ~= "prop" or not p.attr.key then fail(path, p, "<props> holds <prop key=\"...\"> elements") end
    out[p.attr.key] = p.text
  end
  return out
end

-- One value element (<value>, <ref>, <list>, <dict>, <object>, ...).
function convert_value(path, node)
  local tag = node.tag
  if tag == "value" then
    local kid = only_kid(path, node, "<value>")
    if kid then return convert_value(path, kid) end
    return node.text
  elseif tag == "ref" then
    return convert_ref(path, node)
  elseif COLLECTIONS[tag] then
    return convert_collection(path, node)
  elseif tag == "dict" then
    return convert_dict(path, node)
  elseif tag == "props" then
    return convert_props(path, node)
  elseif tag == "object" then
    return context.object(convert_object(path, node, true))
  end
  fail(path, node, "unknown value element <%s> (expected value, ref, list, tuple, set, frozenset, dict, props or object)", tag)
end

-- The value of a <property> or <constructor-arg>: value= or ref= attribute, or one child.
local function slot_value(path, node, what)
  local n = 0
  local v
  if node.attr.value ~= nil then v, n = node.attr.value, n + 1 end
  if node.attr.ref ~= nil then v, n = context.ref(node.attr.ref), n + 1 end
  for _, kid in ipairs(node.kids) do v, n = convert_value(path, kid), n + 1 end
  if n == 0 then fail(path, node, "%s has no value (value=, ref= or a child element)", what) end
  if n > 1 then fail(path, node, "%s has %d values; give exactly one", what, n) end
  return v
end

function convert_object(path, node, inner)
  for k in pairs(node.attr) do
    if not OBJECT_ATTR[k] and not k:match("^xmlns") then
      fail(path, node, "unknown attribute '%s' on <object>; valid: %s", k, table.concat(OBJECT_ATTRS, ", "))
    end
  end
  local a = node.attr
  local label = a.id and format("<object id=\"%s\">", a.id) or "<object>"
  local def = {
    class = a.class, parent = a.parent, init_method = a["init-method"],
    destroy_method = a["destroy-method"],
  }
  if a.scope then
    local s = a.scope:lower()
    if s ~= "singleton" and s ~= "prototype" then
      fail(path, node, "%s: scope=\"%s\" (expected singleton or prototype)", label, a.scope)
    end
    def.scope = s
  end
  def.lazy_init = truthy(path, node, "lazy-init")
  def.abstract = truthy(path, node, "abstract")
  if a["depends-on"] then
    local deps = {}
    for id in a["depends-on"]:gmatch("[^,%s;]+") do deps[#deps + 1] = id end
    def.depends_on = deps
  end
  local props, args, nargs, named
  for _, kid in ipairs(node.kids) do
    if kid.tag == "property" then
      local name = kid.attr.name
      if not name or name == "" then fail(path, kid, "%s: <property> needs a name", label) end
      props = props or {}
      if props[name] ~= nil then fail(path, kid, "%s: property '%s' is set twice", label, name) end
      props[name] = slot_value(path, kid, format("%s property '%s'", label, name))
    elseif kid.tag == "constructor-arg" then
      args = args or {}
      local v = slot_value(path, kid, label .. " <constructor-arg>")
      if kid.attr.name then
        named = true
        args[kid.attr.name] = v
      else
        local idx
        if kid.attr.index then
          idx = math.tointeger(tonumber(kid.attr.index))
          if not idx or idx < 0 then fail(path, kid, "%s: index=\"%s\" is not a 0-based position", label, kid.attr.index) end
          idx = idx + 1
        else
          idx = (nargs or 0) + 1
        end
        args[idx] = v
        nargs = math.max(nargs or 0, idx)
      end
    else
      fail(path, kid, "%s: unknown element <%s> (expected property or constructor-arg)", label, kid.tag)
    end
  end
  if args and nargs then args.n = nargs end
  if named and args and args.n == nil then args.n = 0 end
  def.props, def.args = props, args
  if not inner and (not a.id or a.id == "") then fail(path, node, "<object> needs an id") end
  return def, a.id
end

-- XMLConfig(path or {paths}) -> a config for springrun.context / ApplicationContext.
function M.XMLConfig(paths)
  if type(paths) == "string" then paths = { paths } end
  if type(paths) ~= "table" then
    error("springrun.xml.XMLConfig: expected a path or a list of paths, got " .. type(paths), 2)
  end
  local entries = {}
  logger:debug("==============================================================")
  for _, path in ipairs(paths) do
    logger:debug("* Parsing %s", path)
    local root = parse_file(path)
    if root.tag ~= "objects" then fail(path, root, "the root element is <%s>; expected <objects>", root.tag) end
    for _, node in ipairs(root.kids) do
      if node.tag ~= "object" then
        fail(path, node, "unknown element <%s> in <objects> (expected object)", node.tag)
      end
      local def, id = convert_object(path, node, false)
      entries[#entries + 1] = { id, def }
    end
  end
  logger:debug("==============================================================")
  return context.config("XMLConfig(" .. table.concat(paths, ", ") .. ")", entries)
end

-- springrun.context_from_xml(path [, more...]) -> ApplicationContext. Extra
-- arguments (paths or Lua definition tables) are added after, overriding ids.
function M.context_from_xml(path, ...)
  local configs = { M.XMLConfig(path) }
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    configs[#configs + 1] = type(v) == "string" and M.XMLConfig(v) or v
  end
  return context.context(table.unpack(configs))
end

return M
