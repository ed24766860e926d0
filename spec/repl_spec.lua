-- `springrun -i` through a real pseudo-terminal (spec/fixtures/pty_driver.py,
-- python3's pty module): a line exports a service, another process calls it
-- while the prompt is idle; values print as lua5.4's prompt prints them;
-- multi-line input, Ctrl-C drops the line, Ctrl-D shuts down cleanly.
local proc = require "helpers.proc"
local json = require "springrun.json"

local function drive(steps, ...)
  local argv = { proc.python, proc.root .. "/spec/fixtures/pty_driver.py", json.encode(steps), ... }
  local p = proc.spawn(argv)
  finally(function() proc.stop(p) end)
  local st = proc.wait_exit(p, 90)
  return st, p:stdout(), p:stderr()
end

describe("springrun -i #net", function()
  it("serves what a line exported while the prompt waits; prints values; Ctrl-C, Ctrl-D", function()
    local port = proc.free_port()
    local url = string.format("PYRO:Echo@127.0.0.1:%d", port)
    local st, out, err = drive({
      { "expect", "> ", 15 },
      { "send", "1+1\r" },
      { "expect", "\r\n2\r\n> ", 10 },
      { "send", string.format('ex = springrun.PyroServiceExporter{service_name = "Echo", service = '
        .. '{hi = function(_, x) return "hi " .. x end}, service_host = "127.0.0.1", service_port = %d}; '
        .. 'ex:after_properties_set()\r', port) },
      { "expect", "exporting Echo at " .. url:gsub("%p", "\\%0") .. " \\(methods: hi\\)", 10 },
      { "expect", "> ", 10 },
      -- the prompt is idle: another process calls the service
      { "run", { proc.bin, "call", url, "hi", "there" } },
      { "send", "function f()\r" },
      { "expect", ">> ", 10 },
      { "send", "return 42, 'x' end\r" },
      { "expect", "> ", 10 },
      { "send", "f()\r" },
      { "expect", "42\tx\r\n> ", 10 },
      { "send", "abc" },
      { "expect", "abc", 10 },
      { "send", "\3" },
      { "expect", "\r\n> ", 10 },
      { "send", "2*3\r" }, -- "abc" was dropped: the line is "2*3", not "abc2*3"
      { "expect", "2\\*3\r\n6\r\n> ", 10 },
      { "send", 'error("oops")\r' },
      { "expect", "stdin:1: oops", 10 },
      -- Ctrl-D only once the prompt is back: sent while the traceback is
      -- still printing, the terminal is in canonical mode and the EOF is
      -- consumed there, never reaching readline
      { "expect", "traceback[\\s\\S]*\r\n> ", 10 },
      { "send", "\4" },
      { "wait_exit", 20 },
    }, proc.bin, "-i")
    assert.are.equal(0, st, out .. err)
    assert.truthy(out:find('RUN 0 "hi there"\n', 1, true), out)
    assert.truthy(out:find("\nEXIT 0\n", 1, true), out)
    assert.truthy(out:find("stopped exporting Echo", 1, true), out)
  end)
end)
