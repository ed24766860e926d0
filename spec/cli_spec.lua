-- The springrun executable: runs a Lua file with `arg`, reports failures.
local helpers = require "helpers.proc"

describe("springrun CLI #unit", function()
  it("runs a script with its arguments in arg", function()
    local path = helpers.tmpfile("print(arg[0] ~= nil, arg[1], arg[2], select('#', ...))\n")
    local out, ok, code = helpers.run(helpers.bin .. " " .. path .. " one two")
    assert.are.equal("true\tone\ttwo\t2\n", out)
    assert.is_true(ok)
    assert.are.equal(0, code)
  end)

  it("exits non-zero with the message and a traceback when the script fails", function()
    local path = helpers.tmpfile("local function f() error('kaboom') end\nf()\n")
    local out, ok, code = helpers.run(helpers.bin .. " " .. path .. " 2>&1")
    assert.is_falsy(ok)
    assert.are.equal(1, code)
    assert.truthy(out:find("kaboom", 1, true))
    assert.truthy(out:find("stack traceback", 1, true))
  end)

  it("names a missing script or unknown command once", function()
    local out, ok, code = helpers.run(helpers.bin .. " /nonexistent/x.lua 2>&1")
    assert.is_falsy(ok)
    assert.are.equal(2, code)
    assert.are.equal("springrun: no such file or command '/nonexistent/x.lua'\n", out)
  end)

  it("puts the script's directory first on package.path", function()
    local dir = helpers.run("mktemp -d"):gsub("%s+$", "")
    finally(function() os.execute("rm -rf " .. helpers.shquote(dir)) end)
    local f = assert(io.open(dir .. "/neighbour.lua", "w"))
    f:write("return { answer = 42 }\n")
    f:close()
    f = assert(io.open(dir .. "/main.lua", "w"))
    f:write("print(require('neighbour').answer)\n")
    f:close()
    local out, ok = helpers.run("cd / && " .. helpers.bin .. " " .. helpers.shquote(dir .. "/main.lua") .. " 2>&1")
    assert.is_true(ok, out)
    assert.are.equal("42\n", out)
  end)

  it("reports an address in use in one line, without a traceback", function()
    local uv = require "luv"
    local holder = uv.new_tcp()
    assert(holder:bind("127.0.0.1", 0))
    assert(holder:listen(1, function() end))
    local port = holder:getsockname().port
    finally(function() holder:close() uv.run("nowait") end)
    local cmd = helpers.bin .. " " .. helpers.root .. "/examples/server.lua 127.0.0.1 " .. port .. " 2>&1"
    local out, ok, code = helpers.run(cmd)
    assert.is_falsy(ok)
    assert.are.equal(1, code)
    assert.are.equal("springrun: springrun.context: object 'service_exporter': cannot export ServiceName: 127.0.0.1:"
      .. port .. " is already in use\n", out)
    -- the traceback is there at DEBUG
    out = helpers.run(helpers.bin .. " --log-level DEBUG " .. helpers.root .. "/examples/server.lua 127.0.0.1 "
      .. port .. " 2>&1")
    assert.truthy(out:find("is already in use\nstack traceback:", 1, true), out)
  end)

  it("names an unknown property of a springrun class and the closest valid one", function()
    local path = helpers.tmpfile([[
local springrun = require "springrun"
springrun.context {
  svc = { class = function() return { get = function() end } end },
  ex = { class = springrun.PyroServiceExporter, props = { service_name = "S", servce = springrun.ref "svc" } },
}
]])
    local out, ok = helpers.run(helpers.bin .. " " .. path .. " 2>&1")
    assert.is_falsy(ok)
    assert.are.equal("springrun: springrun.context: object 'ex': unknown property 'servce' of PyroServiceExporter"
      .. " (did you mean 'service'?)\n", out)
    path = helpers.tmpfile([[
local springrun = require "springrun"
springrun.context { p = { class = springrun.PyroProxyFactory, props = { service_ur = "PYRO:x@127.0.0.1:1" } } }
]])
    out = helpers.run(helpers.bin .. " " .. path .. " 2>&1")
    assert.are.equal("springrun: springrun.context: object 'p': unknown property 'service_ur' of PyroProxyFactory"
      .. " (did you mean 'service_url'?)\n", out)
  end)

  it("prints LUA_PATH and LUA_CPATH that make plain lua5.4 -l springrun work", function()
    local env = helpers.run(helpers.bin .. " --env")
    assert.truthy(env:find("export LUA_PATH=", 1, true))
    local out, ok = helpers.run("env -u LUA_PATH -u LUA_CPATH sh -c '" .. "eval \"$(" .. helpers.bin
      .. " --env)\"; cd /tmp && " .. helpers.lua .. " -l springrun -e \"print(springrun.version, require(\\\"springrun.core\\\").version)\"'")
    assert.is_true(ok)
    assert.are.equal("0.1.0\t0.1.0\n", out)
  end)

  it("exits 0 after a script that closed a luv handle without turning the loop", function()
    local path = helpers.tmpfile("local uv = require 'luv'\nlocal t = uv.new_timer()\n"
      .. "t:start(1000, 0, function() end)\nt:close()\nprint('closed')\n")
    local out, ok, code = helpers.run(helpers.bin .. " " .. path)
    assert.are.equal("closed\n", out)
    assert.are.equal(0, code)
    assert.is_true(ok)
    -- the same with springrun loaded and nothing exported
    path = helpers.tmpfile("require 'springrun'\nlocal uv = require 'luv'\nlocal t = uv.new_timer()\n"
      .. "t:start(1, 0, function() end)\nuv.run('once')\nt:close()\nprint('closed')\n")
    out, ok, code = helpers.run(helpers.bin .. " " .. path)
    assert.are.equal("closed\n", out)
    assert.are.equal(0, code)
    assert.is_true(ok)
  end)

  it("prints its version", function()
    local out, ok = helpers.run(helpers.bin .. " --version")
    assert.is_true(ok)
    assert.are.equal("springrun 0.1.0\n", out)
  end)

  it("rejects an unknown option with a clear message", function()
    local out, ok, code = helpers.run(helpers.bin .. " --bogus 2>&1")
    assert.is_falsy(ok)
    assert.are.equal(2, code)
    assert.truthy(out:find("unknown option '--bogus'", 1, true))
  end)
end)
