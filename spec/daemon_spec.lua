-- The daemon seen from the wire: raw Pyro4 frames against a live
-- listener served by this process (handshake, ping, invoke, errors, oneway,
-- batch, reply order, protocol errors), then the same listener in a separate
-- springrun process called by a real Python Pyro4 client.
local core = require "springrun.core"
local json = require "springrun.json"
local uv = require "luv"
local wc = require "helpers.wireclient"
local proc = require "helpers.proc"
local task = require "helpers.task"
local springrun = require "springrun"

local JSON, MARSHAL = core.SER_JSON, core.SER_MARSHAL
local enc = core.wire_encode

-- A service whose calls record what they received.
local seen = {}
local Base = {}
Base.__index = Base
function Base:inherited() return "from the __index chain" end

local Service = setmetatable({}, { __index = Base })
Service.__index = Service
function Service:get_data(p) return "You got remote data => " .. tostring(p) end
function Service:add(a, b) return a + b end
function Service:fail() error("boom") end
function Service:fail_obj() error({ class = "builtins.ValueError", message = "bad value" }) end
function Service:echo(...) return ... end
function Service:count(...)
  seen.count = select("#", ...)
  seen.args = table.pack(...)
  return select("#", ...)
end
function Service:none() end
function Service:log_event(x) seen.event = x end
function Service:_secret() return "never" end
-- Answers after `ms` milliseconds (a luv timer resumes the task).
function Service:slow(ms, tag)
  task.sleep(ms)
  return tag
end

local function connect_ok(port, object)
  local c = assert(wc.connect("127.0.0.1", port))
  c:send(enc(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, JSON,
    string.format('{"handshake": "hello", "object": "%s"}', object or "ServiceName")))
  local m = assert(c:recv())
  assert.are.equal(core.MSG_CONNECTOK, m.type)
  return c
end

local function invoke(c, seq, method, params, kwargs, flags, object)
  c:send(enc(core.MSG_INVOKE, flags or 0, seq, JSON,
    wc.invoke_json(object or "ServiceName", method, params, kwargs)))
end

local function result(c, seq)
  local m = assert(c:recv())
  assert.are.equal(core.MSG_RESULT, m.type)
  if seq then assert.are.equal(seq, m.seq) end
  return m, json.decode(m.data)
end

-- Exports service as name on 127.0.0.1 (a free port): the exporter, the port.
local function export(name, service)
  local e = springrun.PyroServiceExporter{
    service_name = name, service = service, service_host = "127.0.0.1", service_port = 0,
  }
  e:after_properties_set()
  return e, e.service_port
end

-- Sends n calls of method on each connection in one write (params(i, k) for
-- call k on connection i, whose result must be "c<i>-<k>"), then checks
-- every reply arrives in order on its own connection, and closes them.
local function pipeline_tagged(conns, n, method, params)
  for i, c in ipairs(conns) do
    local frames = {}
    for k = 1, n do
      frames[k] = enc(core.MSG_INVOKE, 0, k, JSON, wc.invoke_json("ServiceName", method, params(i, k)))
    end
    c:send(table.concat(frames))
  end
  for i, c in ipairs(conns) do
    for k = 1, n do
      local _, v = result(c, k)
      assert.are.equal(string.format("c%d-%d", i, k), v)
    end
    c:close()
  end
end

