-- Faults against a springrun server process (spec/fixtures/fault_server.lua):
-- clients killed mid-message, a server killed mid-call, a client that never
-- reads its replies, 1,000 concurrent connections; after each the server
-- still answers (or, killed, its caller gets a clear error in time).
local core = require "springrun.core"
local json = require "springrun.json"
local uv = require "luv"
local wc = require "helpers.wireclient"
local proc = require "helpers.proc"
local springrun = require "springrun"

local JSON = core.SER_JSON
local enc = core.wire_encode
local FIXTURES = proc.root .. "/spec/fixtures"
local fs = require "helpers.fault_server"
local poll_until, start_server, connect_ok, still_serves = fs.poll_until, fs.start, fs.connect_ok, fs.still_serves

local function rss_kb(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

describe("springrun faults #net", function()
  it("keeps serving when clients are killed mid-message and with calls in flight", function()
    local cleanup = proc.cleanups(finally)
    local server, port = start_server(cleanup)
    for _ = 1, 3 do
      local c = proc.spawn({ proc.bin, FIXTURES .. "/half_client.lua", tostring(port) })
      cleanup(function() proc.stop(c) end)
      assert.is_true(poll_until(function() return c:stdout():find("SENT") ~= nil or c:status() ~= nil end, 15),
        c:stderr())
      assert.truthy(c:stdout():find("SENT"), c:stderr())
      proc.kill(c, "sigkill")
      assert.is_not_nil(proc.wait_exit(c, 5))
    end
    still_serves(port)
    assert.is_nil(server:status())
  end)

  it("gives the caller a clear error within its timeout when the server is killed mid-call", function()
    local cleanup = proc.cleanups(finally)
    local marker = proc.tmppath(cleanup)
    local server, port = start_server(cleanup, nil, { FAULT_MARKER = marker })
    -- kills the server as soon as the call has started there
    local killer = proc.spawn({ "sh", "-c", string.format(
      "while [ ! -e %s ]; do sleep 0.01; done; kill -9 %d", proc.shquote(marker), server.pid) })
    cleanup(function() proc.stop(killer) end)
    local svc = springrun.proxy(string.format("PYRO:Faults@127.0.0.1:%d", port), { timeout = 8 })
    local t0 = uv.hrtime()
    local ok, err = pcall(svc.slow, svc, 20000, "never")
    local took = (uv.hrtime() - t0) / 1e9
    assert.is_false(ok)
    assert.is_true(took < 8, "the error took " .. took .. " s")
    assert.are.equal("closed", err.kind, tostring(err))
    assert.matches("closed", tostring(err))
    assert.is_not_nil(proc.wait_exit(server, 5))
    svc:destroy()
  end)

  it("bounds the memory of a client that never reads its replies and serves others meanwhile", function()
    local cleanup = proc.cleanups(finally)
    local server, port = start_server(cleanup, "max_queued_per_connection=16")
    still_serves(port)
    local before = rss_kb(server.pid)
    -- a raw client that stops reading after the handshake
    local tcp = uv.new_tcp()
    cleanup(function() if not tcp:is_closing() then tcp:close() end uv.run("nowait") end)
    local connected, handshaken = false, false
    tcp:connect("127.0.0.1", port, function(err) assert(not err, err) connected = true end)
    assert.is_true(wc.run_until(function() return connected end, 5))
    tcp:write(enc(core.MSG_CONNECT, 0, 0, JSON, '{"handshake": "hello", "object": "Faults"}'))
    tcp:read_start(function() handshaken = true tcp:read_stop() end)
    assert.is_true(wc.run_until(function() return handshaken end, 5))
    local frames = {}
    for seq = 1, 3000 do
      frames[#frames + 1] = enc(core.MSG_INVOKE, 0, seq % 65536, JSON, wc.invoke_json("Faults", "big", "[65536]"))
    end
    tcp:write(table.concat(frames)) -- 3000 x 64 KiB = 192 MiB of replies if nothing stopped it
    wc.run_until(function() return false end, 1.0)
    still_serves(port)
    local after = rss_kb(server.pid)
    assert.is_true(after - before < 40 * 1024,
      string.format("server RSS grew from %d to %d KiB", before, after))
  end)

  it("answers 1,000 concurrent connections each making calls, all correctly", function()
    local cleanup = proc.cleanups(finally)
    local _, port = start_server(cleanup)
    local c = proc.spawn({ "sh", "-c", "ulimit -n 4096 && exec " .. proc.shquote(proc.bin) .. " "
      .. proc.shquote(FIXTURES .. "/many_clients.lua") .. " " .. port .. " 1000 5 90" })
    cleanup(function() proc.stop(c) end)
    local code = proc.wait_exit(c, 120)
    assert.are.equal(0, code, c:stdout() .. c:stderr())
    assert.matches("ANSWERED 5000 WRONG 0 FAILED 0", c:stdout())
    still_serves(port)
  end)
end)
