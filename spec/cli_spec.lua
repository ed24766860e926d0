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

  it("names a missing script", function()
    local out, ok = helpers.run(helpers.bin .. " /nonexistent/x.lua 2>&1")
    assert.is_falsy(ok)
    assert.truthy(out:find("/nonexistent/x.lua", 1, true))
  end)

  it("prints LUA_PATH and LUA_CPATH that make plain lua5.4 -l springrun work", function()
    local env = helpers.run(helpers.bin .. " --env")
    assert.truthy(env:find("export LUA_PATH=", 1, true))
    local out, ok = helpers.run("env -u LUA_PATH -u LUA_CPATH sh -c '" .. "eval \"$(" .. helpers.bin
      .. " --env)\"; cd /tmp && lua5.4 -l springrun -e \"print(springrun.version, require(\\\"springrun.core\\\").version)\"'")
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
