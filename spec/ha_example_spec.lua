-- examples/ha/ (the seed's 7.4 as configuration) and the README's "High
-- availability" commands and snippet, run for real with the README's ports
-- 7001..7010 replaced by free ones.
local proc = require "helpers.proc"
local etcd_server = require "helpers.etcd"

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
  it("runs the README's etcd walk-through: copies register, the client lists them, kill -9 removes one", function()
    local cleanup = proc.cleanups(finally)
    local e = etcd_server.start(cleanup)
    local ports = free_ports(3)
    local block = readme_with(ports):match("\n```sh\n(export HA_REGISTRY=.-)```")
    assert.is_truthy(block)
    block = block:gsub("127%.0%.0%.1:2379", "127.0.0.1:" .. e.port)
    local lines = {}
    for l in block:gmatch("[^\n]+") do
      if not l:match("^#") then lines[#lines + 1] = (l:gsub("%s+#.*$", "")) end
    end
    -- the commands as shown, one by one (the spec plays the shell)
    local env = {}
    for k, v in lines[1]:match("^export (.*)$"):gmatch("(%S+)=(%S+)") do env[k] = v end
    assert.equal("etcd://127.0.0.1:" .. e.port .. "/services", env.HA_REGISTRY)
    local two = lines[2]:match("^bin/springrun examples/ha/server%.lua ([%d ]+) &$")
    assert.equal(ports[1] .. " " .. ports[2], two)
    local argv = { proc.bin, EX .. "server.lua" }
    for w in two:gmatch("%d+") do argv[#argv + 1] = w end
    start(cleanup, argv, { ports[1], ports[2] }, env)
    local third_port = lines[3]:match("^HA_PORTS=(%d+) bin/springrun examples/ha/server%.lua &$")
    assert.equal(tostring(ports[3]), third_port)
    local env3 = { HA_PORTS = third_port }
    for k, v in pairs(env) do env3[k] = v end
    local third = start(cleanup, { proc.bin, EX .. "server.lua" }, { ports[3] }, env3)
    assert.equal("bin/springrun examples/ha/client.lua", lines[4])
    local function registered()
      local out = proc.run(lines[5] .. " 2>/dev/null")
      local keys = {}
      for k in out:gmatch("[^\n]+") do keys[#keys + 1] = k end
      return keys
    end
    assert.is_truthy(lines[5]:match("^etcdctl "))
    -- (Debian's etcd-client, which etcd-server only suggests: make test installs it)
    assert.equal("0", proc.run("command -v etcdctl >/dev/null 2>&1; echo $?"):match("%d+"),
      "etcdctl is not installed (Debian package etcd-client)")
    -- the exporters register before their port accepts... or just after
    local deadline = os.time() + 10
    while #registered() < 3 and os.time() < deadline do proc.poll_step(50) end
    -- etcd lists in key order, and so does the pool
    local function by_key(list)
      local out = strs(list)
      table.sort(out)
      return out
    end
    local keys = {}
    for i, port in ipairs(by_key(ports)) do keys[i] = "/services/ServiceName/127.0.0.1:" .. port end
    assert.same(keys, registered())
    local st, out, err = run({ proc.bin, EX .. "client.lua" }, env)
    assert.equal(0, st, err)
    local want = "CLIENT: You got remote data => Hello\nCLIENT: You got remote data => World\n"
    for _, port in ipairs(by_key(ports)) do
      want = want .. string.format("PYRO:ServiceName@127.0.0.1:%s up served 2\n", port)
    end
    assert.equal(want, out)
    -- kill -9 the third copy: its key goes when its lease (HA_REGISTRY_TTL) expires
    assert.equal("kill -9 %2; sleep 5", lines[6])
    proc.kill(third, "sigkill")
    assert(proc.wait_exit(third, 10))
    deadline = os.time() + 15
    while #registered() > 2 and os.time() < deadline do proc.poll_step(50) end
    assert.equal(2, #registered())
    assert.equal("bin/springrun examples/ha/client.lua", lines[7])
    st, out, err = run({ proc.bin, EX .. "client.lua" }, env)
    assert.equal(0, st, err)
    want = "CLIENT: You got remote data => Hello\nCLIENT: You got remote data => World\n"
    for _, port in ipairs(by_key({ ports[1], ports[2] })) do
      want = want .. string.format("PYRO:ServiceName@127.0.0.1:%s up served 2\n", port)
    end
    assert.equal(want, out)
  end)
end)
