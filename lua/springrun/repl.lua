-- springrun.repl: the prompt of `springrun -i [FILE]`. It reads lines with
-- GNU readline's callback interface (springrun.readline, in the springrun
-- executable) driven by a luv poll handle on stdin, so the loop keeps
-- turning while the prompt waits: services exported from the prompt or by
-- FILE are served meanwhile.
--
-- As lua5.4's prompt: an expression's values are printed (`1+1` prints 2),
-- a statement runs, an incomplete chunk continues on a ">> " prompt, errors
-- print with their traceback, lines go to the history. `springrun` is a
-- global. Each chunk runs as a springrun task, so a proxy call in it yields
-- to the loop (a service of this same process can answer it). Ctrl-C drops
-- the line being typed (or the chunk being continued); Ctrl-D on an empty
-- line shuts down as SIGTERM does (in-flight calls drain, contexts close)
-- and exits 0; so does SIGTERM.
local uv = require "luv"
local runtime = require "springrun.runtime"

local M = {}

M.PROMPT, M.PROMPT2 = "> ", ">> "

-- Compiles the chunk text as lua.c does: first as `return <text>`, then as
-- is. Returns the function, or nil and the message and whether the chunk is
-- merely incomplete (more lines may complete it).
local function compile(text)
  local f = load("return " .. text, "=stdin", "t")
  if f then return f end
  local err
  f, err = load(text, "=stdin", "t")
  if f then return f end
  if err:sub(-5) == "<eof>" then return nil, err, true end
  return nil, err, false
end

local function show_error(e)
  io.stderr:write(tostring(e), "\n")
  io.stderr:flush()
end

-- Runs the prompt until end of input or SIGTERM; returns the exit status.
function M.run()
  local rl = require "springrun.readline"
  _ENV.springrun = require "springrun"
  local buffer = nil -- the incomplete chunk so far
  local busy = false -- a chunk is running (no prompt shown)
  local done = false
  local poll = uv.new_poll(0)
  local sigint, sigterm = uv.new_signal(), uv.new_signal()

  local on_readable
  local function prompt()
    if done then return end
    rl.install(buffer and M.PROMPT2 or M.PROMPT)
    poll:start("r", on_readable)
  end

  local function finish()
    done = true
    rl.remove()
    uv.stop()
  end

  local function traceback(e)
    if type(e) ~= "string" then
      local mt = getmetatable(e)
      if mt and mt.__tostring then return tostring(e) end
      return "(error object is a " .. type(e) .. " value)"
    end
    return debug.traceback(e, 2)
  end

  local function execute(f)
    busy = true
    poll:stop() -- a level-triggered poll would spin while the chunk waits
    runtime.spawn(function()
      local res = table.pack(xpcall(f, traceback))
      if not res[1] then
        show_error(res[2])
      elseif res.n > 1 then
        local out = {}
        for i = 2, res.n do out[#out + 1] = tostring(res[i]) end
        io.write(table.concat(out, "\t"), "\n")
        io.flush()
      end
      busy = false
      prompt()
    end)
  end

  local function on_line(line)
    if line == false then -- Ctrl-D
      io.write("\n")
      finish()
      return
    end
    local text = buffer and (buffer .. "\n" .. line) or line
    if text:match("^%s*$") then
      buffer = nil
      prompt()
      return
    end
    local f, err, incomplete = compile(text)
    if incomplete then
      buffer = text
      prompt()
      return
    end
    buffer = nil
    rl.add_history(text)
    if not f then
      show_error(err)
      prompt()
      return
    end
    execute(f)
  end

  on_readable = function()
    if busy or done then return end
    local line = rl.read_char()
    if line ~= nil then on_line(line) end
  end
  sigint:start("sigint", function()
    if busy or done then return end
    buffer = nil
    rl.cancel()
    prompt()
  end)
  sigterm:start("sigterm", function() finish() end)

  prompt()
  local ok, err = pcall(function()
    while not done do uv.run("once") end
  end)
  rl.remove()
  poll:stop()
  poll:close()
  for _, s in ipairs({ sigint, sigterm }) do
    s:stop()
    s:close()
  end
  runtime.shutdown()
  uv.run("nowait")
  if not ok then error(err, 0) end
  return 0
end

return M
