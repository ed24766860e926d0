-- examples/: the seed's remoting chapter run as real processes on free ports,
-- the README's REPL session in a real `lua5.4 -i -l springrun`, and the
-- split pair talking to Python Pyro4 peers both ways.
local proc = require "helpers.proc"
local client = require "helpers.client"

local HOST = "127.0.0.1"
local EX = proc.root .. "/examples/"

-- Starts examples/server.lua on a free port; returns the process and port.
local function start_server(extra_env)
  local port = proc.free_port()
  local p = proc.spawn({ proc.bin, EX .. "server.lua", HOST, tostring(port) }, { env = extra_env })
  local ok, why = proc.wait_port(HOST, port, 15, p)
  if not ok then
    proc.stop(p)
    error(why)
  end
  return p, port
end

-- Runs argv to completion (at most `timeout` s); returns status, stdout, stderr.
local function run(argv, opts, timeout)
  local p = proc.spawn(argv, opts)
  local st = proc.wait_exit(p, timeout or 30)
  if not st then
    proc.stop(p)
    error(table.concat(argv, " ") .. " did not finish; stderr:\n" .. p:stderr())
  end
  return st, p:stdout(), p:stderr()
end

describe("examples #net", function()
  it("service.lua is the seed's plain service", function()
    local Service = dofile(EX .. "service.lua").Service
    assert.are.equal("You got remote data => Hello", Service.new():get_data("Hello"))
  end)

  it("server.lua and client.lua talk as two processes, with host/port overrides", function()
    local server, port = start_server()
    finally(function() proc.stop(server) end)
    local st, out, err = run({ proc.bin, EX .. "client.lua", HOST, tostring(port) })
    assert.are.equal(0, st, err)
    assert.are.equal("CLIENT: You got remote data => Hello\n", out)
    -- a second client on the same server
    st, out = run({ proc.bin, EX .. "client.lua", HOST, tostring(port) })
    assert.are.equal(0, st)
    assert.are.equal("CLIENT: You got remote data => Hello\n", out)
    -- SIGTERM stops the server cleanly
    proc.kill(server, "sigterm")
    assert.are.equal(0, proc.wait_exit(server, 10))
    assert(proc.wait_port_closed(HOST, port, 10))
  end)

  it("the seed's own client.xml (port rewritten) reaches server.lua", function()
    local cleanup = proc.cleanups(finally)
    local server, port = start_server()
    cleanup(function() proc.stop(server) end)
    local f = assert(io.open(proc.root .. "/spec/fixtures/xml/client.xml"))
    local xml = f:read("a"):gsub("127%.0%.0%.1:7000", HOST .. ":" .. port)
    f:close()
    local path = proc.tmpfile(xml, ".xml")
    cleanup(function() os.remove(path) end)
    local script = proc.tmpfile(string.format([[
local springrun = require "springrun"
local appContext = springrun.context_from_xml(%q)
local service = appContext:get_object("service")
print("CLIENT: " .. service:get_data("Hello"))
appContext:close()
]], path))
    cleanup(function() os.remove(script) end)
    local st, out, err = run({ proc.bin, script })
    assert.are.equal(0, st, err)
    assert.are.equal("CLIENT: You got remote data => Hello\n", out)
  end)

  it("client.lua fails with the URL named when no server listens", function()
    local port = proc.free_port()
    local st, out, err = run({ proc.bin, EX .. "client.lua", HOST, tostring(port) })
    assert.are_not.equal(0, st)
    assert.are.equal("", out)
    assert.truthy(err:find(string.format("PYROLOC://%s:%d/ServiceName", HOST, port), 1, true), err)
    assert.truthy(err:find("connection refused", 1, true), err)
  end)

  it("context_demo.lua exports and calls through one context in one process, then exits", function()
    local port = proc.free_port()
    local st, out, err = run({ proc.bin, EX .. "context_demo.lua", HOST, tostring(port) })
    assert.are.equal(0, st, err)
    assert.are.equal("You got remote data => Hello\n", out)
  end)

  it("programmatic.lua does the same by hand and exits", function()
    local port = proc.free_port()
    local st, out, err = run({ proc.bin, EX .. "programmatic.lua", HOST, tostring(port) })
    assert.are.equal(0, st, err)
    assert.are.equal("You got remote data => Hello\n", out)
  end)

  it("demo.sh runs the split pair, stops the server and exits with the client's status", function()
    local port = proc.free_port()
    local st, out, err = run({ "sh", EX .. "demo.sh", HOST, tostring(port) }, nil, 60)
    assert.are.equal(0, st, err)
    assert.truthy(out:find("CLIENT: You got remote data => Hello\n", 1, true), out .. err)
    assert.is_falsy(proc.port_open(HOST, port))
  end)

  it("demo.sh refuses a port something else already listens on", function()
    -- a port that is already taken
    local uv = require "luv"
    local holder = uv.new_tcp()
    assert(holder:bind(HOST, 0))
    assert(holder:listen(1, function() end))
    local port = holder:getsockname().port
    finally(function() holder:close() uv.run("nowait") end)
    local st, out, err = run({ "sh", EX .. "demo.sh", HOST, tostring(port) }, nil, 60)
    assert.are_not.equal(0, st)
    assert.is_falsy(out:find("CLIENT:", 1, true))
    assert.truthy(err:find(string.format("demo: %s:%d is already in use", HOST, port), 1, true), err)
  end)

  it("demo.sh reports a server that exits before listening", function()
    local st, out, err = run({ "sh", EX .. "demo.sh", "host.invalid", tostring(proc.free_port()) }, nil, 60)
    assert.are_not.equal(0, st)
    assert.is_falsy(out:find("CLIENT:", 1, true))
    assert.truthy(err:find("demo: the server exited (status 1) before host.invalid:", 1, true), err)
  end)

  it("the README's REPL session works in a real lua5.4 -i -l springrun", function()
    local server, port = start_server()
    finally(function() proc.stop(server) end)
    local script = string.format('eval "$(%s --env)" && exec %s -i -l springrun', proc.shquote(proc.bin), proc.lua)
    local input = string.format('svc = springrun.proxy "PYRO:ServiceName@%s:%d"\nsvc:get_data("Hello")\n', HOST, port)
    local st, out, err = run({ "sh", "-c", script }, { stdin = input })
    assert.are.equal(0, st, err)
    assert.truthy(out:find("\nYou got remote data => Hello\n", 1, true), out .. err)
  end)
end)

describe("examples with Python Pyro4 peers #net #interop", function()
  it("client.lua calls a Python Pyro4 daemon", function()
    local server, port = client.start_pyro()
    finally(function() proc.stop(server) end)
    local st, out, err = run({ proc.bin, EX .. "client.lua", HOST, tostring(port) })
    assert.are.equal(0, st, err)
    assert.are.equal("CLIENT: You got remote data => Hello\n", out)
  end)

  it("a Python Pyro4 client calls server.lua", function()
    local server, port = start_server()
    finally(function() proc.stop(server) end)
    local code = string.format([[
import Pyro4
Pyro4.config.SERIALIZER = "json"
with Pyro4.Proxy("PYRO:ServiceName@%s:%d") as p:
    print("CLIENT: " + p.get_data("Hello"))
]], HOST, port)
    local st, out, err = run({ proc.python, "-c", code })
    assert.are.equal(0, st, err)
    assert.are.equal("CLIENT: You got remote data => Hello\n", out)
  end)
end)
