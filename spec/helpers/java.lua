-- Spec helpers for the Java Hessian peers (spec/java/): compile them once
-- per busted process with javac into a fresh temporary directory (never a
-- fixed path another run could share; removed when the process exits,
-- through a collected sentinel), start them
-- by pid on a free port, and a minimal fixed HTTP/1.0 POST over a plain
-- luv TCP socket (test-only: springrun.http is the product's HTTP client).
--
--   local java = require "helpers.java"
--   local url, p = java.server(finally)       -- "http://127.0.0.1:N/test"
--   local status, body = java.post(port, "/test", bytes)
local uv = require "luv"
local proc = require "helpers.proc"

local M = {}

M.JAR = "/usr/share/java/hessian.jar"
M.OPENS = "--add-opens=java.base/java.lang=ALL-UNNAMED"
local classes
M.CP = nil

-- removes the class directory when the Lua state closes (busted exits)
local sentinel = setmetatable({}, { __gc = function()
  if classes then os.execute("rm -rf " .. proc.shquote(classes)) end
end })
M._sentinel = sentinel

function M.compile()
  if classes then return end
  assert(io.open(M.JAR, "rb"), "Caucho Hessian is missing: apt-get install libhessian-java"):close()
  local dir = assert(io.popen("mktemp -d /tmp/springrun-java.XXXXXX")):read("l")
  assert(dir and dir ~= "", "mktemp -d failed")
  local cmd = string.format("javac -nowarn -cp %s -d %s %s/spec/java/*.java 2>&1",
    proc.shquote(M.JAR), proc.shquote(dir), proc.shquote(proc.root))
  local p = io.popen(cmd)
  local out = p:read("a")
  if not p:close() then
    os.execute("rm -rf " .. proc.shquote(dir))
    error("javac failed (apt-get install default-jdk-headless):\n" .. out)
  end
  classes = dir
  M.CP = classes .. ":" .. M.JAR
end

-- Starts HessianTestServer on a free port; returns port, process. The
-- caller stops it (proc.stop) in finally.
function M.start_server()
  M.compile()
  local port = proc.free_port()
  -- TCP_NODELAY (as servlet containers set): otherwise each response body
  -- waits for the client's delayed ACK of its head
  local p = proc.spawn({ "java", "-Dsun.net.httpserver.nodelay=true", M.OPENS, "-cp", M.CP,
    "HessianTestServer", tostring(port) })
  assert(proc.wait_port("127.0.0.1", port, 30, p), "Java server did not start: " .. p:stderr())
  return port, p
end

-- Runs HessianTestClient against url; returns its stdout, stderr, status.
function M.run_client(url, h2)
  M.compile()
  local p = proc.spawn({ "java", M.OPENS, "-cp", M.CP, "HessianTestClient", url, h2 and "h2" or "h1" })
  local code = proc.wait_exit(p, 60)
  return p:stdout(), p:stderr(), code
end

-- POSTs body to 127.0.0.1:port/path as HTTP/1.0 and reads to EOF.
-- Returns status (number), response body.
function M.post(port, path, body)
  local tcp = uv.new_tcp()
  local chunks, done, failure = {}, false, nil
  local req = table.concat({
    "POST " .. path .. " HTTP/1.0",
    "Host: 127.0.0.1:" .. port,
    "Content-Type: x-application/hessian",
    "Content-Length: " .. #body,
    "", "" }, "\r\n") .. body
  tcp:connect("127.0.0.1", port, function(err)
    if err then failure, done = err, true return end
    tcp:write(req)
    tcp:read_start(function(rerr, data)
      if rerr then failure, done = rerr, true
      elseif data then chunks[#chunks + 1] = data
      else done = true end
    end)
  end)
  local deadline = uv.now() + 30000
  while not done and uv.now() < deadline do
    uv.run("once")
    uv.update_time()
  end
  if not tcp:is_closing() then tcp:close() end
  assert(done, "HTTP POST timed out")
  assert(not failure, tostring(failure))
  local resp = table.concat(chunks)
  local head, rest = resp:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no HTTP head in: " .. resp:sub(1, 200))
  return tonumber(head:match("^HTTP/1%.%d (%d+)")), rest
end

return M
