-- springrun.runtime: task coroutines and the event loop (luv's default loop).
--
--   runtime.spawn(fn, ...)     run fn(...) as a new task coroutine now; returns co
--   runtime._spawn_function(fn, ...)  the same without checking fn (internal:
--                              the daemon binding's handler for incoming calls)
--   runtime.resume(co, ...)    resume a task that yielded waiting for I/O it
--                              arranged itself (a luv callback calls this)
--   runtime.current()          the running task coroutine, or nil outside one
--   runtime._serving_conn()    the connection id of the call the running task
--                              serves, or nil
--   runtime.run()              turn the loop until nothing is exported or stop()
--   runtime.stop()             make run() return after the current turn
--   runtime.has_exports()      true while this process exports anything
--   runtime.tasks()            number of tasks alive (started, not finished)
--   runtime.serve_after_script()  the CLI's hook: serve while anything is
--                              exported; SIGINT/SIGTERM shut down cleanly
--
-- A task that fails is reported through springrun.log (logger
-- springrun.runtime) with its traceback; it never takes the loop down.
-- Every incoming remote call runs in its own task (see springrun.exporter);
-- tasks are started, resumed and pooled in C (core.task_new).
--
-- Shutdown on SIGINT/SIGTERM (serve_after_script): stop accepting and
-- reading, let the calls in flight and those waiting for their turn finish
-- (at most `drain_timeout` seconds, default 10, settable as
-- runtime.drain_timeout), close every open context
-- (springrun.context.close_all: destroy methods run, exporters unexport),
-- unexport whatever is left, return 0 (the CLI's exit status). A second
-- signal during the drain skips the rest of the drain. runtime.stop()
-- called while the CLI serves shuts down the same way.
local uv = require "luv"
local core = require "springrun.core"

local M = {}

M.drain_timeout = 10

-- co -> true while alive: the live tasks, kept by the task pool in C
-- (core.task_new, src/lsr_task.c), which starts, resumes, pools and counts
-- them (weak keys: the table alone does not keep a task alive)
local tasks = setmetatable({}, { __mode = "k" })
local exports = 0 -- maintained by springrun.exporter through M._exported
local stopped = false
local running = false

local logger
local function log()
  if logger == nil then
    local ok, l = pcall(require, "springrun.log")
    logger = ok and l.get("springrun.runtime") or false
  end
  return logger or nil
end

local function report(co, err)
  local text
  if type(err) == "string" then
    text = err
  else
    local mt = getmetatable(err)
    text = (mt and mt.__tostring) and tostring(err) or ("(error object is a " .. type(err) .. " value)")
  end
  local tb = debug.traceback(co, text)
  local l = log()
  if l then l:error("task failed: %s", tb) else io.stderr:write("springrun: task failed: ", tb, "\n") end
end

local spawn, resume, count = core.task_new(tasks, report)

function M.current()
  local co, main = coroutine.running()
  if main or not tasks[co] then return nil end
  return co
end

function M.resume(co, ...)
  if not tasks[co] then
    error("runtime.resume: not a springrun task (or it has finished)", 2)
  end
  return resume(co, ...)
end

-- The connection id of the incoming call the running task serves, or nil
-- (not in a task, or a task runtime.spawn started): the exporter's dispatch
-- (src/lsr_serve.c) records it in the task table (tasks[co] = conn).
function M._serving_conn()
  local v = tasks[coroutine.running()]
  if math.type(v) == "integer" then return v end
  return nil
end

-- The live tasks table, for the exporter's dispatch (core.serve_new's policy.tasks).
M._tasks = tasks

-- runtime.spawn without the check of fn: the daemon binding's handler, which
-- starts every incoming call's task with the exporter's serve function.
M._spawn_function = spawn

function M.spawn(fn, ...)
  if type(fn) ~= "function" then error("runtime.spawn: expected a function, got " .. type(fn), 2) end
  return spawn(fn, ...)
end

function M.tasks() return count() end

-- The drain waits for the tasks running and for the calls taken from the
-- daemon still waiting for their turn (src/lsr_daemon.c, "by connection").
local function busy() return count() + core.daemon_waiting() end

function M.has_exports() return exports > 0 end

-- springrun.exporter reports each export (+1) and unexport (-1).
function M._exported(delta)
  exports = exports + delta
  if exports < 0 then exports = 0 end
end

function M.stop()
  stopped = true
  uv.stop()
end

function M.run()
  if M.current() then error("springrun.run: cannot run the loop from inside a task", 2) end
  if running then error("springrun.run: the loop is already running", 2) end
  stopped = false
  running = true
  local ok, err = pcall(function()
    while not stopped and exports > 0 do uv.run("once") end
  end)
  running = false
  stopped = false
  uv.run("nowait") -- let close callbacks of handles closed in the last turn run
  if not ok then error(err, 0) end
end

-- Turns the loop until pred() is true or `seconds` have passed; true if pred.
local function run_until(pred, seconds)
  local timer = uv.new_timer()
  local expired = false
  timer:start(math.floor(seconds * 1000), 0, function() expired = true end)
  while not pred() and not expired do uv.run("once") end
  timer:stop()
  timer:close()
  return pred()
end

-- Shutdown: see the header comment. Returns nothing.
function M.shutdown(skip_drain)
  core.daemon_quiesce()
  if not skip_drain then
    run_until(function() return busy() == 0 end, M.drain_timeout)
  end
  local ctxmod = package.loaded["springrun.context"]
  if type(ctxmod) == "table" and type(ctxmod.close_all) == "function" then
    local ok, err = pcall(ctxmod.close_all)
    if not ok then
      local l = log()
      if l then l:error("closing contexts failed: %s", tostring(err)) end
    end
  end
  local exporter = package.loaded["springrun.exporter"]
  if type(exporter) == "table" and exporter.unexport_all then exporter.unexport_all() end
end

function M.serve_after_script()
  if exports == 0 then return 0 end
  local signals = {}
  local requested, forced = false, false
  local function on_signal(name)
    local l = log()
    if requested then
      forced = true
      if l then l:warning("second %s: skipping the drain", name) end
    else
      if l then l:info("%s received: shutting down", name) end
    end
    requested = true
    uv.stop()
  end
  for _, name in ipairs({ "sigint", "sigterm" }) do
    local sig = uv.new_signal()
    sig:start(name, function() on_signal(name) end)
    signals[#signals + 1] = sig
  end
  stopped = false
  running = true
  local ok, err = pcall(function()
    while not requested and not stopped and exports > 0 do uv.run("once") end
    if requested or stopped then -- stop() from the script's code: the same clean shutdown
      local drained = false
          core.daemon_quiesce()
      if not forced then
        drained = run_until(function() return busy() == 0 or forced end, M.drain_timeout)
      end
      M.shutdown(true)
      return drained
    end
  end)
  running = false
  stopped = false
  for _, sig in ipairs(signals) do
    sig:stop()
    sig:close()
  end
  uv.run("nowait")
  if not ok then error(err, 0) end
  return 0
end

return M
