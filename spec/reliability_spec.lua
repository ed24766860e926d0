-- Hostile input and limits against a live daemon served by this process:
-- every kind of bad input (garbage, wrong magic, a 2 GB header, truncated
-- messages, invalid JSON/serpent bodies, deep nesting, huge arrays, invalid
-- UTF-8, unknown objects and methods, private and metatable names,
-- serializers that are not supported) gets a clear error or a closed
-- connection and a log line naming the peer, and afterwards the same daemon
-- still answers a normal call from another connection. Then each limit
-- (connections, message size, send deadline, idle timeout, queued replies,
-- queued invocations, depth and elements) with small values.
local core = require "springrun.core"
local json = require "springrun.json"
local uv = require "luv"
local wc = require "helpers.wireclient"
local runtime = require "springrun.runtime"
local springrun = require "springrun"
local log = require "springrun.log"

local JSON, SERPENT, MARSHAL = core.SER_JSON, core.SER_SERPENT, core.SER_MARSHAL
local enc = core.wire_encode

local Service = {}
Service.__index = Service
Service.data = "a plain field, not a method"
function Service:echo(x) return x end
function Service:_private() return "never" end
-- Waits until released (see release()), then returns tag.
local waiting = {}
function Service:block(tag)
  local co = runtime.current()
  waiting[#waiting + 1] = co
  coroutine.yield()
  return tag
end
local function release_all()
  local list = waiting
  waiting = {}
  for _, co in ipairs(list) do runtime.resume(co) end
end
-- a metatable field reachable through __index if nothing stopped it
Service.__gc_like = function() return "never" end

local function export(name, props)
  local t = {
    service_name = name, service = setmetatable({}, Service),
    service_host = "127.0.0.1", service_port = 0,
  }
  for k, v in pairs(props or {}) do t[k] = v end
  local e = springrun.PyroServiceExporter(t)
  e:after_properties_set()
  return e
end

local function connect_ok(port, object, ser)
  local c = assert(wc.connect("127.0.0.1", port))
  if ser == SERPENT then
    c:send(enc(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, SERPENT,
      "# serpent utf-8 python3.2\n{'handshake':'hello','object':'" .. object .. "'}"))
  else
    c:send(enc(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, JSON,
      string.format('{"handshake": "hello", "object": "%s"}', object)))
  end
  local m = assert(c:recv())
  assert.are.equal(core.MSG_CONNECTOK, m.type, m.data)
  return c
end

local function call(c, seq, object, method, params_json)
  c:send(enc(core.MSG_INVOKE, 0, seq, JSON, wc.invoke_json(object, method, params_json or "[]")))
  local m = assert(c:recv())
  assert.are.equal(core.MSG_RESULT, m.type)
  assert.are.equal(seq, m.seq)
  return m, json.decode(m.data)
end

-- The daemon still serves: a normal call on a new connection.
local function still_serves(port, object)
  local c = connect_ok(port, object)
  local m, v = call(c, 7, object, "echo", '["still here"]')
  assert.are.equal(0, m.flags & core.FLAG_EXCEPTION)
  assert.are.equal("still here", v)
  c:close()
end

-- An exception RESULT: returns its class and message.
local function exception_of(m)
  assert.are_not.equal(0, m.flags & core.FLAG_EXCEPTION)
  local v = m.serializer == SERPENT and core.serpent_decode(m.data) or json.decode(m.data)
  return v.__class__, v.args and v.args[1]
end

local wait_line = wc.wait_line

-- A Pyro4 header with any data length (checksum correct).
local function raw_header(msgtype, data_len, ser)
  local sum = (msgtype + 48 + data_len + 0 + ser + 0 + 1 + 0x34E9) & 0xffff
  return string.pack(">c4HHHHI4HHHH", "PYRO", 48, msgtype, 0, 1, data_len, ser, 0, 0, sum)
end

describe("springrun reliability: hostile input against a live daemon #unit #net", function()
  local e, port, lines, prev
  local NAME = "Hostile"

  setup(function()
    lines = {}
    prev = log.set_output(function(line) lines[#lines + 1] = line end)
    e = export(NAME, { max_depth = 50, max_elements = 10000 })
    port = e.service_port
  end)

  teardown(function()
    e:destroy()
    log.set_output(prev)
  end)

  local function wait_logged(...) return wait_line(lines, ...) end

  -- Sends echo(params_json) as INVOKE 1 on c; returns the exception's class
  -- and message.
  local function echo_exception(c, params_json)
    c:send(enc(core.MSG_INVOKE, 0, 1, JSON, wc.invoke_json(NAME, "echo", params_json)))
    return exception_of(assert(c:recv()))
  end

  -- Closes c and checks that the daemon still serves a new connection.
  local function close_and_check(c)
    c:close()
    still_serves(port, NAME)
  end

  it("answers garbage bytes before the handshake with CONNECTFAIL, logs the peer, keeps serving", function()
    local c = assert(wc.connect("127.0.0.1", port))
    local junk = {}
    for i = 1, 64 do junk[i] = string.char((i * 37) % 256) end
    c:send(table.concat(junk))
    local m = c:recv()
    assert.is_truthy(m == nil or m.type == core.MSG_CONNECTFAIL)
    assert.is_true(c:wait_closed())
    c:close()
    assert.is_true(wait_logged("127.0.0.1:", "refused"))
    still_serves(port, NAME)
  end)

  it("refuses a wrong magic after the handshake by closing the connection", function()
    local c = connect_ok(port, NAME)
    local frame = enc(core.MSG_INVOKE, 0, 1, JSON, wc.invoke_json(NAME, "echo", "[1]"))
    c:send("XYRO" .. frame:sub(5))
    assert.is_true(c:wait_closed())
    assert.are.equal(0, #c.inbox)
    c:close()
    assert.is_true(wait_logged("closing connection from 127.0.0.1:", "magic"))
    still_serves(port, NAME)
  end)

  it("closes a connection whose header claims 2 GB without allocating or replying", function()
    local c = connect_ok(port, NAME)
    c:send(raw_header(core.MSG_INVOKE, 0x7fffffff, JSON) .. "{")
    assert.is_true(c:wait_closed())
    assert.are.equal(0, #c.inbox)
    c:close()
    assert.is_true(wait_logged("closing connection from 127.0.0.1:", "max_message_size"))
    still_serves(port, NAME)
  end)

  it("closes a connection that sends more than 64 KiB before its handshake, not after it", function()
    local c = assert(wc.connect("127.0.0.1", port))
    c:send(raw_header(core.MSG_CONNECT, 64 * 1024 + 1, JSON))
    assert.is_true(c:wait_closed())
    assert.are.equal(0, #c.inbox)
    c:close()
    assert.is_true(wait_logged("closing connection from 127.0.0.1:", "(before the handshake)"))
    -- after the handshake the exporter's max_message_size applies again
    local c2 = connect_ok(port, NAME)
    local big = string.rep("y", 200 * 1024)
    local m, v = call(c2, 1, NAME, "echo", '["' .. big .. '"]')
    assert.are.equal(0, m.flags & core.FLAG_EXCEPTION)
    assert.are.equal(big, v)
    c2:close()
  end)

  it("drops a truncated message whose client then closes", function()
    local c = connect_ok(port, NAME)
    local frame = enc(core.MSG_INVOKE, 0, 1, JSON, wc.invoke_json(NAME, "echo", '["x"]'))
    c:send(frame:sub(1, #frame - 5))
    c:close()
    local c2 = connect_ok(port, NAME)
    c2:send(raw_header(core.MSG_INVOKE, 100, JSON):sub(1, 10))
    c2:close()
    still_serves(port, NAME)
  end)

  it("answers an invalid JSON body with SerializeError and keeps the connection", function()
    local c = connect_ok(port, NAME)
    c:send(enc(core.MSG_INVOKE, 0, 1, JSON, '{"object": "Hostile", "method": "echo", "params": [1,}'))
    local m = assert(c:recv())
    local cls, msg = exception_of(m)
    assert.are.equal("Pyro4.errors.SerializeError", cls)
    assert.matches("cannot decode", msg)
    local _, v = call(c, 2, NAME, "echo", '["same connection"]')
    assert.are.equal("same connection", v)
    close_and_check(c)
  end)

  it("answers an invalid serpent body with SerializeError and evaluates nothing", function()
    local c = connect_ok(port, NAME, SERPENT)
    for seq, body in ipairs({
      "# serpent utf-8 python3.2\n{'object':'Hostile','method':'echo','params':(__import__('os').system('false'),),'kwargs':{}}",
      "# serpent utf-8 python3.2\n{'object':'Hostile','method':'echo','params':(1,",
      "# serpent utf-8 python3.2\n{'object':'Hostile','method':'echo','params':(os.execute('false'),),'kwargs':{}}",
    }) do
      c:send(enc(core.MSG_INVOKE, 0, seq, SERPENT, body))
      local m = assert(c:recv())
      assert.are.equal(seq, m.seq)
      local cls = exception_of(m)
      assert.are.equal("Pyro4.errors.SerializeError", cls)
    end
    close_and_check(c)
  end)

  it("refuses nesting deeper than max_depth with SerializeError naming the depth", function()
    local c = connect_ok(port, NAME)
    local deep = string.rep("[", 5000) .. string.rep("]", 5000)
    local cls, msg = echo_exception(c, "[" .. deep .. "]")
    assert.are.equal("Pyro4.errors.SerializeError", cls)
    assert.matches("nesting too deep %(more than 50 levels%).*%(max_depth%)", msg)
    assert.is_true(wait_logged("request from 127.0.0.1:", "refused", "(max_depth)"))
    -- within the limit is fine
    local ok = string.rep("[", 40) .. string.rep("]", 40)
    local m = call(c, 2, NAME, "echo", "[" .. ok .. "]")
    assert.are.equal(0, m.flags & core.FLAG_EXCEPTION)
    close_and_check(c)
  end)

  it("refuses an array beyond max_elements with SerializeError", function()
    local c = connect_ok(port, NAME)
    local items = {}
    for i = 1, 20000 do items[i] = "0" end
    local cls, msg = echo_exception(c, "[[" .. table.concat(items, ",") .. "]]")
    assert.are.equal("Pyro4.errors.SerializeError", cls)
    assert.matches("too many elements.*%(max_elements%)", msg)
    close_and_check(c)
  end)

  it("refuses invalid UTF-8 in a JSON string with SerializeError", function()
    local c = connect_ok(port, NAME)
    local cls, msg = echo_exception(c, '["\xff\xfe bad"]')
    assert.are.equal("Pyro4.errors.SerializeError", cls)
    assert.matches("UTF%-8", msg)
    close_and_check(c)
  end)

  it("answers unknown objects, unknown methods, private, metatable and data names with errors", function()
    local c = connect_ok(port, NAME)
    local m = call(c, 1, "NoSuchObject", "echo", "[1]")
    assert.are.same({ "Pyro4.errors.DaemonError", "unknown object" }, { exception_of(m) })
    local cases = {
      { "nosuch", "has no attribute 'nosuch'" },
      { "_private", "private attribute '_private'" },
      { "__index", "private attribute '__index'" },
      { "__gc", "private attribute '__gc'" },
      { "__gc_like", "private attribute '__gc_like'" },
      { "data", "has no attribute 'data'" },
      { "block.x", "has no attribute 'block.x'" },
    }
    for i, case in ipairs(cases) do
      local cls, msg = exception_of(call(c, i + 1, NAME, case[1], "[1]"))
      assert.are.equal("builtins.AttributeError", cls)
      assert.is_truthy(msg:find(case[2], 1, true), msg)
    end
    close_and_check(c)
  end)

  it("refuses params that are not a list without trusting a count from the request", function()
    local c = connect_ok(port, NAME)
    -- a params map with n = 1e15 once drove a loop of 1e15 steps on the Lua thread
    for i, params in ipairs({ '{"n": 1e15}', '{"n": 3.5}', '{"1": "x"}', '"text"', "7" }) do
      local cls, msg = exception_of(call(c, i, NAME, "echo", params))
      assert.are.equal("builtins.TypeError", cls)
      assert.is_truthy(msg:find("params must be a list", 1, true), msg)
    end
    -- an empty map is no arguments, as in Pyro4
    local m, v = call(c, 9, NAME, "echo", "{}")
    assert.are.equal(0, m.flags & core.FLAG_EXCEPTION)
    assert.are.equal(json.null, v)
    -- the connection still answers, in order
    m, v = call(c, 10, NAME, "echo", '["after"]')
    assert.are.equal("after", v)
    close_and_check(c)
  end)

  it("refuses kwargs sent as a list with TypeError", function()
    local c = connect_ok(port, NAME)
    c:send(enc(core.MSG_INVOKE, 0, 1, JSON, wc.invoke_json(NAME, "echo", "[1]", "[2]")))
    local m = assert(c:recv())
    local cls, msg = exception_of(m)
    assert.are.equal("builtins.TypeError", cls)
    assert.is_truthy(msg:find("kwargs must be a map", 1, true), msg)
    c:close()
  end)

  it("does not reach a function added to the service after export", function()
    local svc = e.service
    rawset(svc, "late", function() return "late" end)
    finally(function() rawset(svc, "late", nil) end)
    local c = connect_ok(port, NAME)
    local cls = exception_of(call(c, 1, NAME, "late", "[]"))
    assert.are.equal("builtins.AttributeError", cls)
    c:close()
  end)

  it("refuses pickle, marshal, dill, msgpack, cloudpickle and unknown serializers naming them", function()
    for _, case in ipairs({ { 4, "pickle" }, { 3, "marshal" }, { 5, "dill" }, { 6, "msgpack" },
                            { 7, "cloudpickle" }, { 99, "unknown" } }) do
      local c = assert(wc.connect("127.0.0.1", port))
      c:send(enc(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 3, case[1], "\128\4junk"))
      local m = assert(c:recv())
      assert.are.equal(core.MSG_CONNECTFAIL, m.type)
      assert.are.equal(MARSHAL, m.serializer)
      assert.is_truthy(m.data:find("not accepted: " .. case[1] .. " (" .. case[2] .. ")", 1, true), m.data)
      assert.is_true(c:wait_closed())
      c:close()
    end
    -- after the handshake: the connection is closed and the log names it
    local c = connect_ok(port, NAME)
    c:send(enc(core.MSG_INVOKE, 0, 1, 4, "\128\4junk"))
    assert.is_true(c:wait_closed())
    assert.are.equal(0, #c.inbox)
    c:close()
    assert.is_true(wait_logged("closing connection from 127.0.0.1:", "serializer 4 (pickle)"))
    still_serves(port, NAME)
  end)
end)

describe("springrun reliability: limits #unit #net", function()
  local lines, prev

  before_each(function()
    lines = {}
    prev = log.set_output(function(line) lines[#lines + 1] = line end)
  end)

  after_each(function()
    log.set_output(prev)
    release_all()
  end)

  local function wait_logged(...) return wait_line(lines, ...) end

  it("refuses connections beyond max_connections with CONNECTFAIL naming the limit", function()
    local e = export("Conns", { max_connections = 3 })
    local open = {}
    finally(function()
      for _, c in ipairs(open) do c:close() end
      e:destroy()
    end)
    for i = 1, 3 do open[i] = connect_ok(e.service_port, "Conns") end
    local c = assert(wc.connect("127.0.0.1", e.service_port))
    c:send(enc(core.MSG_CONNECT, core.FLAG_META_ON_CONNECT, 0, JSON, '{"handshake": "hello", "object": "Conns"}'))
    local m = assert(c:recv())
    assert.are.equal(core.MSG_CONNECTFAIL, m.type)
    assert.matches("too many connections to 127.0.0.1:%d+ %(max_connections 3%)", json.decode(m.data))
    assert.is_true(c:wait_closed())
    c:close()
    assert.is_true(wait_logged("refusing connection from 127.0.0.1:", "max_connections 3"), table.concat(lines, "\n"))
    -- one closes: there is room again
    open[1]:close()
    table.remove(open, 1)
    local okc, attempts, last = false, 0, nil
    local deadline = uv.hrtime() + 10e9
    while not okc and uv.hrtime() < deadline do
      attempts = attempts + 1
      local c2 = assert(wc.connect("127.0.0.1", e.service_port))
      c2:send(enc(core.MSG_CONNECT, 0, 0, JSON, '{"handshake": "hello", "object": "Conns"}'))
      local r = c2:recv()
      okc = r ~= nil and r.type == core.MSG_CONNECTOK
      last = r and r.data
      if okc then open[#open + 1] = c2 else c2:close() end
      if not okc then wc.run_until(function() return false end, 0.05) end
    end
    assert.is_true(okc, attempts .. " attempts, last answer: " .. tostring(last))
  end)

  it("closes a connection whose message exceeds its exporter's max_message_size", function()
    local e = export("Small", { max_message_size = 1024 })
    finally(function() e:destroy() end)
    local c = connect_ok(e.service_port, "Small")
    local m, v = call(c, 1, "Small", "echo", '["' .. string.rep("x", 500) .. '"]')
    assert.are.equal(500, #v)
    c:send(enc(core.MSG_INVOKE, 0, 2, JSON, wc.invoke_json("Small", "echo", '["' .. string.rep("x", 2000) .. '"]')))
    assert.is_true(c:wait_closed())
    c:close()
    assert.is_true(wait_logged("closing connection from 127.0.0.1:", "limit 1024", "max_message_size"))
    still_serves(e.service_port, "Small")
    assert(m)
  end)

  it("closes a slow-loris connection after send_deadline, not one that completes its messages", function()
    local e = export("Loris", { send_deadline = 0.3 })
    finally(function() e:destroy() end)
    local good = connect_ok(e.service_port, "Loris")
    local slow = connect_ok(e.service_port, "Loris")
    local frame = enc(core.MSG_INVOKE, 0, 1, JSON, wc.invoke_json("Loris", "echo", '["x"]'))
    local t0 = uv.hrtime()
    slow:send(frame:sub(1, 10))
    -- the good one makes complete calls meanwhile, a bit apart
    for seq = 1, 4 do
      local _, v = call(good, seq, "Loris", "echo", '["ok"]')
      assert.are.equal("ok", v)
      wc.run_until(function() return false end, 0.1)
    end
    assert.is_true(slow:wait_closed(3))
    local took = (uv.hrtime() - t0) / 1e9
    assert.is_true(took >= 0.3 and took < 2.5, "closed after " .. took .. " s")
    assert.are.equal(0, #slow.inbox)
    slow:close()
    assert.is_false(good.closed)
    assert.is_true(wait_logged("closing connection from 127.0.0.1:", "send_deadline"))
    good:close()
  end)

  it("closes an idle connection after idle_timeout but not one waiting for a reply", function()
    local e = export("Idle", { idle_timeout = 0.3 })
    log.get("springrun.remoting.pyro.PyroDaemonHolder"):set_level("INFO") -- idle closes are INFO
    finally(function()
      log.get("springrun.remoting.pyro.PyroDaemonHolder"):set_level(nil)
      e:destroy()
    end)
    local idle = connect_ok(e.service_port, "Idle")
    local busy = connect_ok(e.service_port, "Idle")
    busy:send(enc(core.MSG_INVOKE, 0, 1, JSON, wc.invoke_json("Idle", "block", '["done"]')))
    local t0 = uv.hrtime()
    assert.is_true(idle:wait_closed(3))
    local took = (uv.hrtime() - t0) / 1e9
    assert.is_true(took >= 0.25 and took < 2.5, "closed after " .. took .. " s")
    idle:close()
    assert.is_true(wait_logged("closing connection from 127.0.0.1:", "idle_timeout"))
    wc.run_until(function() return false end, 0.6)
    assert.is_false(busy.closed)
    release_all()
    local m = assert(busy:recv())
    assert.are.equal("done", json.decode(m.data))
    busy:close()
  end)

  it("stops reading a connection owing max_queued_per_connection replies and serves it all later", function()
    local e = export("Owed", { max_queued_per_connection = 8 })
    finally(function() e:destroy() end)
    local c = connect_ok(e.service_port, "Owed")
    local frames = {}
    for seq = 1, 50 do
      frames[seq] = enc(core.MSG_INVOKE, 0, seq, JSON, wc.invoke_json("Owed", "block", "[" .. seq .. "]"))
    end
    c:send(table.concat(frames))
    wc.run_until(function() return #waiting >= 8 end, 5)
    wc.run_until(function() return false end, 0.3)
    assert.are.equal(8, #waiting) -- not read beyond the limit
    -- another connection is served meanwhile
    still_serves(e.service_port, "Owed")
    local got = {}
    assert.is_true(wc.run_until(function()
      release_all()
      while #c.inbox > 0 do
        local m = table.remove(c.inbox, 1)
        got[#got + 1] = json.decode(m.data)
      end
      return #got == 50
    end, 10))
    for i = 1, 50 do assert.are.equal(i, got[i]) end
    c:close()
  end)

  it("stops reading when the daemon has max_queued invocations queued and catches up", function()
    local e = export("Queued", { max_queued = 4 })
    log.get("springrun.remoting.pyro.PyroDaemonHolder"):set_level("DEBUG")
    finally(function()
      log.get("springrun.remoting.pyro.PyroDaemonHolder"):set_level(nil)
      e:destroy()
    end)
    local conns = {}
    for i = 1, 4 do conns[i] = connect_ok(e.service_port, "Queued") end
    -- the Lua thread is busy (blocked in a sleep) while 4 x 25 requests arrive
    local frames = {}
    for seq = 1, 25 do
      frames[seq] = enc(core.MSG_INVOKE, 0, seq, JSON, wc.invoke_json("Queued", "echo", "[" .. seq .. "]"))
    end
    local batch = table.concat(frames)
    for _, c in ipairs(conns) do c:send(batch) end
    uv.run("nowait") -- hand the writes to the kernel
    os.execute("sleep 0.3")
    local total = 0
    assert.is_true(wc.run_until(function()
      total = 0
      for _, c in ipairs(conns) do total = total + #c.inbox end
      return total == 100
    end, 10), "answered " .. total)
    for _, c in ipairs(conns) do
      for seq = 1, 25 do assert.are.equal(seq, json.decode(c.inbox[seq].data)) end
      c:close()
    end
    assert.is_true(wait_logged("pausing reads from 127.0.0.1:", "(max_queued)"))
  end)

  it("applies the first exporter's limits to its address and refuses a conflicting one", function()
    local e = export("First", { max_connections = 10, max_depth = 20 })
    finally(function() e:destroy() end)
    local same = springrun.PyroServiceExporter{ service_name = "Second", service = setmetatable({}, Service),
      service_host = "127.0.0.1", service_port = e.service_port, max_connections = 20 }
    local ok, err = pcall(same.after_properties_set, same)
    assert.is_false(ok)
    assert.matches("max_connections = 20 conflicts with 10", tostring(err))
    assert.is_false(same:is_exported())
    local agree = springrun.PyroServiceExporter{ service_name = "Third", service = setmetatable({}, Service),
      service_host = "127.0.0.1", service_port = e.service_port, max_connections = 10 }
    agree:after_properties_set()
    agree:destroy()
  end)

  it("raises on a bad limit value naming the property", function()
    for _, case in ipairs({ { max_connections = 0 }, { max_message_size = "big" },
                            { send_deadline = -1 }, { idle_timeout = "x" }, { max_depth = 1.5 } }) do
      local name = next(case)
      local ex = springrun.PyroServiceExporter(setmetatable({
        service_name = "Bad", service = setmetatable({}, Service), service_host = "127.0.0.1",
        service_port = 0 }, nil))
      ex[name] = case[name]
      local ok, err = pcall(ex.after_properties_set, ex)
      assert.is_false(ok)
      assert.matches(name, tostring(err))
    end
  end)
end)
