-- springrun.http against a real HTTP server (spec/fixtures/http_server.py,
-- Python's http.server with threads, on a port it picks and prints).
local proc = require "helpers.proc"
local certs = require "helpers.certs"
local readme = require "helpers.readme"
local http = require "springrun.http"
local json = require "springrun.json"
local runtime = require "springrun.runtime"
local uv = require "luv"

local SERVER = proc.root .. "/spec/fixtures/http_server.py"

-- Starts the fixture server (stopped by cleanup); returns its base URL.
local function start_server(cleanup, ...)
  local argv = { proc.python, SERVER, ... }
  local p = proc.spawn(argv)
  cleanup(function() proc.stop(p) end)
  local deadline = uv.hrtime() + 10e9
  while true do
    local port = p:stdout():match("PORT (%d+)")
    if port then return tonumber(port), p end
    if p:status() then error("http_server.py exited: " .. p:stderr()) end
    if uv.hrtime() > deadline then error("http_server.py did not start: " .. p:stderr()) end
    proc.poll_step(10)
  end
end

-- Turns the loop until pred() holds (at most `seconds`); returns pred().
local function run_until(pred, seconds)
  local deadline = uv.hrtime() + (seconds or 10) * 1e9
  local t = uv.new_timer()
  t:start(50, 50, function() end) -- wakes the loop to check the deadline
  while not pred() and uv.hrtime() < deadline do uv.run("once") end
  t:stop()
  t:close()
  return pred()
end

local function raises(fn)
  local ok, e = pcall(fn)
  assert.is_false(ok, "expected an error")
  return e
end

describe("springrun.http #net", function()
  it("GETs a response with status, headers (lower case, repeats joined) and body", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local r = http.request { url = "http://127.0.0.1:" .. port .. "/hello" }
    assert.equal(200, r.status)
    assert.equal("hello", r.body)
    assert.equal("text/plain", r.headers["content-type"])
    assert.equal("5", r.headers["content-length"])
    assert.equal("a, b", r.headers["x-twice"])
  end)

  it("POSTs and PUTs a body with headers given as a map or as lines", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local url = "http://127.0.0.1:" .. port .. "/echo"
    local body = string.rep("{\"k\": \"v\"}", 300) -- past curl's 1 KiB Expect: 100-continue threshold
    local r = http.request { method = "POST", url = url, body = body,
      headers = { ["Content-Type"] = "application/json", ["X-Token"] = "t1" } }
    assert.equal(200, r.status)
    local echo = json.decode(r.body)
    assert.same({ method = "POST", body = body, content_type = "application/json", x_token = "t1" }, echo)
    r = http.request { method = "PUT", url = url, body = "x=1", headers = { "X-Token: t2" } }
    echo = json.decode(r.body)
    assert.equal("PUT", echo.method)
    assert.equal("x=1", echo.body)
    assert.equal("t2", echo.x_token)
  end)

  it("returns 404 and 500 as responses, not errors", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    assert.equal(404, http.request { url = "http://127.0.0.1:" .. port .. "/nothing" }.status)
    assert.equal(500, http.request { url = "http://127.0.0.1:" .. port .. "/status?code=500" }.status)
  end)

  it("reuses one connection for consecutive requests (keep-alive)", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    for _ = 1, 5 do
      assert.equal("hello", http.request { url = "http://127.0.0.1:" .. port .. "/hello" }.body)
    end
    assert.equal("1", http.request { url = "http://127.0.0.1:" .. port .. "/conns" }.body)
  end)

  it("keeps its connections from processes started while they are cached", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    assert.equal("hello", http.request { url = "http://127.0.0.1:" .. port .. "/hello" }.body)
    -- the keep-alive connection now sits in curl's cache; a child started
    -- now must not inherit it (the server would never see it close)
    local child = proc.spawn { "sleep", "30" }
    cleanup(function() proc.stop(child) end)
    local out = proc.run("ss -tnp state established dst 127.0.0.1:" .. port)
    local holders = {}
    for pid in out:gmatch("pid=(%d+)") do holders[tonumber(pid)] = true end
    assert.same({ [uv.os_getpid()] = true }, holders, out)
  end)

  it("raises kind refused naming the URL when nobody listens", function()
    local url = "http://127.0.0.1:" .. proc.free_port() .. "/x"
    local e = raises(function() http.request { url = url } end)
    assert.equal("refused", e.kind)
    assert.equal("ECONNREFUSED", e.code)
    assert.equal(url, e.url)
    assert.matches("GET " .. url:gsub("%p", "%%%0") .. ": connection refused", e.message)
    assert.matches("^springrun.http.Error: ", tostring(e))
  end)

  -- libuv 1.44 runs due timers at the top of a UV_RUN_ONCE turn and then
  -- polls with the full timeout: a request that curl ends from its timer
  -- (here a URL it rejects on the first step) must still wake the caller
  -- while something else (a listening socket) keeps the loop alive.
  it("returns a request curl ends from its timer while other handles keep the loop alive", function()
    local cleanup = proc.cleanups(finally)
    local script = proc.tmpfile([[
      local uv = require "luv"
      local http = require "springrun.http"
      local srv = uv.new_tcp()
      assert(srv:bind("127.0.0.1", 0))
      assert(srv:listen(1, function() end))
      local ok, e = pcall(http.request, { url = "http://[::1" })
      print("RESULT", ok, e.kind)
      srv:close()
    ]])
    cleanup(function() os.remove(script) end)
    local p = proc.spawn { proc.bin, script }
    cleanup(function() proc.stop(p) end)
    assert.equal(0, proc.wait_exit(p, 20), p:stderr())
    assert.matches("RESULT\tfalse\t", p:stdout())
  end)

  it("raises kind timeout, saying timeout, when the server is too slow", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local url = "http://127.0.0.1:" .. port .. "/slow?ms=3000"
    local e = raises(function() http.request { url = url, timeout = 0.3 } end)
    assert.equal("timeout", e.kind)
    assert.matches("timeout after 0.3 s", e.message, 1, true)
    assert.matches(url, e.message, 1, true)
  end)

  it("raises kind closed when the connection breaks mid-response", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local e = raises(function() http.request { url = "http://127.0.0.1:" .. port .. "/cut" } end)
    assert.equal("closed", e.kind)
  end)

  it("stops a body past max_size (with and without Content-Length)", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local e = raises(function() http.request { url = "http://127.0.0.1:" .. port .. "/big?n=1000", max_size = 100 } end)
    assert.equal("protocol", e.kind)
    assert.equal("SR_ELIMIT", e.code)
    assert.matches("larger than max_size (100 bytes)", e.message, 1, true)
    e = raises(function()
      http.request { url = "http://127.0.0.1:" .. port .. "/stream?n=20&ms=1", max_size = 50 }
    end)
    assert.equal("SR_ELIMIT", e.code)
    assert.equal(1000, #http.request { url = "http://127.0.0.1:" .. port .. "/big?n=1000", max_size = 1000 }.body)
  end)

  it("lets requests from several tasks proceed concurrently", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    -- the server answers "together" only when all three wait there at once
    local got = {}
    for i = 1, 3 do
      runtime.spawn(function()
        got[i] = http.request { url = "http://127.0.0.1:" .. port .. "/barrier?n=3", timeout = 10 }.body
      end)
    end
    assert.is_true(run_until(function() return #got == 3 end, 15))
    assert.same({ "together", "together", "together" }, got)
  end)

  it("a served remote call fetches without blocking its server: two calls meet at the barrier", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local sport = proc.free_port()
    local srv = proc.spawn({ proc.bin, proc.root .. "/spec/fixtures/http_service.lua", tostring(sport) })
    cleanup(function() proc.stop(srv) end)
    assert(proc.wait_port("127.0.0.1", sport, 10, srv))
    local springrun = require "springrun"
    local got = {}
    for i = 1, 2 do
      runtime.spawn(function()
        local p = springrun.proxy("PYRO:HttpService@127.0.0.1:" .. sport, { timeout = 15 })
        got[i] = p:fetch("http://127.0.0.1:" .. port .. "/barrier?n=2")
      end)
    end
    assert.is_true(run_until(function() return #got == 2 end, 20))
    assert.same({ "200 together", "200 together" }, got)
  end)

  it("streams chunks to on_data before the response ends", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local req
    local seen, done_at_first = {}, nil
    req = http.start { url = "http://127.0.0.1:" .. port .. "/stream?n=4&ms=100",
      on_data = function(chunk)
        if done_at_first == nil then done_at_first = req.done end
        seen[#seen + 1] = chunk
      end }
    local r = req:wait()
    assert.equal(200, r.status)
    assert.equal("", r.body)
    assert.is_false(done_at_first)
    assert.equal("chunk 0\nchunk 1\nchunk 2\nchunk 3\n", table.concat(seen))
  end)

  it("cancels a streaming request in flight; the waiting task gets kind closed", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local req, err, chunks = nil, nil, 0
    runtime.spawn(function()
      req = http.start { url = "http://127.0.0.1:" .. port .. "/stream?n=1000&ms=20",
        on_data = function() chunks = chunks + 1 end }
      local ok, e = pcall(req.wait, req)
      err = ok and "no error" or e
    end)
    assert.is_true(run_until(function() return chunks > 0 end))
    assert.is_true(req:cancel())
    assert.is_true(run_until(function() return err ~= nil end))
    assert.equal("closed", err.kind)
    assert.equal("ECANCELED", err.code)
    assert.is_false(req:cancel())
    assert.equal(0, http.pending())
    -- the client goes on working
    assert.equal("hello", http.request { url = "http://127.0.0.1:" .. port .. "/hello" }.body)
  end)

  it("an error raised by on_data cancels the request and reaches the caller", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local ok, e = pcall(http.request, { url = "http://127.0.0.1:" .. port .. "/stream?n=1000&ms=20",
      on_data = function() error("enough", 0) end })
    assert.is_false(ok)
    assert.equal("enough", e)
    assert.equal(0, http.pending())
  end)

  it("callback mode (on_done) hands chunks and the end over from the loop, no task waiting", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local seen, result, rerr = {}, nil, nil
    local req = http.start { url = "http://127.0.0.1:" .. port .. "/stream?n=3&ms=20",
      on_data = function(chunk) seen[#seen + 1] = chunk end,
      on_done = function(r, e) result, rerr = r or false, e end }
    assert.is_true(run_until(function() return result ~= nil end))
    assert.is_nil(rerr)
    assert.equal(200, result.status)
    assert.equal("chunk 0\nchunk 1\nchunk 2\n", table.concat(seen))
    local ok, e = pcall(req.wait, req)
    assert.is_false(ok)
    assert.matches("started with on_done", e.message, 1, true)
    -- an error reaches on_done; a cancelled request calls nothing
    result = nil
    http.start { url = "http://127.0.0.1:" .. proc.free_port() .. "/", on_done = function(r, err)
      result = r or err end }
    assert.is_true(run_until(function() return result ~= nil end))
    assert.equal("refused", result.kind)
    local called = false
    local r2 = http.start { url = "http://127.0.0.1:" .. port .. "/slow?ms=300",
      on_done = function() called = true end }
    assert.is_true(r2:cancel())
    run_until(function() return called end, 0.6)
    assert.is_false(called)
    assert.equal(0, http.pending())
  end)

  it("speaks https to a server whose certificate chains to ssl_cacerts", function()
    local cleanup = proc.cleanups(finally)
    local c = certs.make()
    cleanup(function() certs.remove(c) end)
    local port = start_server(cleanup, "--tls", c.server_cert, c.server_key)
    local url = "https://127.0.0.1:" .. port .. "/hello"
    local r = http.request { url = url, ssl_cacerts = c.ca }
    assert.equal("hello", r.body)
    local e = raises(function() http.request { url = url } end) -- not in the system store
    assert.equal("connect", e.kind)
    assert.matches("https://127.0.0.1:" .. port, e.message, 1, true)
    e = raises(function() http.request { url = url, ssl_cacerts = c.other_ca } end)
    assert.equal("connect", e.kind)
    assert.equal("hello", http.request { url = url, ssl_verify = false }.body)
  end)

  it("refuses to block inside a loop callback and says to use a task", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local e
    local t = uv.new_timer()
    t:start(1, 0, function()
      local ok, err = pcall(http.request, { url = "http://127.0.0.1:" .. port .. "/hello" })
      e = ok and "no error" or err
    end)
    assert.is_true(run_until(function() return e ~= nil end))
    t:close()
    assert.equal("config", e.kind)
    assert.matches("make it from a task", e.message, 1, true)
  end)

  it("rejects bad options with config errors", function()
    local cases = {
      { { url = "ftp://x/" }, "url must be an http:// or https:// URL" },
      { { url = "http://127.0.0.1:1/", method = "get" }, "method must be upper-case letters" },
      { { url = "http://127.0.0.1:1/", body = 5 }, "body must be a string" },
      { { url = "http://127.0.0.1:1/", timeout = -1 }, "timeout must be a number of seconds" },
      { { url = "http://127.0.0.1:1/", max_size = 0 }, "max_size must be a positive integer" },
      { { url = "http://127.0.0.1:1/", headers = { ["Bad Name"] = "x" } }, "is not a token" },
      { { url = "http://127.0.0.1:1/", headers = { "X: a\r\nY: b" } }, "one 'Name: value' line" },
    }
    for _, c in ipairs(cases) do
      local ok, e = pcall(http.request, c[1])
      assert.is_false(ok)
      assert.matches(c[2], tostring(e), 1, true)
    end
    assert.equal(0, http.pending())
  end)

  it("runs the README's snippet as shown (against the fixture server)", function()
    local cleanup = proc.cleanups(finally)
    local port = start_server(cleanup)
    local code = readme.block("## HTTP client (springrun.http)", "lua")
    local st, out, err = readme.run_lua(code, { ["127.0.0.1:8080"] = "127.0.0.1:" .. port })
    assert.equal(0, st, err)
    assert.equal("200\ttext/plain\thello\n200\ttrue\nchunk 0\nchunk 1\nrefused\tECONNREFUSED\n", out)
  end)
end)
