-- springrun.log: named loggers, levels and the Python-style line format.
local log = require "springrun.log"
local helpers = require "helpers.proc"

local LINE = "^(%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d,%d%d%d) %- ([^ ]+) %- (%u+) %- (.*)$"

-- Collects lines written by loggers; restores the previous output and level.
local function capture()
  local lines = {}
  local prev_out = log.set_output(function(line) lines[#lines + 1] = line end)
  local prev_level = log.get_level()
  return lines, function()
    log.set_output(prev_out)
    log.set_level(prev_level)
  end
end

describe("springrun.log #unit", function()
  it("writes 'time,ms - logger - LEVEL - message' lines with string.format arguments", function()
    local lines, restore = capture()
    finally(restore)
    log.set_level("DEBUG")
    log.get("springrun.spec.Format"):info("exporting %s at %s:%d", "ServiceName", "127.0.0.1", 7000)
    assert.are.equal(1, #lines)
    local stamp, name, level, msg = lines[1]:match(LINE)
    assert.is_truthy(stamp, lines[1])
    assert.are.equal("springrun.spec.Format", name)
    assert.are.equal("INFO", level)
    assert.are.equal("exporting ServiceName at 127.0.0.1:7000", msg)
    -- the timestamp is now, to the second (local time, like Python's asctime)
    local y, mo, d, h, mi, s = stamp:match("^(%d+)%-(%d+)%-(%d+) (%d+):(%d+):(%d+)")
    local t = os.time({ year = tonumber(y), month = tonumber(mo), day = tonumber(d),
      hour = tonumber(h), min = tonumber(mi), sec = tonumber(s) })
    assert.is_true(math.abs(os.time() - t) <= 2)
  end)

  it("defaults to WARNING on stderr and honours SPRINGRUN_LOG", function()
    local script = helpers.tmpfile([[
      package.path = "lua/?.lua;" .. package.path
      local log = require "springrun.log"
      local l = log.get("springrun.spec.Default")
      l:debug("d") l:info("i") l:warning("w %d", 1) l:error("e")
      io.stdout:write(log.get_level(), "\n")
    ]])
    finally(function() os.remove(script) end)
    local out = helpers.run("env -u SPRINGRUN_LOG lua5.4 " .. script .. " 2>&1")
    local levels = {}
    for line in out:gmatch("[^\n]+") do
      local _, _, level = line:match(LINE)
      if level then levels[#levels + 1] = level end
    end
    assert.are.same({ "WARNING", "ERROR" }, levels)
    assert.truthy(out:find("\nWARNING\n", 1, true))
    local only_err = helpers.run("env -u SPRINGRUN_LOG lua5.4 " .. script .. " 2>/dev/null")
    assert.are.equal("WARNING\n", only_err)
    local dbg = helpers.run("SPRINGRUN_LOG=debug lua5.4 " .. script .. " 2>&1")
    local n = 0
    for _ in dbg:gmatch("springrun.spec.Default") do n = n + 1 end
    assert.are.equal(4, n)
    assert.truthy(dbg:find("DEBUG\n$"))
  end)

  it("filters by the global level", function()
    local lines, restore = capture()
    finally(restore)
    local l = log.get("springrun.spec.Global")
    log.set_level("ERROR")
    l:debug("a") l:info("b") l:warning("c") l:error("d")
    log.set_level("INFO")
    l:debug("e") l:info("f") l:warning("g")
    local msgs = {}
    for i, line in ipairs(lines) do msgs[i] = select(4, line:match(LINE)) end
    assert.are.same({ "d", "f", "g" }, msgs)
    assert.are.equal("INFO", log.get_level())
  end)

  it("lets a logger override the global level, and nil remove the override", function()
    local lines, restore = capture()
    finally(restore)
    log.set_level("ERROR")
    local l = log.get("springrun.spec.Override")
    l:set_level("DEBUG")
    l:debug("shown")
    log.get("springrun.spec.Other"):warning("hidden")
    assert.are.equal("DEBUG", l:get_level())
    l:set_level(nil)
    l:warning("hidden too")
    assert.are.equal(1, #lines)
    assert.truthy(lines[1]:find("springrun.spec.Override - DEBUG - shown", 1, true))
  end)

  it("applies an ancestor's level to dotted children, the nearest one winning", function()
    local lines, restore = capture()
    finally(function()
      log.get("springrun.spec.tree"):set_level(nil)
      log.get("springrun.spec.tree.inner"):set_level(nil)
      restore()
    end)
    log.set_level("WARNING")
    log.get("springrun.spec.tree.a.B"):debug("before the ancestor's level: hidden")
    log.get("springrun.spec.tree"):set_level("DEBUG")
    log.get("springrun.spec.tree.inner"):set_level("ERROR")
    log.get("springrun.spec.tree.a.B"):debug("child of tree")
    log.get("springrun.spec.tree.inner.C"):warning("under inner: hidden")
    log.get("springrun.spec.treehouse"):info("not a child: hidden")
    assert.are.equal(1, #lines)
    assert.truthy(lines[1]:find("springrun.spec.tree.a.B - DEBUG - child of tree", 1, true))
  end)

  it("rejects an unknown level naming it", function()
    assert.has_error(function() log.set_level("LOUD") end,
      "log.set_level: unknown log level \"LOUD\" (expected DEBUG, INFO, WARNING or ERROR)")
    assert.has_error(function() log.get("x"):set_level(15) end,
      "logger:set_level: unknown log level 15 (expected DEBUG, INFO, WARNING or ERROR)")
  end)

  it("accepts level names in any case", function()
    local _, restore = capture()
    finally(restore)
    log.set_level("debug")
    assert.are.equal("DEBUG", log.get_level())
    log.set_level("Warning")
    assert.are.equal("WARNING", log.get_level())
  end)

  it("returns one logger per name and refuses an empty name", function()
    assert.are.equal(log.get("springrun.spec.Same"), log.get("springrun.spec.Same"))
    assert.are_not.equal(log.get("springrun.spec.Same"), log.get("springrun.spec.Other"))
    assert.has_error(function() log.get("") end)
    assert.has_error(function() log.get(nil) end)
  end)

  it("does not format suppressed records", function()
    local _, restore = capture()
    finally(restore)
    log.set_level("WARNING")
    local calls = 0
    local costly = setmetatable({}, { __tostring = function() calls = calls + 1; return "x" end })
    log.get("springrun.spec.Lazy"):debug("value %s", costly)
    assert.are.equal(0, calls)
    log.get("springrun.spec.Lazy"):warning("value %s", costly)
    assert.are.equal(1, calls)
  end)

  it("writes a message without arguments as is, and survives a bad format", function()
    local lines, restore = capture()
    finally(restore)
    log.set_level("DEBUG")
    local l = log.get("springrun.spec.Raw")
    l:info("100% done")
    l:info("%d items", "many")
    assert.are.equal("100% done", select(4, lines[1]:match(LINE)))
    local msg = select(4, lines[2]:match(LINE))
    assert.truthy(msg:find("^%%d items %(log format error: "))
  end)

  it("writes to a file handle given to set_output", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    local prev = log.set_output(f)
    local prev_level = log.get_level()
    finally(function()
      log.set_output(prev)
      log.set_level(prev_level)
      os.remove(path)
    end)
    log.set_level("INFO")
    log.get("springrun.spec.File"):error("to file")
    f:close()
    local text = assert(io.open(path)):read("a")
    assert.truthy(text:match(LINE:gsub("%$$", "\n$")))
    assert.truthy(text:find("springrun.spec.File - ERROR - to file\n", 1, true))
  end)
end)
