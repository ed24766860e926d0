-- The security and limit edge, probed with what the other specs' clients
-- never send (issue 20): raw CONNECTs to an exporter with a handshake secret
-- that carry no handshake key or one of the wrong type, hundreds of wrong
-- secrets (random ones, and ones sharing a prefix, a length or the first
-- bytes of their SHA-256 digest with the real one), compressed requests that
-- inflate past max_message_size and past the 64 KiB pre-handshake cap, and
-- the byte budgets of requests waiting for the Lua thread and of replies
-- waiting for a client that does not read, and
-- the default limits read back from a daemon started with none set. Every
-- daemon here is served by this process; clients are real sockets
-- (helpers.wireclient); Python computes the zlib streams and the digests.
local core = require "springrun.core"
local uv = require "luv"
local json = require "springrun.json"
local wc = require "helpers.wireclient"
local proc = require "helpers.proc"
local springrun = require "springrun"
local log = require "springrun.log"

local JSON, SERPENT = core.SER_JSON, core.SER_SERPENT
local enc = core.wire_encode
local HDR = "# serpent utf-8 python3.2\n"
local REFUSED = "authentication failed: wrong or missing handshake secret"
local SECRET = "open sesame"
local PYTHON = "/usr/bin/python3"

local Service = {}
Service.__index = Service
function Service:echo(x) return x end
function Service:big(n) return string.rep("b", n) end

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

-- Runs a Python snippet with `input` on stdin; returns its stdout (bytes).
local function python(code, input)
  local inp = os.tmpname()
  local f = assert(io.open(inp, "wb"))
  f:write(input or "")
  f:close()
  local p = assert(io.popen(PYTHON .. " -c '" .. code .. "' < " .. inp, "r"))
  local out = p:read("a")
  local ok = p:close()
  os.remove(inp)
  assert(ok, "python failed: " .. code)
  return out
end

local function deflate(s)
  return python("import sys, zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read(), 9))", s)
end

-- A JSON string literal of s (ASCII in, \u escapes for control bytes).
local function jstr(s)
  return '"' .. s:gsub('[%c"\\]', function(ch) return string.format("\\u%04x", ch:byte()) end) .. '"'
end

-- Sends one CONNECT with payload (serializer ser) on a new connection;
-- returns the answer's type and its text (CONNECTOK/CONNECTFAIL), or nil
-- when the daemon closed without answering. The connection is closed.
local function connect_with(port, ser, payload, flags)
  local c = assert(wc.connect("127.0.0.1", port))
  c:send(enc(core.MSG_CONNECT, flags or 0, 0, ser, payload))
  local m, why = c:recv()
  local closed = m == nil or m.type ~= core.MSG_CONNECTOK and c:wait_closed()
  c:close()
  if m == nil then return nil, why end
  local text = m.data
  if m.type == core.MSG_CONNECTFAIL or m.type == core.MSG_CONNECTOK then
    text = ser == SERPENT and core.serpent_decode(m.data) or json.decode(m.data)
  end
  if m.type == core.MSG_CONNECTFAIL then assert.is_true(closed, "CONNECTFAIL without a close") end
  return m.type, text
end

local function json_connect(hs_literal, object)
  return string.format('{"handshake": %s, "object": "%s"}', hs_literal, object)
end

local function serpent_connect(hs_literal, object)
  return string.format("%s{'handshake':%s,'object':'%s'}", HDR, hs_literal, object)
end

-- Expects CONNECTFAIL REFUSED for the JSON payload, and the daemon to still
-- accept the real secret afterwards.
local function refused(port, ser, payload, what)
  local t, text = connect_with(port, ser, payload)
  assert.are.equal(core.MSG_CONNECTFAIL, t, what .. ": " .. tostring(text))
  return text
end

-- A wireclient connection past its JSON handshake with object.
local function connect_ok(port, object)
  local c = assert(wc.connect("127.0.0.1", port))
  c:send(enc(core.MSG_CONNECT, 0, 0, JSON, json_connect('"hello"', object)))
  assert.are.equal(core.MSG_CONNECTOK, assert(c:recv()).type)
  return c
end

