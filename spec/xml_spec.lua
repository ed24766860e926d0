-- springrun.xml: Spring Python 1.1 XML application contexts (the seed's files).
local springrun = require "springrun"
local xml = require "springrun.xml"
local context = require "springrun.context"
local log = require "springrun.log"

local DIR = "spec/fixtures/xml/"

local function message_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function tmpxml(text)
  local path = os.tmpname() .. ".xml"
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
  .. '<objects xmlns="http://www.springframework.org/springpython/schema/objects/1.1">\n'

describe("springrun.xml #unit", function()
  local saved_path, saved_pyro, fake
  before_each(function()
    saved_path = package.path
    package.path = "spec/fixtures/ctx/?.lua;" .. package.path
    -- stand-ins for the real exporter/proxy: this spec checks the mapping only
    saved_pyro = package.loaded["springrun.remoting.pyro"]
    fake = require "fake_pyro"
    for i = #fake.events, 1, -1 do fake.events[i] = nil end
    package.loaded["springrun.remoting.pyro"] = fake
  end)
  after_each(function()
    context.close_all()
    package.loaded["springrun.remoting.pyro"] = saved_pyro
    package.path = saved_path
  end)

  it("loads the seed's applicationContext.xml unchanged", function()
    local ctx = springrun.context_from_xml(DIR .. "applicationContext.xml")
    assert.are.same({ "remoteService", "service_exporter", "service" }, ctx:object_ids())
    local service, exporter = ctx:get_object("remoteService"), ctx:get_object("service_exporter")
    assert.are.equal("You got remote data => Hello", service:get_data("Hello"))
    assert.are.equal(fake.PyroServiceExporter, getmetatable(exporter))
    assert.are.equal("ServiceName", exporter.service_name)
    assert.are.equal(service, exporter.service)
    local proxy = ctx:get_object("service")
    assert.are.equal(fake.PyroProxyFactory, getmetatable(proxy))
    assert.are.equal("PYROLOC://localhost:7766/ServiceName", proxy.service_url)
    assert.are.same({
      "PyroServiceExporter:after_properties_set:ServiceName",
      "PyroProxyFactory:after_properties_set:PYROLOC://localhost:7766/ServiceName",
    }, fake.events)
    ctx:close()
    assert.are.equal("PyroServiceExporter:destroy:ServiceName", fake.events[#fake.events])
  end)

  it("loads the seed's host/port variant, server.xml and client.xml with values kept as strings", function()
    local ctx = springrun.context_from_xml(DIR .. "applicationContext_port.xml")
    local exporter = ctx:get_object("service_exporter")
    assert.are.same({ "127.0.0.1", "7000" }, { exporter.service_host, exporter.service_port })
    local server = springrun.context_from_xml(DIR .. "server.xml")
    assert.are.equal(require("Service"), getmetatable(server:get_object("remoteService")))
    assert.are.equal(server:get_object("remoteService"), server:get_object("service_exporter").service)
    local client = springrun.context_from_xml(DIR .. "client.xml")
    assert.are.equal("PYROLOC://127.0.0.1:7000/ServiceName", client:get_object("service").service_url)
    local simple = springrun.context_from_xml(DIR .. "applicationContext_simple.xml")
    assert.are.equal("You got remote data => Hello", simple:get_object("service"):get_data("Hello"))
  end)

  it("builds the seed's HessianProxyFactory (calls: interop_hessian_remoting_spec)", function()
    local ctx = springrun.context_from_xml(DIR .. "hessian.xml")
    local p = ctx:get_object("personService")
    assert.are.equal(require("springrun.remoting.hessian")._proxy_mt, getmetatable(p))
    assert.are.equal("http://localhost:8080/", p.service_url)
    assert.are.equal("<springrun.HessianProxyFactory http://localhost:8080/>", tostring(p))
  end)

  it("logs the parsing the way the seed's XMLConfig does", function()
    local lines = {}
    local prev = log.set_output(function(l) lines[#lines + 1] = l end)
    local level = log.get_level()
    finally(function() log.set_output(prev); log.set_level(level) end)
    log.set_level("DEBUG")
    springrun.context_from_xml(DIR .. "server.xml")
    local msgs = {}
    for i, l in ipairs(lines) do msgs[i] = l:match("^%d+%-%d+%-%d+ [%d:,]+ %- (.*)$") end
    assert.are.same({
      "springrun.config.XMLConfig - DEBUG - ==============================================================",
      "springrun.config.XMLConfig - DEBUG - * Parsing " .. DIR .. "server.xml",
      "springrun.config.XMLConfig - DEBUG - ==============================================================",
      "springrun.container.ObjectContainer - DEBUG - === Scanning configuration XMLConfig(" .. DIR
        .. "server.xml) for object definitions ===",
      "springrun.container.ObjectContainer - DEBUG - remoteService object definition does not exist. Adding to list of definitions.",
      "springrun.container.ObjectContainer - DEBUG - service_exporter object definition does not exist. Adding to list of definitions.",
      "springrun.container.ObjectContainer - DEBUG - === Done reading object definitions. ===",
      "springrun.context.ApplicationContext - DEBUG - Eagerly fetching remoteService",
    }, { table.unpack(msgs, 1, 8) })
  end)

  it("reads values, refs, lists, dicts, props, sets, tuples and inner objects", function()
    local ctx = springrun.context_from_xml(DIR .. "features.xml")
    local Holder = require("holder").Holder
    local target = ctx:get_object("target")
    local h = ctx:get_object("holder")
    assert.are.equal(Holder, getmetatable(h))
    assert.are.equal("first", h.args[1])
    assert.are.equal(target, h.args[2])
    assert.are.same({ mode = "fast" }, h.args[3])
    assert.are.equal(3, h.args.n)
    assert.are.equal("7000", h.plain)
    assert.are.equal("http://localhost:8080/", h.text)
    assert.are.equal(target, h.direct)
    assert.are.equal(target, h.nested_ref)
    assert.are.equal("a", h.items[1])
    assert.are.equal(target, h.items[2])
    assert.are.equal(Holder, getmetatable(h.items[3]))
    assert.are.equal("in-list", h.items[3].tag)
    assert.are.same({ "deep" }, h.items[4])
    assert.are.equal("v1", h.table.k1)
    assert.are.equal(target, h.table.k2)
    assert.are.equal(Holder, getmetatable(h.table.k3))
    assert.are.same({ "t1", "t2" }, h.table.k4)
    assert.are.same({ timeout = "30" }, h.settings)
    assert.are.equal(target, h.inner.back)
    assert.are.same({ "only" }, h.unique)
  end)

  it("honours scope, lazy-init, abstract/parent and constructor-arg index", function()
    local holder = require "holder"
    local before = holder.created
    local ctx = springrun.context_from_xml(DIR .. "features.xml")
    -- eager: indexed only (holder is a prototype, lazy is lazy, base is abstract,
    -- child is eager); the prototype's inner objects are not built yet
    assert.are.equal(before + 2, holder.created)
    assert.are_not.equal(ctx:get_object("holder"), ctx:get_object("holder"))
    local n = holder.created
    local lazy = ctx:get_object("lazy")
    assert.are.equal(n + 1, holder.created)
    assert.are.equal(lazy, ctx:get_object("lazy"))
    assert.are.same({ "127.0.0.1", "7000" }, { ctx:get_object("child").host, ctx:get_object("child").port })
    assert.is_false(ctx:has_object("base"))
    assert.are.same({ "zeroth", "second", n = 2 }, ctx:get_object("indexed").args)
  end)

  it("works Spring Python style: ApplicationContext(XMLConfig(path)), several files overriding", function()
    local override = tmpxml(HEAD .. '<object id="service" class="server.Service"/>\n</objects>\n')
    finally(function() os.remove(override) end)
    local ctx = springrun.ApplicationContext(xml.XMLConfig({ DIR .. "client.xml", override }))
    assert.are.equal("You got remote data => x", ctx:get_object("service"):get_data("x"))
    local ctx2 = springrun.context_from_xml(DIR .. "client.xml", { extra = { class = "Service" } })
    assert.are.same({ "service", "extra" }, ctx2:object_ids())
  end)

  it("names the file and line of malformed XML and unknown elements or attributes", function()
    local cases = {
      { HEAD .. '<object id="a" class="Service">\n</objects>\n', ":4:3: mismatched tag" },
      { HEAD .. '<object id="a" class="Service">\n  <propety name="x" value="1"/>\n</object>\n</objects>\n',
        ":4: <object id=\"a\">: unknown element <propety> (expected property or constructor-arg)" },
      { HEAD .. '<object id="a" klass="Service"/>\n</objects>\n',
        ":3: unknown attribute 'klass' on <object>; valid: abstract, class, depends-on, destroy-method, id, "
        .. "init-method, lazy-init, parent, scope" },
      { HEAD .. '<object class="Service"/>\n</objects>\n', ":3: <object> needs an id" },
      { HEAD .. '<object id="a" class="Service">\n<property name="x"/>\n</object>\n</objects>\n',
        ":4: <object id=\"a\"> property 'x' has no value (value=, ref= or a child element)" },
      { HEAD .. '<object id="a" class="Service">\n<property name="x" value="1" ref="b"/>\n</object>\n</objects>\n',
        ":4: <object id=\"a\"> property 'x' has 2 values; give exactly one" },
      { HEAD .. '<object id="a" class="Service" lazy-init="maybe"/>\n</objects>\n',
        ":3: lazy-init=\"maybe\" is not a boolean (True or False)" },
      { HEAD .. '<object id="a" class="Service">\n<property name="x"><map/></property>\n</object>\n</objects>\n',
        ":4: unknown value element <map>" },
      { '<?xml version="1.0"?>\n<beans/>\n', ":2: the root element is <beans>; expected <objects>" },
    }
    for _, case in ipairs(cases) do
      local path = tmpxml(case[1])
      local msg = message_of(function() springrun.context_from_xml(path) end)
      os.remove(path)
      assert.are.equal(1, msg:find("springrun.xml: " .. path .. case[2], 1, true), msg)
    end
  end)

  it("names a missing file", function()
    assert.truthy(message_of(function() springrun.context_from_xml("/nonexistent/app.xml") end)
      :find("springrun.xml: cannot open '/nonexistent/app.xml'", 1, true))
  end)

  it("reports an unknown ref in XML like the Lua DSL does", function()
    local path = tmpxml(HEAD .. '<object id="a" class="Service">\n<property name="s" ref="ghost"/>\n</object>\n</objects>\n')
    finally(function() os.remove(path) end)
    assert.are.equal("springrun.context: object 'a' refers to unknown object 'ghost' (props.s)",
      message_of(function() springrun.context_from_xml(path) end))
  end)
end)
