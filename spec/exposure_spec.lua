-- What an exporter exposes (the default, expose = {...}, hide = {...}) and
-- what it logs: one INFO line when it listens and one when it stops, a
-- WARNING per failed call (rate-limited, the traceback at DEBUG).
local springrun = require "springrun"
local core = require "springrun.core"
local json = require "springrun.json"
local log = require "springrun.log"
local wc = require "helpers.wireclient"

local JSON = core.SER_JSON

-- A class whose instances are exported: `new` is found through __index.
local Service = {}
Service.__index = Service
function Service.new() return setmetatable({}, Service) end
function Service:get_data(p) return "You got remote data => " .. tostring(p) end
function Service:fail(msg) error(msg, 0) end
function Service:admin() return "admin" end
function Service:destroy() self.destroyed = true end

local function export(props)
  props.service = props.service or Service.new()
  props.service_host, props.service_port = "127.0.0.1", 0
  local e = springrun.PyroServiceExporter(props)
  e:after_properties_set()
  return e
end

local function sorted_list(set)
  local out = {}
  for _, m in ipairs(set) do out[#out + 1] = m end
  table.sort(out)
  return out
end

-- Connects to e's service and INVOKEs method over the wire (no client-side
-- metadata check); returns the decoded RESULT message and its value.
local function raw_call(e, method, params_json)
  local c = assert(wc.connect("127.0.0.1", e:bound_port()))
  c:send(core.wire_encode(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, JSON,
    string.format('{"handshake": "hello", "object": "%s"}', e.service_name)))
  assert.are.equal(core.MSG_CONNECTOK, assert(c:recv()).type)
  c:send(core.wire_encode(core.MSG_INVOKE, 0, 1, JSON, wc.invoke_json(e.service_name, method, params_json)))
  local m = assert(c:recv())
  c:close()
  return m, json.decode(m.data)
end

-- Collects log lines while fn runs at `level`.
local function logged(level, fn)
  local lines = {}
  local prev_out = log.set_output(function(line) lines[#lines + 1] = line end)
  local prev_level = log.get_level()
  log.set_level(level)
  local ok, err = pcall(fn)
  log.set_output(prev_out)
  log.set_level(prev_level)
  assert(ok, err)
  return lines
end

describe("exporter exposure and logging #unit #net", function()
  it("exposes the object's methods, not the class constructor or lifecycle methods", function()
    local e = export({ service_name = "Default" })
    finally(function() e:destroy() end)
    assert.are.same({ "admin", "fail", "get_data" }, sorted_list(e:metadata().methods))
    local m, v = raw_call(e, "new")
    assert.are_not.equal(0, m.flags & 1) -- an exception
    assert.are.equal("builtins.AttributeError", v.__class__)
    m, v = raw_call(e, "destroy")
    assert.are.equal("builtins.AttributeError", v.__class__)
  end)

  it("exposes only the expose list, or all but the hide list", function()
    local only = export({ service_name = "Only", expose = { "get_data", "new" } })
    local hidden = export({ service_name = "Hidden", hide = { "admin" } })
    finally(function() only:destroy() hidden:destroy() end)
    assert.are.same({ "get_data", "new" }, sorted_list(only:metadata().methods))
    assert.are.same({ "fail", "get_data" }, sorted_list(hidden:metadata().methods))
    local _, v = raw_call(only, "admin")
    assert.are.equal("builtins.AttributeError", v.__class__)
    _, v = raw_call(hidden, "admin")
    assert.are.equal("builtins.AttributeError", v.__class__)
    _, v = raw_call(only, "get_data", '["x"]')
    assert.are.equal("You got remote data => x", v)
  end)

  it("refuses expose/hide entries that are not methods of the service", function()
    local ok, err = pcall(export, { service_name = "Bad", expose = { "get_dat" } })
    assert.is_false(ok)
    assert.are.equal("PyroServiceExporter 'Bad': expose: 'get_dat' is not a method of the service"
      .. " (names starting with '_' never are)", tostring(err))
    ok, err = pcall(export, { service_name = "Bad", hide = "admin" })
    assert.is_false(ok)
    assert.truthy(err:find("hide must be a list of method names, got string", 1, true))
  end)

  it("logs one INFO line when it listens and one when it stops", function()
    local e
    local lines = logged("INFO", function()
      e = export({ service_name = "Shown", oneway = { "admin" } })
      e:destroy()
    end)
    local where = "127.0.0.1:" .. e.service_port
    assert.are.equal(2, #lines, table.concat(lines, "\n"))
    assert.truthy(lines[1]:find(" - springrun.remoting.pyro.PyroServiceExporter - INFO - exporting Shown at PYRO:Shown@"
      .. where .. " (methods: admin, fail, get_data; oneway: admin)", 1, true), lines[1])
    assert.truthy(lines[2]:find(" - INFO - stopped exporting Shown at PYRO:Shown@" .. where, 1, true), lines[2])
  end)

  it("logs a failed call at WARNING with service, method, caller and message; the traceback at DEBUG", function()
    local e = export({ service_name = "Failing", service = setmetatable({ fail = function() error("line one\nline two") end }, {}) })
    finally(function() e:destroy() end)
    local lines = logged("WARNING", function() raw_call(e, "fail") end)
    assert.are.equal(1, #lines, table.concat(lines, "\n"))
    -- (the id of the call: a Pyro4 daemon's own when the caller sent none)
    assert.truthy(lines[1]:find("WARNING %- %[corr %x+%-%x+%-%x+%-%x+%-%x+%] call Failing%.fail from 127%.0%.0%.1:%d+ failed: RuntimeError: .*line one$"),
      lines[1])
    lines = logged("DEBUG", function() raw_call(e, "fail") end)
    local all = table.concat(lines, "\n")
    assert.truthy(all:find("Traceback (Lua, most recent call first):", 1, true), all)
  end)

  it("rate-limits failed-call warnings and counts the ones left out", function()
    local e = export({ service_name = "Flood" })
    finally(function() e:destroy() end)
    -- a fresh second, and a line that reports whatever earlier specs left uncounted
    require("luv").sleep(1100)
    logged("WARNING", function() raw_call(e, "fail", '["w"]') end)
    local lines = logged("WARNING", function()
      for _ = 1, 100 do raw_call(e, "fail", '["x"]') end
    end)
    -- a second that began during the flood reports the ones left out so far
    local reported = 0
    for _, l in ipairs(lines) do
      reported = reported + (tonumber(l:match("%((%d+) more failed calls not logged%)$")) or 0)
    end
    -- at most 10 a second: 100 quick calls are not all logged
    assert.is_true(#lines < 100, #lines .. " lines: " .. table.concat(lines, "\n"))
    require("luv").sleep(1100)
    local later = logged("WARNING", function() raw_call(e, "fail", '["y"]') end)
    assert.are.equal(1, #later)
    local dropped = tonumber(later[1]:match("%((%d+) more failed calls not logged%)$"))
    assert.truthy(dropped, later[1])
    assert.are.equal(100, #lines + reported + dropped)
  end)
end)