describe("springrun edge: the handshake secret against raw CONNECTs #unit #net", function()
  local lines, prev, e, port
  local NAME = "Guarded"

  setup(function()
    lines = {}
    prev = log.set_output(function(line) lines[#lines + 1] = line end)
    e = export(NAME, { handshake_secret = SECRET })
    port = e.service_port
  end)

  teardown(function()
    e:destroy()
    log.set_output(prev)
  end)

  local function accepted(ser, payload)
    local t, text = connect_with(port, ser, payload)
    assert.are.equal(core.MSG_CONNECTOK, t, tostring(text))
  end

  it("accepts the secret itself, in JSON and serpent (the refusals below are not blanket ones)", function()
    accepted(JSON, json_connect(jstr(SECRET), NAME))
    accepted(SERPENT, serpent_connect("'" .. SECRET .. "'", NAME))
  end)

  it("refuses a CONNECT with no handshake key, in JSON and serpent", function()
    assert.are.equal(REFUSED, refused(port, JSON, '{"object": "' .. NAME .. '"}', "json, no key"))
    assert.are.equal(REFUSED, refused(port, SERPENT, HDR .. "{'object':'" .. NAME .. "'}", "serpent, no key"))
    assert.are.equal(REFUSED, refused(port, JSON, "{}", "json, empty map"))
    -- with the metadata flag too (what a springrun proxy sends)
    local t, text = connect_with(port, JSON, '{"object": "' .. NAME .. '"}', core.FLAG_META_ON_CONNECT)
    assert.are.equal(core.MSG_CONNECTFAIL, t)
    assert.are.equal(REFUSED, text)
    accepted(JSON, json_connect(jstr(SECRET), NAME))
  end)

  it("refuses a handshake of the wrong type: null, number, bool, list, dict, tuple", function()
    local jcases = { "null", "7", "0", "1.5", "true", "false", "[]", jstr(SECRET):gsub("^", "[") .. "]",
                     '{"secret": ' .. jstr(SECRET) .. "}", '{"handshake": ' .. jstr(SECRET) .. "}" }
    for _, lit in ipairs(jcases) do
      assert.are.equal(REFUSED, refused(port, JSON, json_connect(lit, NAME), "json " .. lit))
    end
    local scases = { "None", "7", "True", "('" .. SECRET .. "',)", "['" .. SECRET .. "']",
                     "{'" .. SECRET .. "'}", "{'k':'" .. SECRET .. "'}", "b'" .. SECRET .. "'" }
    for _, lit in ipairs(scases) do
      local t, text = connect_with(port, SERPENT, serpent_connect(lit, NAME))
      assert.are.equal(core.MSG_CONNECTFAIL, t, "serpent " .. lit .. ": " .. tostring(text))
    end
    -- the right string first, then the same key again with another type:
    -- the last one counts, as in Python's dict
    for _, lit in ipairs({ "null", "7", "[]", "{}" }) do
      local payload = string.format('{"handshake": %s, "object": "%s", "handshake": %s}',
        jstr(SECRET), NAME, lit)
      assert.are.equal(REFUSED, refused(port, JSON, payload, "json duplicate " .. lit))
    end
    for _, lit in ipairs({ "None", "7", "()" }) do
      local payload = string.format("%s{'handshake':'%s','object':'%s','handshake':%s}", HDR, SECRET, NAME, lit)
      local t = connect_with(port, SERPENT, payload)
      assert.are.equal(core.MSG_CONNECTFAIL, t, "serpent duplicate " .. lit)
    end
    accepted(JSON, json_connect(jstr(SECRET), NAME))
  end)

  it("refuses a 64 KiB handshake string, and closes one past the 64 KiB pre-handshake cap", function()
    local long = string.rep("o", 64 * 1024 - 100)
    assert.are.equal(REFUSED, refused(port, JSON, json_connect(jstr(long), NAME), "64 KiB json"))
    local t = connect_with(port, SERPENT, serpent_connect("'" .. long .. "'", NAME))
    assert.are.equal(core.MSG_CONNECTFAIL, t)
    -- the secret followed by 64 KiB
    assert.are.equal(REFUSED, refused(port, JSON, json_connect(jstr(SECRET .. long), NAME), "secret .. 64 KiB"))
    -- beyond the cap nothing is parsed: the connection is closed unanswered
    local over = string.rep("o", 64 * 1024 + 10)
    local t2, why = connect_with(port, JSON, json_connect(jstr(over), NAME))
    assert.is_nil(t2)
    assert.are.equal("closed", why)
    assert.is_true(wc.run_until(function()
      for _, l in ipairs(lines) do
        if l:find("(before the handshake)", 1, true) then return true end
      end
      return false
    end, 5))
    accepted(JSON, json_connect(jstr(SECRET), NAME))
  end)

  it("refuses secrets sharing a prefix, a suffix or the length of the real one", function()
    local near = {
      "", "o", "open", "open sesam", "open sesame!", "open sesame ", " open sesame",
      "open sesamf", "open sesamE", "Open sesame", "xpen sesame", "open-sesame",
      "open\0sesame", "open sesame\0", "\0open sesame", "open sesame" .. string.rep("e", 100),
      "open sesame\n", "open sesam\u{e9}", "hello", "opensesame", "epen sesamo",
    }
    for _, s in ipairs(near) do
      assert.are.equal(REFUSED, refused(port, JSON, json_connect(jstr(s), NAME), string.format("%q", s)))
    end
    for _, s in ipairs({ "open sesam", "open sesame!", "open sesamf", "Open sesame" }) do
      local t = connect_with(port, SERPENT, serpent_connect("'" .. s .. "'", NAME))
      assert.are.equal(core.MSG_CONNECTFAIL, t, s)
    end
  end)

  it("refuses secrets whose SHA-256 digests share their first bytes with the real one's", function()
    -- the daemon compares digests: a comparison cut short would let these in
    local out = python([[
import hashlib, sys
real = hashlib.sha256(sys.stdin.buffer.read()).digest()
found = {1: [], 2: []}
i = 0
while len(found[1]) < 8 or len(found[2]) < 2:
    s = b"wrong-%d" % i
    d = hashlib.sha256(s).digest()
    if d[:2] == real[:2] and len(found[2]) < 2: found[2].append(s)
    elif d[0] == real[0] and len(found[1]) < 8: found[1].append(s)
    i += 1
print("\n".join(x.decode() for x in found[1] + found[2]))
]], SECRET)
    local n = 0
    for s in out:gmatch("[^\n]+") do
      n = n + 1
      assert.are.equal(REFUSED, refused(port, JSON, json_connect(jstr(s), NAME), s))
    end
    assert.are.equal(10, n)
  end)

  it("refuses a few hundred random wrong secrets and keeps serving", function()
    local seed = os.time()
    math.randomseed(seed)
    for i = 1, 300 do
      local len = math.random(0, 40)
      if i % 3 == 0 then len = #SECRET end
      local b = {}
      for k = 1, len do b[k] = string.char(math.random(32, 126)) end
      local s = table.concat(b)
      if s ~= SECRET then
        local ser = i % 2 == 0 and JSON or SERPENT
        local payload = ser == JSON and json_connect(jstr(s), NAME)
          or serpent_connect("'" .. s:gsub("[\\']", "\\%0") .. "'", NAME)
        local t, text = connect_with(port, ser, payload)
        assert.are.equal(core.MSG_CONNECTFAIL, t, string.format("seed %d, %q: %s", seed, s, tostring(text)))
      end
    end
    accepted(SERPENT, serpent_connect("'" .. SECRET .. "'", NAME))
  end)
end)

describe("springrun edge: compressed requests and the limits #unit #net", function()
  local lines, prev

  before_each(function()
    lines = {}
    prev = log.set_output(function(line) lines[#lines + 1] = line end)
  end)

  after_each(function() log.set_output(prev) end)

  local function logged(...) return wc.wait_line(lines, ...) end

  it("inflates a compressed request within max_message_size and refuses one inflating past it", function()
    local e = export("Squeeze", { max_message_size = 4096 })
    finally(function() e:destroy() end)
    local c = connect_ok(e.service_port, "Squeeze")
    -- 3,000 bytes inflated: served
    local small = string.rep("z", 2900)
    c:send(enc(core.MSG_INVOKE, core.FLAG_COMPRESSED, 1, JSON,
      deflate(wc.invoke_json("Squeeze", "echo", '["' .. small .. '"]'))))
    local m = assert(c:recv())
    assert.are.equal(core.MSG_RESULT, m.type)
    assert.are.equal(small, json.decode(m.data))
    -- 100 KB inflated from a few hundred bytes on the wire: ProtocolError
    -- naming the limit, the connection stays
    local big = deflate(wc.invoke_json("Squeeze", "echo", '["' .. string.rep("z", 100000) .. '"]'))
    assert.is_true(#big < 4096)
    c:send(enc(core.MSG_INVOKE, core.FLAG_COMPRESSED, 2, JSON, big))
    local r = assert(c:recv())
    assert.are.equal(2, r.seq)
    assert.are_not.equal(0, r.flags & core.FLAG_EXCEPTION)
    assert.matches("ProtocolError", r.data)
    assert.matches("cannot inflate the request: inflate: payload larger than 4096 bytes", r.data, 1, true)
    assert.is_true(logged("request from 127.0.0.1:", "inflate: payload larger than 4096 bytes"),
      table.concat(lines, "\n"))
    c:send(enc(core.MSG_INVOKE, 0, 3, JSON, wc.invoke_json("Squeeze", "echo", '["same"]')))
    assert.are.equal("same", json.decode(assert(c:recv()).data))
    c:close()
    -- the daemon still serves
    local c2 = connect_ok(e.service_port, "Squeeze")
    c2:send(enc(core.MSG_INVOKE, 0, 1, JSON, wc.invoke_json("Squeeze", "echo", '["still"]')))
    assert.are.equal("still", json.decode(assert(c2:recv()).data))
    c2:close()
  end)

  it("refuses a compressed CONNECT inflating past the 64 KiB pre-handshake cap, not one within it", function()
    local cleanup = proc.cleanups(finally)
    local e = export("Cap", {})
    cleanup(function() e:destroy() end)
    local port = e.service_port
    local ok = deflate(json_connect('"hello"', "Cap"))
    local t = connect_with(port, JSON, ok, core.FLAG_COMPRESSED)
    assert.are.equal(core.MSG_CONNECTOK, t)
    -- a padding key makes the CONNECT 200 KB once inflated
    local bomb = deflate(string.format('{"handshake": "hello", "pad": "%s", "object": "Cap"}',
      string.rep("p", 200 * 1024)))
    assert.is_true(#bomb < 64 * 1024)
    local t2, text = connect_with(port, JSON, bomb, core.FLAG_COMPRESSED)
    assert.are.equal(core.MSG_CONNECTFAIL, t2, tostring(text))
    assert.are.equal("inflate: payload larger than 65536 bytes", text)
    assert.is_true(logged("refused", "inflate: payload larger than 65536 bytes"), table.concat(lines, "\n"))
    -- with a handshake secret the cap holds as well (nothing is compared)
    local g = export("CapGuarded", { handshake_secret = SECRET })
    cleanup(function() g:destroy() end)
    local bomb2 = deflate(string.format('{"handshake": %s, "pad": "%s", "object": "CapGuarded"}',
      jstr(SECRET), string.rep("p", 200 * 1024)))
    local t3, text3 = connect_with(g.service_port, JSON, bomb2, core.FLAG_COMPRESSED)
    assert.are.equal(core.MSG_CONNECTFAIL, t3)
    assert.are.equal("inflate: payload larger than 65536 bytes", text3)
    local t4 = connect_with(g.service_port, JSON, deflate(json_connect(jstr(SECRET), "CapGuarded")),
      core.FLAG_COMPRESSED)
    assert.are.equal(core.MSG_CONNECTOK, t4)
  end)

  it("reads back the README's default limits from a daemon started with none set", function()
    local cleanup = proc.cleanups(finally)
    local DEFAULTS = {
      max_message_size = 64 * 1024 * 1024,
      max_connections = 4096,
      send_deadline = 30,
      idle_timeout = false,
      max_queued_per_connection = 1024,
      max_queued = 16384,
      max_depth = 200,
      max_elements = 1000000,
      handshake_timeout = 10,
      call_timeout = false,
      max_queued_bytes = 64 * 1024 * 1024,
      max_reply_bytes_per_connection = 8 * 1024 * 1024,
      max_reply_bytes = 256 * 1024 * 1024,
      max_oneway = 8192,
    }
    local id, bound = assert(core.daemon_listen("127.0.0.1", 0))
    cleanup(function() core.daemon_unlisten(id) end)
    assert.is_true(bound > 0)
    assert.are.same(DEFAULTS, core.daemon_limits(id))
    -- an exporter that sets none
    local plain = export("Unset", {})
    cleanup(function() plain:destroy() end)
    assert.are.same(DEFAULTS, core.daemon_limits(rawget(plain, "_export").listener.id))
    -- and what an exporter sets is what its daemon runs with
    local e = export("Set", { max_connections = 7, send_deadline = 1.5, idle_timeout = 2,
      max_queued_per_connection = 8, max_queued = 9, max_depth = 10, max_elements = 11,
      max_message_size = 12345, handshake_timeout = 3, call_timeout = 4,
      max_queued_bytes = 4096, max_reply_bytes_per_connection = 5000, max_reply_bytes = 6000,
      max_oneway = 13 })
    cleanup(function() e:destroy() end)
    assert.are.same({
      max_message_size = 12345, max_connections = 7, send_deadline = 1.5, idle_timeout = 2,
      max_queued_per_connection = 8, max_queued = 9, max_depth = 10, max_elements = 11,
      handshake_timeout = 3, call_timeout = 4, max_queued_bytes = 4096,
      max_reply_bytes_per_connection = 5000, max_reply_bytes = 6000, max_oneway = 13,
    }, core.daemon_limits(rawget(e, "_export").listener.id))
    local v, err = core.daemon_limits(id + 1000)
    assert.is_nil(v)
    assert.are.equal("no such listener", err)
  end)
end)

describe("springrun edge: the byte budgets #unit #net", function()
  local lines, prev
  local dlog = log.get("springrun.remoting.pyro.PyroDaemonHolder")

  before_each(function()
    lines = {}
    prev = log.set_output(function(line) lines[#lines + 1] = line end)
    dlog:set_level("DEBUG") -- the pause lines are DEBUG
  end)

  after_each(function()
    dlog:set_level(nil)
    log.set_output(prev)
  end)

  local function logged(pat) return wc.wait_line(lines, pat) end

  it("stops reading a listener past max_queued_bytes of requests waiting, then serves them all", function()
    local cleanup = proc.cleanups(finally)
    local e = export("QBytes", { max_queued_bytes = 4096 })
    cleanup(function() e:destroy() end)
    local c = connect_ok(e.service_port, "QBytes")
    cleanup(function() c:close() end)
    local frames = {}
    for seq = 1, 8 do -- 8 requests of 3 KB: 2 reach the budget
      frames[seq] = enc(core.MSG_INVOKE, 0, seq, JSON,
        wc.invoke_json("QBytes", "echo", '["' .. string.rep(tostring(seq), 3000) .. '"]'))
    end
    c:send(table.concat(frames))
    uv.run("nowait") -- written; then this (the Lua) thread is busy: the daemon
    uv.sleep(300)    -- thread reads and queues, up to the budget
    for seq = 1, 8 do
      local m = assert(c:recv())
      assert.are.equal(seq, m.seq)
      assert.are.equal(string.rep(tostring(seq), 3000), json.decode(m.data))
    end
    assert.is_true(logged("bytes queued (max_queued_bytes)"), table.concat(lines, "\n"))
  end)

  it("stops reading a client that does not read past max_reply_bytes_per_connection", function()
    local cleanup = proc.cleanups(finally)
    local e = export("RBytes", { max_reply_bytes_per_connection = 65536 })
    cleanup(function() e:destroy() end)
    local c = connect_ok(e.service_port, "RBytes")
    cleanup(function() c:close() end)
    c.tcp:read_stop() -- reads nothing: the replies queue in the server
    local frames = {}
    for seq = 1, 100 do -- 100 x 64 KB of replies: more than the socket takes
      frames[seq] = enc(core.MSG_INVOKE, 0, seq, JSON, wc.invoke_json("RBytes", "big", "[65536]"))
    end
    c:send(table.concat(frames))
    wc.run_until(function() return false end, 0.5) -- answered, not taken
    c:send(enc(core.MSG_INVOKE, 0, 101, JSON, wc.invoke_json("RBytes", "echo", '["last"]')))
    assert.is_true(logged("bytes queued (max_reply_bytes_per_connection)"), table.concat(lines, "\n"))
    -- read again: every reply arrives, in order
    local got = {}
    c.tcp:read_start(function(err, data)
      if err or not data then return end
      c.framer:feed(data)
      for m in function() return c.framer:next() end do got[#got + 1] = m end
    end)
    assert.is_true(wc.run_until(function() return #got == 101 end, 10), #got .. " replies")
    for i, m in ipairs(got) do assert.are.equal(i, m.seq) end
    assert.are.equal("last", json.decode(got[101].data))
  end)
end)
