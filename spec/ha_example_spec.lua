-- examples/ha/ (the seed's 7.4 as configuration) and the README's "High
-- availability" commands and snippet, run for real with the README's ports
-- 7001..7010 replaced by free ones.
local proc = require "helpers.proc"

local EX = proc.root .. "/examples/ha/"
local HOST = "127.0.0.1"

local function free_ports(n)
  local out = {}
  for i = 1, n do out[i] = proc.free_port() end
  return out
end

-- Starts argv and waits until every port accepts.
local function start(add, argv, ports, env)
  local p = proc.spawn(argv, { env = env })
  add(function() proc.stop(p) end)
  for _, port in ipairs(ports) do assert(proc.wait_port(HOST, port, 15, p)) end
  return p
end

local function run(argv, env)
  local p = proc.spawn(argv, { env = env })
  local st = proc.wait_exit(p, 30)
  if not st then
    proc.stop(p)
    error(table.concat(argv, " ") .. " did not finish; stderr:\n" .. p:stderr())
  end
  return st, p:stdout(), p:stderr()
end

-- The README with 7001.. replaced by ports[1]..
local function readme_with(ports)
  local f = assert(io.open(proc.root .. "/README.md"))
  local text = f:read("a")
  f:close()
  return (text:gsub("70(%d%d)", function(d)
    local i = tonumber(d)
    return ports[i] and tostring(ports[i]) or nil
  end))
end

local function strs(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = tostring(v) end
  return out
end

describe("examples/ha #net", function()
  it("runs the README's commands: one context file as three copies and once more on its own", function()
    local cleanup = proc.cleanups(finally)
    local ports = free_ports(4)
    local readme = readme_with(ports)
    -- the commands as the README shows them, ports replaced
    local l1 = readme:match("\nbin/springrun examples/ha/server%.lua ([%d ]+) &")
    local l2 = readme:match("\nHA_PORTS=(%d+) bin/springrun examples/ha/server%.lua &")
    local l3 = readme:match("\nbin/springrun examples/ha/client%.lua ([%d ]+)\n")
    assert.equal(table.concat(strs({ ports[1], ports[2], ports[3] }), " "), l1)
    assert.equal(tostring(ports[4]), l2)
    local three = { proc.bin, EX .. "server.lua" }
    for w in l1:gmatch("%d+") do three[#three + 1] = w end
    start(cleanup, three, { ports[1], ports[2], ports[3] })
    local single = start(cleanup, { proc.bin, EX .. "server.lua" }, { ports[4] }, { HA_PORTS = l2 })
    local client = { proc.bin, EX .. "client.lua" }
    for w in l3:gmatch("%d+") do client[#client + 1] = w end
    local st, out, err = run(client)
    assert.equal(0, st, err)
    local want = "CLIENT: You got remote data => Hello\nCLIENT: You got remote data => World\n"
    for i = 1, 4 do want = want .. string.format("PYRO:ServiceName@127.0.0.1:%d up served 2\n", ports[i]) end
    assert.equal(want, out)
    -- kill -9 the copy in its own process: the client still gets every answer
    proc.kill(single, "sigkill")
    assert(proc.wait_exit(single, 10))
    st, out, err = run(client)
    assert.equal(0, st, err)
    assert.matches("^CLIENT: You got remote data => Hello\nCLIENT: You got remote data => World\n", out)
    assert.matches(string.format("PYRO:ServiceName@127.0.0.1:%d down served 0\n", ports[4]), out, 1, true)
    assert.matches("connection refused", err, 1, true) -- the pool's warning names why
  end)

  it("serves ten copies from one exporter definition (the seed's 7.4) to a round-robin client", function()
    local cleanup = proc.cleanups(finally)
    local ports = free_ports(10)
    local args = strs(ports)
    start(cleanup, { proc.bin, EX .. "server.lua", table.unpack(args) }, ports)
    local st, out, err = run({ proc.bin, EX .. "client.lua", table.unpack(args) })
    assert.equal(0, st, err)
    local n = 0
    for port, served in out:gmatch("PYRO:ServiceName@127%.0%.0%.1:(%d+) up served (%d+)\n") do
      n = n + 1
      assert.equal(ports[n], tonumber(port))
      assert.equal("2", served)
    end
    assert.equal(10, n)
    -- HA_PORTS gives the same list
    st, out = run({ proc.bin, EX .. "client.lua" }, { HA_PORTS = table.concat(args, ",") })
    assert.equal(0, st)
    assert.matches("CLIENT: You got remote data => World", out, 1, true)
  end)

  it("runs the README's pool snippet", function()
    local cleanup = proc.cleanups(finally)
    local ports = free_ports(3)
    start(cleanup, { proc.bin, EX .. "server.lua", table.unpack(strs(ports)) }, ports)
    local readme = readme_with(ports)
    local snippet = readme:match("The client is a pool, called like a proxy:\n\n```lua\n(.-)```")
    assert.is_truthy(snippet)
    local path = proc.tmpfile(snippet)
    cleanup(function() os.remove(path) end)
    local st, out, err = run({ proc.bin, path })
    assert.equal(0, st, err)
    local want = "You got remote data => Hello\n"
    for i = 1, 3 do
      want = want .. string.format("PYRO:ServiceName@127.0.0.1:%d\tup\t%d\n", ports[i], i == 1 and 1 or 0)
    end
    assert.equal(want, out)
  end)
end)