describe("springrun.daemon #unit #net", function()
  local exporter, port
  local log_lines, prev_output = {}, nil

  setup(function()
    -- the daemon logs refused handshakes and protocol errors: keep them for
    -- the assertions below instead of cluttering the test output
    prev_output = require("springrun.log").set_output(function(line) log_lines[#log_lines + 1] = line end)
    exporter = springrun.PyroServiceExporter{
      service_name = "ServiceName", service = setmetatable({}, Service),
      service_host = "127.0.0.1", service_port = 0, oneway = { "log_event" },
    }
    exporter:after_properties_set()
    port = exporter.service_port
  end)

  teardown(function()
    exporter:destroy()
    require("springrun.log").set_output(prev_output)
  end)

  it("answers CONNECT with metadata from the export: methods by __index chain, no _ names", function()
    local c = assert(wc.connect("127.0.0.1", port))
    c:send(enc(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 7, JSON,
      '{"handshake": "hello", "object": "ServiceName"}'))
    local m = assert(c:recv())
    assert.are.equal(core.MSG_CONNECTOK, m.type)
    assert.are.equal(core.FLAG_META_ON_CONNECT, m.flags)
    assert.are.equal(7, m.seq)
    assert.are.equal(JSON, m.serializer)
    local v = json.decode(m.data)
    assert.are.equal("hello", v.handshake)
    local methods = v.meta.methods
    table.sort(methods)
    assert.are.same({ "add", "count", "echo", "fail", "fail_obj", "get_data", "inherited",
      "log_event", "none", "slow" }, methods)
    assert.are.same({ "log_event" }, v.meta.oneway)
    assert.is_true(json.is_array(v.meta.attrs))
    assert.are.equal(0, #v.meta.attrs)
    c:close()
  end)

  it("refuses an object name that is not a string when listening", function()
    local id, msg, code = core.daemon_listen("127.0.0.1", 0, { { 42, {} } })
    assert.is_nil(id)
    assert.are.equal("objects[1][1] must be a name", msg)
    assert.are.equal("SR_EINVAL", code)
  end)

  it("answers CONNECT without META with the bare handshake response", function()
    local c = assert(wc.connect("127.0.0.1", port))
    c:send(enc(core.MSG_CONNECT, 0, 0, JSON, '{"handshake": "hello"}'))
    local m = assert(c:recv())
    assert.are.equal(core.MSG_CONNECTOK, m.type)
    assert.are.equal(0, m.flags)
    assert.are.equal('"hello"', m.data)
    invoke(c, 1, "add", "[2, 3]")
    local _, v = result(c, 1)
    assert.are.equal(5, v)
    c:close()
  end)

  it("refuses an unknown object at CONNECT with CONNECTFAIL 'unknown object' and closes", function()
    local c = assert(wc.connect("127.0.0.1", port))
    c:send(enc(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 3, JSON,
      '{"handshake": "hello", "object": "Nobody"}'))
    local m = assert(c:recv())
    assert.are.equal(core.MSG_CONNECTFAIL, m.type)
    assert.are.equal(JSON, m.serializer)
    assert.are.equal(3, m.seq)
    assert.are.equal('"unknown object"', m.data)
    assert.is_true(c:wait_closed())
    c:close()
  end)

  it("refuses a serializer it does not accept with a marshal-encoded CONNECTFAIL", function()
    local c = assert(wc.connect("127.0.0.1", port))
    c:send(enc(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 9, core.SER_PICKLE, "\128\4junk"))
    local m = assert(c:recv())
    assert.are.equal(core.MSG_CONNECTFAIL, m.type)
    assert.are.equal(MARSHAL, m.serializer)
    assert.are.equal(9, m.seq)
    local text = "message used serializer that is not accepted: 4 (pickle)"
    assert.are.equal("u" .. string.pack("<I4", #text) .. text, m.data)
    assert.is_true(c:wait_closed())
    c:close()
  end)

  it("answers a message other than CONNECT before the handshake with CONNECTFAIL", function()
    local c = assert(wc.connect("127.0.0.1", port))
    invoke(c, 5, "add", "[1, 2]")
    local m = assert(c:recv())
    assert.are.equal(core.MSG_CONNECTFAIL, m.type)
    assert.are.equal(MARSHAL, m.serializer)
    assert.truthy(m.data:find("invalid msg type 4 received", 1, true))
    assert.is_true(c:wait_closed())
    c:close()
  end)

  it("answers a wire PING with pong, same seq and serializer id 42", function()
    local c = connect_ok(port)
    c:send(enc(core.MSG_PING, 0, 0x1234, core.SER_PING, "ping"))
    local m = assert(c:recv())
    assert.are.equal(core.MSG_PING, m.type)
    assert.are.equal(0x1234, m.seq)
    assert.are.equal(42, m.serializer)
    assert.are.equal("pong", m.data)
    c:close()
  end)

  it("invokes a method and answers RESULT with the request's seq", function()
    local c = connect_ok(port)
    invoke(c, 0xBEEF, "get_data", '["Hello"]')
    local m, v = result(c, 0xBEEF)
    assert.are.equal(0, m.flags)
    assert.are.equal(JSON, m.serializer)
    assert.are.equal("You got remote data => Hello", v)
    c:close()
  end)

  it("maps null params to nil, keeps holes, passes kwargs as one trailing table", function()
    local c = connect_ok(port)
    invoke(c, 1, "count", "[1, null, 3, null]")
    local _, v = result(c, 1)
    assert.are.equal(4, v)
    assert.are.equal(1, seen.args[1])
    assert.is_nil(seen.args[2])
    assert.are.equal(3, seen.args[3])
    assert.is_nil(seen.args[4])
    invoke(c, 2, "count", "[1]", '{"b": 2}')
    _, v = result(c, 2)
    assert.are.equal(2, v)
    assert.are.same({ b = 2 }, seen.args[2])
    invoke(c, 3, "count", "{}", "{}") -- Pyro4 accepts an empty map as "no params"
    _, v = result(c, 3)
    assert.are.equal(0, v)
    c:close()
  end)

  it("returns null for no value and a JSON array for several values", function()
    local c = connect_ok(port)
    invoke(c, 1, "none")
    local m = result(c, 1)
    assert.are.equal("null", m.data)
    invoke(c, 2, "echo", '[1, null, "x"]')
    m = result(c, 2)
    assert.are.equal('[1, null, "x"]', m.data)
    invoke(c, 3, "echo", '[2.5, 9007199254740993, {"k": [true, false]}]')
    local _, v = result(c, 3)
    assert.are.equal(2.5, v[1])
    assert.are.equal(math.tointeger(9007199254740993), v[2])
    assert.are.equal("integer", math.type(v[2]))
    assert.are.same({ true, false }, v[3].k)
    c:close()
  end)

  it("turns a Lua error into an exception RESULT with the Lua traceback; the connection stays usable", function()
    local c = connect_ok(port)
    invoke(c, 4, "fail")
    local m, v = result(c, 4)
    assert.are.equal(core.FLAG_EXCEPTION, m.flags)
    assert.are.equal("builtins.RuntimeError", v.__class__)
    assert.is_true(v.__exception__)
    assert.truthy(v.args[1]:find("boom", 1, true))
    local tb = v.attributes._pyroTraceback
    assert.is_true(#tb >= 2)
    for _, line in ipairs(tb) do assert.are.equal("\n", line:sub(-1)) end
    assert.truthy(table.concat(tb):find("daemon_spec.lua", 1, true))
    invoke(c, 5, "fail_obj")
    m, v = result(c, 5)
    assert.are.equal("builtins.ValueError", v.__class__)
    assert.are.same({ "bad value" }, v.args)
    invoke(c, 6, "add", "[20, 22]")
    local _, sum = result(c, 6)
    assert.are.equal(42, sum)
    c:close()
  end)

  it("answers unknown object, unknown method and private names with Pyro4's errors", function()
    local c = connect_ok(port)
    invoke(c, 1, "add", "[1, 2]", "{}", 0, "Nobody")
    local m, v = result(c, 1)
    assert.are.equal(core.FLAG_EXCEPTION, m.flags)
    assert.are.equal("Pyro4.errors.DaemonError", v.__class__)
    assert.are.same({ "unknown object" }, v.args)
    invoke(c, 2, "nosuch")
    _, v = result(c, 2)
    assert.are.equal("builtins.AttributeError", v.__class__)
    assert.are.same({ "'ServiceName' object has no attribute 'nosuch'" }, v.args)
    invoke(c, 3, "_secret")
    _, v = result(c, 3)
    assert.are.equal("builtins.AttributeError", v.__class__)
    assert.are.same({ "attempt to access private attribute '_secret'" }, v.args)
    invoke(c, 4, "__index")
    _, v = result(c, 4)
    assert.are.same({ "attempt to access private attribute '__index'" }, v.args)
    invoke(c, 5, "get_data", '["still here"]')
    _, v = result(c, 5)
    assert.are.equal("You got remote data => still here", v)
    c:close()
  end)

  it("answers a payload that is not JSON with a SerializeError and keeps the connection", function()
    local c = connect_ok(port)
    c:send(enc(core.MSG_INVOKE, 0, 1, JSON, '{"object": "ServiceName", "method": '))
    local m, v = result(c, 1)
    assert.are.equal(core.FLAG_EXCEPTION, m.flags)
    assert.are.equal("Pyro4.errors.SerializeError", v.__class__)
    c:send(enc(core.MSG_INVOKE, 0, 2, JSON, '{"object": "ServiceName", "params": []}'))
    m, v = result(c, 2)
    assert.are.equal("builtins.KeyError", v.__class__)
    assert.are.same({ "method" }, v.args)
    invoke(c, 3, "add", "[1, 1]")
    _, v = result(c, 3)
    assert.are.equal(2, v)
    c:close()
  end)

  it("sends no reply to a oneway call and still runs it", function()
    local c = connect_ok(port)
    seen.event = nil
    invoke(c, 1, "log_event", '["e1"]', "{}", core.FLAG_ONEWAY)
    invoke(c, 2, "add", "[1, 2]")
    local m, v = result(c)
    assert.are.equal(2, m.seq)
    assert.are.equal(3, v)
    assert.are.equal("e1", seen.event)
    assert.is_true(c:quiet_for(0.1))
    c:close()
  end)

  it("runs a batch in order and stops at the first failure", function()
    local c = connect_ok(port)
    c:send(enc(core.MSG_INVOKE, core.FLAG_BATCH, 10, JSON,
      '{"object": "ServiceName", "method": "<batch>", "params": [["add", [1, 2], {}], ["add", [3, 4], {}]], "kwargs": null}'))
    local m = result(c, 10)
    assert.are.equal(core.FLAG_BATCH, m.flags)
    assert.are.equal("[3, 7]", m.data)
    c:send(enc(core.MSG_INVOKE, core.FLAG_BATCH, 11, JSON,
      '{"object": "ServiceName", "method": "<batch>", "params": [["add", [1, 2], {}], ["fail", [], {}], ["add", [3, 4], {}]], "kwargs": null}'))
    local v
    m, v = result(c, 11)
    assert.are.equal(core.FLAG_BATCH, m.flags)
    assert.are.equal(2, #v)
    assert.are.equal(3, v[1])
    assert.are.equal("Pyro4.futures._ExceptionWrapper", v[2].__class__)
    assert.are.equal("builtins.RuntimeError", v[2].exception.__class__)
    c:send(enc(core.MSG_INVOKE, core.FLAG_BATCH, 12, JSON,
      '{"object": "ServiceName", "method": "<batch>", "params": [["add", [1, 2], {}], ["nosuch", [], {}]], "kwargs": null}'))
    m, v = result(c, 12)
    assert.are.equal(core.FLAG_EXCEPTION | core.FLAG_BATCH, m.flags)
    assert.are.equal("builtins.AttributeError", v.__class__)
    c:close()
  end)

  it("serves Pyro.Daemon: ping, registered, info, get_metadata", function()
    local c = connect_ok(port, "Pyro.Daemon")
    invoke(c, 1, "ping", "[]", "{}", 0, "Pyro.Daemon")
    local m = result(c, 1)
    assert.are.equal("null", m.data)
    invoke(c, 2, "registered", "[]", "{}", 0, "Pyro.Daemon")
    local _, v = result(c, 2)
    table.sort(v)
    assert.are.same({ "Pyro.Daemon", "ServiceName" }, v)
    invoke(c, 3, "info", "[]", "{}", 0, "Pyro.Daemon")
    _, v = result(c, 3)
    assert.truthy(v:find("127.0.0.1:" .. port, 1, true))
    invoke(c, 4, "get_metadata", '["ServiceName"]', "{}", 0, "Pyro.Daemon")
    _, v = result(c, 4)
    assert.are.same({ "log_event" }, v.oneway)
    invoke(c, 5, "get_metadata", '["Nobody"]', "{}", 0, "Pyro.Daemon")
    m, v = result(c, 5)
    assert.are.equal(core.FLAG_EXCEPTION, m.flags)
    assert.are.equal("Pyro4.errors.DaemonError", v.__class__)
    assert.are.same({ "unknown object" }, v.args)
    c:close()
  end)

  it("keeps request order for pipelined calls that finish out of order", function()
    local c = connect_ok(port)
    local frames = {}
    local delays = { 80, 0, 40, 10, 0 }
    for i, ms in ipairs(delays) do
      frames[#frames + 1] = enc(core.MSG_INVOKE, 0, i, JSON,
        wc.invoke_json("ServiceName", "slow", string.format('[%d, "r%d"]', ms, i)))
    end
    frames[#frames + 1] = enc(core.MSG_PING, 0, 99, core.SER_PING, "ping")
    c:send(table.concat(frames))
    for i = 1, #delays do
      local m, v = result(c, i)
      assert.are.equal("r" .. i, v)
      assert.are.equal(i, m.seq)
    end
    local pong = assert(c:recv())
    assert.are.equal(core.MSG_PING, pong.type)
    assert.are.equal(99, pong.seq)
    c:close()
  end)

  it("closes only the connection that breaks the protocol after the handshake", function()
    local good = connect_ok(port)
    local bad = connect_ok(port)
    local frame = enc(core.MSG_INVOKE, 0, 1, JSON, wc.invoke_json("ServiceName", "add", "[1, 2]"))
    bad:send(frame:sub(1, 22) .. "\0\0" .. frame:sub(25)) -- wrong checksum
    assert.is_true(bad:wait_closed())
    assert.are.equal(0, #bad.inbox)
    local pattern = "PyroDaemonHolder %- WARNING %- closing connection from 127%.0%.0%.1:%d+ on 127%.0%.0%.1:"
      .. port .. ": header checksum mismatch"
    assert.is_true(wc.run_until(function() return table.concat(log_lines, "\n"):find(pattern) ~= nil end, 2))
    local other = connect_ok(port)
    other:send(enc(core.MSG_CONNECT, 0, 2, JSON, "{}")) -- CONNECT again: unexpected type
    assert.is_true(other:wait_closed())
    assert.are.equal(0, #other.inbox)
    invoke(good, 2, "add", "[40, 2]")
    local _, v = result(good, 2)
    assert.are.equal(42, v)
    good:close()
    bad:close()
    other:close()
  end)

  it("survives random bytes and clients that vanish with calls in flight", function()
    math.randomseed(42)
    for i = 1, 40 do
      local c = assert(wc.connect("127.0.0.1", port))
      if i % 2 == 0 then -- after a good handshake
        c:send(enc(core.MSG_CONNECT, 0, 0, JSON, '{"handshake": "hello"}'))
        assert(c:recv())
      end
      local junk = {}
      for k = 1, math.random(1, 200) do junk[k] = string.char(math.random(0, 255)) end
      if i % 4 == 0 then junk[1] = "PYRO\0\48" end -- a plausible start
      c:send(table.concat(junk))
      c:close()
    end
    for _ = 1, 5 do -- calls in flight when the client goes away
      local c = connect_ok(port)
      invoke(c, 1, "slow", '[30, "gone"]')
      c:close()
    end
    wc.run_until(function() return false end, 0.1) -- let the slow calls finish
    local c = connect_ok(port)
    invoke(c, 1, "get_data", '["alive"]')
    local _, v = result(c, 1)
    assert.are.equal("You got remote data => alive", v)
    c:close()
  end)

  it("closes a connection whose message is larger than the limit without replying", function()
    local e2 = springrun.PyroServiceExporter{ service_name = "Small", service = setmetatable({}, Service),
      service_host = "127.0.0.1", service_port = 0, max_message_size = 1024 }
    e2:after_properties_set()
    finally(function() e2:destroy() end)
    local c = connect_ok(e2.service_port, "Small")
    invoke(c, 1, "get_data", '["' .. string.rep("x", 2000) .. '"]', "{}", 0, "Small")
    assert.is_true(c:wait_closed())
    assert.are.equal(0, #c.inbox)
    c:close()
  end)
end)

describe("springrun.daemon's dispatch #unit #net", function()
  -- One path answers every shape of call (src/lsr_serve.c with the
  -- exporter's policy): each shape below, with what the client must get,
  -- and which were answered without a Lua function besides the method.
  local Methods = {}
  Methods.__index = Methods
  function Methods:get_data(p) return "You got remote data => " .. tostring(p) end
  function Methods:none() end
  function Methods:echo(...) return ... end
  function Methods:count(...) return select("#", ...) end
  function Methods:fail() error("boom") end
  function Methods:fail_obj() error({ class = "builtins.ValueError", message = "bad value" }) end
  function Methods:gives_function() return function() end end
  function Methods:nils() return nil, nil end
  function Methods:slow(ms, tag)
    task.sleep(ms)
    return tag
  end
  local exp, port, prev_output

  setup(function()
    prev_output = require("springrun.log").set_output(function() end)
    local Mid = setmetatable({}, Methods) -- a two-level __index chain of tables
    Mid.__index = Mid
    exp, port = export("S", setmetatable({}, Mid))
  end)

  teardown(function()
    exp:destroy()
    require("springrun.log").set_output(prev_output)
  end)

  local null = json.null
  -- method, params, kwargs, then the value, or the exception class and a
  -- piece of its message
  local CALLS = {
    { "get_data", '["x"]', nil, "You got remote data => x" },
    { "get_data", "[null]", nil, "You got remote data => nil" },
    { "none", "[]", nil, null },
    { "echo", "[]", nil, null },
    { "echo", '[1, null, "x"]', nil, { 1, null, "x" } },
    { "nils", "[]", nil, { null, null } },
    { "count", "[1, 2, 3, 4, 5, 6, 7, 8]", nil, 8 },
    { "count", "[1, 2, 3, 4, 5, 6, 7, 8, 9]", nil, 9 },
    { "count", "[1]", '{"k": 2}', 2 },
    { "count", "{}", nil, 0 },
    { "fail", "[]", nil, nil, "builtins.RuntimeError", "boom" },
    { "fail_obj", "[]", nil, nil, "builtins.ValueError", "bad value" },
    { "gives_function", "[]", nil, nil, "Pyro4.errors.SerializeError",
      "cannot serialize the result of S.gives_function" },
    { "slow", '[5, "t"]', nil, "t" },
    { "missing", "[]", nil, nil, "builtins.AttributeError", "'S' object has no attribute 'missing'" },
    { "_private", "[]", nil, nil, "builtins.AttributeError",
      "attempt to access private attribute '_private'" },
  }

  it("answers every shape of call as the call mapping says", function()
    local _, _, _, f0 = core.daemon_reply_counts()
    local c = connect_ok(port, "S")
    for i, call in ipairs(CALLS) do
      invoke(c, i, call[1], call[2], call[3], 0, "S")
      local m, v = result(c, i)
      local what = call[1] .. " " .. call[2]
      if call[5] then
        assert.are.equal(core.FLAG_EXCEPTION, m.flags & core.FLAG_EXCEPTION, what)
        assert.are.equal(call[5], v.__class__, what)
        assert.truthy(tostring(v.args[1]):find(call[6], 1, true), what .. ": " .. tostring(v.args[1]))
      else
        assert.are.equal(0, m.flags & core.FLAG_EXCEPTION, what)
        if type(call[4]) == "table" then
          assert.are.same(call[4], { table.unpack(v, 1, #call[4]) }, what)
          assert.are.equal(#call[4], #v, what)
        else
          assert.are.equal(call[4], v, what)
        end
      end
    end
    c:close()
    local _, _, _, f1 = core.daemon_reply_counts()
    -- without a Lua function: get_data x2, none, echo(), count(8 args) and
    -- slow (after its yield); several results, 9 arguments, kwargs, map
    -- params, failures, an unserializable result and unknown names went
    -- through the policy
    assert.are.equal(6, f1 - f0)
  end)

  it("keeps a failing method's traceback, naming the service's own line", function()
    local c = connect_ok(port, "S")
    invoke(c, 1, "fail", "[]", nil, 0, "S")
    local _, v = result(c, 1)
    c:close()
    local tb = table.concat(v.attributes._pyroTraceback)
    assert.truthy(tb:find("daemon_spec%.lua:%d+:"), tb)
    assert.truthy(tb:find("RuntimeError: .*boom"), tb)
  end)

  it("answers a batch item by item through the same call, stopping at the first failure", function()
    local c = connect_ok(port, "S")
    invoke(c, 1, "<batch>", '[["get_data", ["a"], {}], ["count", [1, 2], {}], ["fail", [], {}], ["none", [], {}]]',
      nil, core.FLAG_BATCH, "S")
    local m, v = result(c, 1)
    c:close()
    assert.are.equal(0, m.flags & core.FLAG_EXCEPTION)
    assert.are.equal(3, #v)
    assert.are.equal("You got remote data => a", v[1])
    assert.are.equal(2, v[2])
    assert.are.equal("Pyro4.futures._ExceptionWrapper", v[3].__class__)
    assert.are.equal("builtins.RuntimeError", v[3].exception.__class__)
  end)
end)

local WRITERS = {
  auto = "the Lua thread, or the daemon thread in batches",
  direct = "the Lua thread",
  thread = "the daemon thread",
}
for _, mode in ipairs({ "auto", "direct", "thread" }) do
  local who = WRITERS[mode]
  describe("springrun.daemon replies written by " .. who .. " #unit #net", function()
    local exporter, port

    setup(function()
      core.daemon_set_reply_writer(mode)
      exporter, port = export("ServiceName", setmetatable({}, Service))
    end)

    teardown(function()
      exporter:destroy()
      core.daemon_set_reply_writer("auto")
    end)

    it("writes replies the way the mode says, whole and in order on every connection", function()
      local d0, b0, h0 = core.daemon_reply_counts()
      -- one call at a time: each request is drained alone
      local c = connect_ok(port)
      for k = 1, 5 do
        invoke(c, k, "get_data", '["x' .. k .. '"]')
        local _, v = result(c, k)
        assert.are.equal("You got remote data => x" .. k, v)
      end
      -- 8 connections, each pipelining 50 calls in one write: drained together
      local conns = {}
      for i = 1, 8 do conns[i] = connect_ok(port) end
      pipeline_tagged(conns, 50, "echo", function(i, k) return string.format('["c%d-%d"]', i, k) end)
      c:close()
      local d1, b1, h1 = core.daemon_reply_counts()
      local direct, batched, thread = d1 - d0, b1 - b0, h1 - h0
      assert.are.equal(405, direct + batched + thread)
      if mode == "auto" then
        assert.is_true(direct >= 5, "lone replies written directly: " .. direct)
        assert.is_true(batched >= 200, "pipelined replies batched: " .. batched)
        assert.are.equal(0, thread)
      elseif mode == "direct" then
        assert.are.same({ 405, 0, 0 }, { direct, batched, thread })
      else
        assert.are.same({ 0, 0, 405 }, { direct, batched, thread })
      end
    end)

    it("sends the CONNECTOK of a pipelined first call in one write with its reply, any other at once", function()
      local function merged() return select(5, core.daemon_reply_counts()) end
      local function connect_frame()
        return enc(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, JSON,
          '{"handshake": "hello", "object": "ServiceName"}')
      end
      local m0 = merged()
      -- CONNECT and a call in one write: both answers, in order, in one write
      local c = assert(wc.connect("127.0.0.1", port))
      c:send(connect_frame() .. enc(core.MSG_INVOKE, 0, 1, JSON,
        wc.invoke_json("ServiceName", "get_data", '["p"]')))
      assert.are.equal(core.MSG_CONNECTOK, assert(c:recv()).type)
      local _, v = result(c, 1)
      assert.are.equal("You got remote data => p", v)
      assert.are.equal(m0 + 1, merged())
      -- a first call that takes a while: the CONNECTOK waits for its reply
      local c2 = assert(wc.connect("127.0.0.1", port))
      c2:send(connect_frame() .. enc(core.MSG_INVOKE, 0, 1, JSON,
        wc.invoke_json("ServiceName", "slow", '[30, "late"]')))
      assert.are.equal(core.MSG_CONNECTOK, assert(c2:recv()).type)
      _, v = result(c2, 1)
      assert.are.equal("late", v)
      assert.are.equal(m0 + 2, merged())
      -- a oneway first call gets no reply: the CONNECTOK leaves at once
      local c3 = assert(wc.connect("127.0.0.1", port))
      c3:send(connect_frame() .. enc(core.MSG_INVOKE, core.FLAG_ONEWAY, 1, JSON,
        wc.invoke_json("ServiceName", "log_event", '["ow"]')))
      assert.are.equal(core.MSG_CONNECTOK, assert(c3:recv()).type)
      invoke(c3, 2, "add", "[1, 2]")
      _, v = result(c3, 2)
      assert.are.equal(3, v)
      -- CONNECT alone (every Pyro4 client): answered at once
      local c4 = connect_ok(port)
      invoke(c4, 1, "add", "[2, 2]")
      _, v = result(c4, 1)
      assert.are.equal(4, v)
      assert.are.equal(m0 + 2, merged())
      for _, x in ipairs({ c, c2, c3, c4 }) do x:close() end
    end)

    it("keeps request order and whole frames when replies are larger than the socket takes at once", function()
      local c = connect_ok(port)
      local big = string.rep("0123456789abcdef", 256 * 1024) -- 4 MiB
      local frames = {
        enc(core.MSG_INVOKE, 0, 1, JSON, wc.invoke_json("ServiceName", "echo", '["' .. big .. '"]')),
        enc(core.MSG_INVOKE, 0, 2, JSON, wc.invoke_json("ServiceName", "slow", '[20, "after"]')),
        enc(core.MSG_INVOKE, 0, 3, JSON, wc.invoke_json("ServiceName", "echo", '["' .. big .. '"]')),
        enc(core.MSG_PING, 0, 4, core.SER_PING, "ping"),
        enc(core.MSG_INVOKE, 0, 5, JSON, wc.invoke_json("ServiceName", "add", "[2, 3]")),
      }
      c:send(table.concat(frames))
      local m = assert(c:recv(20))
      assert.are.equal(1, m.seq)
      assert.are.equal('"' .. big .. '"', m.data)
      local _, v = result(c, 2)
      assert.are.equal("after", v)
      m = assert(c:recv(20))
      assert.are.equal(3, m.seq)
      assert.are.equal(#big + 2, #m.data)
      m = assert(c:recv())
      assert.are.equal(core.MSG_PING, m.type)
      assert.are.equal(4, m.seq)
      _, v = result(c, 5)
      assert.are.equal(5, v)
      c:close()
    end)

    it("stops reading a client that pipelines too far ahead and resumes as replies leave", function()
      local lines = {}
      local log = require "springrun.log"
      local prev = log.set_output(function(l) lines[#lines + 1] = l end)
      local daemon_log = log.get("springrun.remoting.pyro.PyroDaemonHolder")
      daemon_log:set_level("DEBUG")
      finally(function()
        daemon_log:set_level(nil)
        log.set_output(prev)
      end)
      local c = connect_ok(port)
      local n = 3000
      local frames = {}
      for k = 1, n do
        frames[k] = enc(core.MSG_INVOKE, 0, k % 65536, JSON,
          wc.invoke_json("ServiceName", "echo", string.format('[%d]', k)))
      end
      c:send(table.concat(frames))
      for k = 1, n do
        local m, v = result(c, k % 65536)
        assert.are.equal(k, v)
        assert.are.equal(0, m.flags)
      end
      local text = table.concat(lines, "\n")
      assert.truthy(text:find("pausing reads from 127.0.0.1:%d+: 1024 replies outstanding"), text)
      assert.truthy(text:find("resuming reads from 127.0.0.1:%d+"), text)
      c:close()
    end)

    it("serves several connections at once, each in its own order", function()
      local conns = {}
      for i = 1, 4 do conns[i] = connect_ok(port) end
      pipeline_tagged(conns, 10, "slow", function(i, k)
        return string.format('[%d, "c%d-%d"]', (k * 7 + i * 3) % 25, i, k)
      end)
    end)
  end)
end

-- Who runs the daemon's loop (daemon.c, "who runs the loop"): the Lua thread
-- while it is idle, the daemon thread while Lua is busy.
describe("springrun.daemon's loop while the Lua thread is busy #unit #net", function()
  -- A client in another process: connects, sends CONNECT and PING in one
  -- write, prints when it began and when both answers were in (monotonic
  -- seconds, the clock of uv.hrtime) and the answers' types.
  local CLIENT = [[
import socket, struct, sys, time, binascii
port, data = int(sys.argv[1]), binascii.unhexlify(sys.argv[2])
t0 = time.monotonic()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(data)
buf, types = b"", []
while len(types) < 2:
    while len(buf) < 24 or len(buf) < 24 + struct.unpack("!H", buf[18:20])[0] + struct.unpack("!I", buf[12:16])[0]:
        got = s.recv(65536)
        if not got: sys.exit("closed")
        buf += got
    n = 24 + struct.unpack("!H", buf[18:20])[0] + struct.unpack("!I", buf[12:16])[0]
    types.append(struct.unpack("!H", buf[6:8])[0])
    buf = buf[n:]
print(t0, time.monotonic(), types[0], types[1])
]]

  it("answers another connection's handshake and PING while a call keeps Lua busy", function()
    local cleanup = proc.cleanups(finally)
    local e, port = export("Busy", setmetatable({}, Service))
    cleanup(function() e:destroy() end)
    local frames = enc(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, JSON,
      '{"handshake": "hello", "object": "Busy"}') .. enc(core.MSG_PING, 0, 7, core.SER_PING, "ping")
    local out = {}
    local stdout = uv.new_pipe(false)
    local child = uv.spawn("/usr/bin/python3", {
      args = { "-c", CLIENT, tostring(port), (frames:gsub(".", function(ch)
        return string.format("%02x", ch:byte()) end)) },
      stdio = { nil, stdout, nil },
    }, function() end)
    assert.truthy(child)
    cleanup(function() if not child:is_closing() then child:close() end end)
    -- this thread is busy (no loop runs) for 2 s: only the daemon thread can
    -- answer the client meanwhile
    local t0 = uv.hrtime()
    while uv.hrtime() - t0 < 2e9 do end
    local t1 = uv.hrtime()
    stdout:read_start(function(err, data)
      if data then out[#out + 1] = data else stdout:close() end
    end)
    assert.is_true(wc.run_until(function() return stdout:is_closing() end, 10), table.concat(out))
    local a, b, ty1, ty2 = table.concat(out):match("^(%S+) (%S+) (%d+) (%d+)")
    assert.truthy(a, table.concat(out))
    assert.are.same({ core.MSG_CONNECTOK, core.MSG_PING }, { tonumber(ty1), tonumber(ty2) })
    local began, answered = tonumber(a) * 1e9, tonumber(b) * 1e9
    -- (a client that only began after the busy time proves nothing)
    assert.is_true(began < t1 - 0.5e9, "the client began too late to tell")
    assert.is_true(answered < t1, "answered only once the Lua thread was idle again")
    assert.is_true(answered - began < 0.3e9, "answered within 0.3 s")
    -- idle again: this thread runs the loop and serves calls as before
    local c = connect_ok(port, "Busy")
    for k = 1, 3 do
      invoke(c, k, "get_data", '["i' .. k .. '"]', nil, nil, "Busy")
      local _, v = result(c, k)
      assert.are.equal("You got remote data => i" .. k, v)
    end
    c:close()
  end)
end)

describe("springrun.daemon in a server process #net #interop", function()
  local script = proc.root .. "/spec/fixtures/daemon_server.lua"

  local function start(cleanup, extra_env)
    local port = proc.free_port()
    local p = proc.spawn({ proc.bin, script, tostring(port) }, { env = extra_env })
    cleanup(function() proc.stop(p) end)
    local ok, err = proc.wait_port("127.0.0.1", port, 10, p)
    assert(ok, err)
    return p, port
  end

  -- Runs a Lua script (source) that is to export "S" on port; returns the
  -- process once the port accepts. The script file and process go at cleanup.
  local function start_script(cleanup, port, source)
    local path = proc.tmpfile(source)
    cleanup(function() os.remove(path) end)
    local p = proc.spawn({ proc.bin, path })
    cleanup(function() proc.stop(p) end)
    assert(proc.wait_port("127.0.0.1", port, 10, p))
    return p
  end

  -- Calls S.stop() on port; returns the connection and the result.
  local function call_stop(port)
    local c = connect_ok(port, "S")
    invoke(c, 1, "stop", "[]", "{}", 0, "S")
    local _, v = result(c, 1)
    return c, v
  end

  -- The server's context destroy wrote "destroyed" to marker.
  local function assert_destroyed(marker)
    local f = assert(io.open(marker))
    assert.are.equal("destroyed", f:read("a"))
    f:close()
  end

  it("serves a real Python Pyro4 client (JSON): calls, kwargs, errors, oneway, batch, metadata", function()
    local cleanup = proc.cleanups(finally)
    local _, port = start(cleanup)
    local py = proc.spawn({ proc.python, proc.root .. "/spec/fixtures/pyro4_client.py", tostring(port) },
      { env = { PYRO_SERIALIZER = "json" } })
    cleanup(function() proc.stop(py) end)
    assert.are.equal(0, proc.wait_exit(py, 30), py:stderr())
    assert.are.equal(table.concat({
      "get_data: You got remote data => Hello",
      "add: 5",
      "add kwargs: 8",
      "several: [1, None, 'x']",
      "none: None",
      "fail: RuntimeError boom True",
      "nosuch: AttributeError remote object 'PYRO:ServiceName@127.0.0.1:" .. port .. "' has no exposed attribute or method 'nosuch'",
      "batch: [3, 7]",
      "oneway: ok",
      "events: ['e1']",
      "daemon: True ['Pyro.Daemon', 'ServiceName']",
      "floats: 0.30000000000000004 1234567890123456789",
      "serpent: You got remote data => serpent",
      "compressed: True",
      "",
    }, "\n"), py:stdout())
  end)

  it("raw frames reach the server process; SIGTERM drains the call in flight, closes the context, exits 0", function()
    local cleanup = proc.cleanups(finally)
    local marker = proc.tmppath(cleanup)
    local p, port = start(cleanup, { DESTROY_MARKER = marker })
    local c = connect_ok(port)
    invoke(c, 1, "slow", '[300, "late"]')
    -- wait until the call is running in the server, then ask it to stop
    local c2 = connect_ok(port)
    invoke(c2, 1, "started")
    local _, started = result(c2, 1)
    assert.are.equal(1, started)
    c2:close()
    proc.kill(p, "sigterm")
    local _, v = result(c, 1)
    assert.are.equal("late", v)
    assert.are.equal(0, proc.wait_exit(p, 10), p:stderr())
    assert_destroyed(marker)
    assert.is_true(proc.wait_port_closed("127.0.0.1", port, 5))
    c:close()
  end)

  it("has its services registered by the time the port accepts connections", function()
    local cleanup = proc.cleanups(finally)
    for _ = 1, 3 do
      local port = proc.free_port()
      local p = proc.spawn({ proc.bin, script, tostring(port) })
      cleanup(function() proc.stop(p) end)
      local c
      local deadline = uv.hrtime() + 10e9
      repeat -- connect as early as possible: the first accepted connection counts
        c = wc.connect("127.0.0.1", port, 1)
        if not c then uv.sleep(1) end
      until c or uv.hrtime() > deadline or p:status()
      assert(c, "the server never accepted: " .. p:stderr())
      c:send(enc(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, JSON,
        '{"handshake": "hello", "object": "ServiceName"}'))
      local m = assert(c:recv())
      assert.are.equal(core.MSG_CONNECTOK, m.type, m.data)
      c:close()
      proc.stop(p)
    end
  end)

  it("keeps a script serving while it exports and exits 0 once nothing is exported", function()
    local cleanup = proc.cleanups(finally)
    local port = proc.free_port()
    local p = start_script(cleanup, port, string.format([[
      local springrun = require "springrun"
      local uv = require "luv"
      local ex = springrun.PyroServiceExporter{ service_name = "S", service_host = "127.0.0.1",
        service_port = %d, service = { stop = function() return "stopping" end } }
      ex:after_properties_set()
      ex.service.stop = function()
        local t = uv.new_timer()
        t:start(10, 0, function() t:close() ex:destroy() end)
        return "stopping"
      end
    ]], port))
    assert.is_nil(p:status())
    local c, v = call_stop(port)
    assert.are.equal("stopping", v)
    assert.are.equal(0, proc.wait_exit(p, 10), p:stderr())
    c:close()
  end)

  it("shuts down cleanly when the script's code calls springrun.stop()", function()
    local cleanup = proc.cleanups(finally)
    local port = proc.free_port()
    local marker = proc.tmppath(cleanup)
    local p = start_script(cleanup, port, string.format([[
      local springrun = require "springrun"
      local Svc = {}
      function Svc.stop() springrun.stop() return "bye" end
      function Svc.destroy()
        local f = assert(io.open(%q, "w")) f:write("destroyed") f:close()
      end
      springrun.context {
        svc = { class = function() return Svc end, destroy_method = "destroy" },
        ex = { class = springrun.PyroServiceExporter, props = { service_name = "S",
          service = springrun.ref "svc", service_host = "127.0.0.1", service_port = %d } },
      }
    ]], marker, port))
    local c, v = call_stop(port)
    assert.are.equal("bye", v)
    assert.are.equal(0, proc.wait_exit(p, 10), p:stderr())
    assert_destroyed(marker)
    c:close()
  end)

  it("exits 0 on SIGINT, closing the context", function()
    local cleanup = proc.cleanups(finally)
    local marker = proc.tmppath(cleanup)
    local p, port = start(cleanup, { DESTROY_MARKER = marker })
    local c = connect_ok(port)
    invoke(c, 1, "get_data", '["x"]')
    result(c, 1)
    proc.kill(p, "sigint")
    assert.are.equal(0, proc.wait_exit(p, 10), p:stderr())
    assert.is_true(c:wait_closed())
    assert_destroyed(marker)
    c:close()
  end)
end)
