-- Spec helper: a real etcd (Debian etcd-server) on free loopback ports with
-- a temporary data directory.
--
--   local etcd_server = require "helpers.etcd"
--   local e = etcd_server.start(cleanup)  -- cleanup: a proc.cleanups adder;
--                                          -- stops it by pid, removes the dir
--   e.url ("http://127.0.0.1:<port>"), e.port, e.proc
--   etcd_server.new(cleanup) -- the same, ports picked but not started yet
--                               (start it with etcd_server.restart(e))
--   etcd_server.stop(e)      -- SIGTERM (then SIGKILL), waits for the exit
--   etcd_server.restart(e)   -- the same ports and data, after stop
-- Raises when the etcd binary is missing (apt-get install etcd-server).
local proc = require "helpers.proc"
local http = require "springrun.http"

local M = {}

M.bin = os.getenv("SPRINGRUN_ETCD") or "/usr/bin/etcd"

local function launch(e)
  local peer = "http://127.0.0.1:" .. e.peer_port
  e.proc = proc.spawn({ M.bin, "--name", "springrun-spec", "--data-dir", e.dir,
    "--listen-client-urls", e.url, "--advertise-client-urls", e.url,
    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
    "--initial-cluster", "springrun-spec=" .. peer, "--log-level", "error" },
    { env = { ETCD_UNSUPPORTED_ARCH = "" } })
  assert(proc.wait_port("127.0.0.1", e.port, 30, e.proc))
  -- the port opens a moment before etcd serves requests
  local deadline = os.time() + 30
  while true do
    local ok, r = pcall(http.request, { method = "POST", url = e.url .. "/v3/kv/range",
      body = '{"key":"AA=="}', timeout = 2 })
    if ok and r.status == 200 then break end
    if os.time() > deadline then error("etcd did not answer at " .. e.url .. ": " .. e.proc:stderr()) end
    proc.poll_step(50)
  end
end

function M.new(cleanup)
  local f = io.open(M.bin, "r")
  if not f then error("etcd not found at " .. M.bin .. " (apt-get install etcd-server)") end
  f:close()
  local e = { port = proc.free_port(), peer_port = proc.free_port() }
  e.url = "http://127.0.0.1:" .. e.port
  e.dir = os.tmpname()
  os.remove(e.dir)
  cleanup(function()
    if e.proc then proc.stop(e.proc) end
    os.execute("rm -rf " .. proc.shquote(e.dir))
  end)
  return e
end

function M.start(cleanup)
  local e = M.new(cleanup)
  launch(e)
  return e
end

function M.stop(e)
  proc.stop(e.proc)
  assert(proc.wait_port_closed("127.0.0.1", e.port, 10))
end

function M.restart(e)
  launch(e)
end

return M
