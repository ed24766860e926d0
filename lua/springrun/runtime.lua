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
--   runtime.run([opts])        springrun.run: turn the loop until nothing is
--                              exported and every task of springrun.spawn and
--                              pending future (springrun.future) finished, or
--                              stop(), a signal, opts.timeout, or nothing is
--                              left on the loop to wake them; returns 0, or 1
--                              (saying so on stderr) when it stopped with
--                              such tasks alive, or with opts.fail_on_error
--                              when such a task failed since the last run
--   runtime.stop()             make run() return after the current turn
--   runtime.has_exports()      true while this process exports anything
--   runtime.tasks()            number of tasks alive (started, not finished)
--   runtime.serve_after_script()  the CLI's hook: run() after the script
--                              (serve while anything is exported, wait for
--                              the script's tasks); its exit status
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

-- Task failures reported by springrun.spawn's tasks (failed) and how many
-- of them a run{fail_on_error = true} has answered for already (answered).
local failed, answered = 0, 0

-- Writes a failed task's traceback (once per failure); counted when it is
-- one of springrun.spawn's tasks (user).
local function report_text(tb, user)
  if user then failed = failed + 1 end
  local l = log()
  if l then l:error("task failed: %s", tb) else io.stderr:write("springrun: task failed: ", tb, "\n") end
end
M._report = report_text

local function report(co, err)
  local text
  if type(err) == "string" then
    text = err
  else
    local mt = getmetatable(err)
    text = (mt and mt.__tostring) and tostring(err) or ("(error object is a " .. type(err) .. " value)")
  end
  report_text(debug.traceback(co, text))
end

-- The work run() waits for besides exports: () -> count, some names;
-- springrun.future registers its tasks and pending futures.
local work = function() return 0 end
function M._set_work(fn) work = fn end
function M._running() return running end

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
-- daemon still waiting for their turn (src/lsr_daemon_events.c, "by connection").
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
  local hessian = package.loaded["springrun.remoting.hessian"]
  if type(hessian) == "table" and hessian.unexport_all then hessian.unexport_all() end
end

-- The loop of run() and serve_after_script(): see the header. who names
-- the caller in what it says.
local function serve(opts, who, shutdown_on_stop)
  local timeout, fail_on_error = opts.timeout, opts.fail_on_error
  local signals = {}
  local requested, forced, expired = nil, false, false
  local function on_signal(name)
    local l = log()
    if requested then
      forced = true
      if l then l:warning("second %s: skipping the drain", name) end
    elseif exports > 0 then
      if l then l:info("%s received: shutting down", name) end
    end
    requested = requested or name
    uv.stop()
  end
  for _, name in ipairs({ "sigint", "sigterm" }) do
    local sig = uv.new_signal()
    sig:start(name, function() on_signal(name) end)
    sig:unref() -- (as the timer below) not what keeps the loop going: see stuck
    signals[#signals + 1] = sig
  end
  local timer
  if timeout then
    uv.update_time()
    timer = uv.new_timer()
    timer:start(math.floor(timeout * 1000 + 0.5), 0, function()
      expired = true
      uv.stop()
    end)
    timer:unref()
  end
  stopped = false
  running = true
  local stuck = false
  local ok, err = pcall(function()
    while not requested and not stopped and not expired and (exports > 0 or work() > 0) do
      -- nothing left on the loop (no socket, timer or request) while tasks
      -- wait: nothing can ever resume them
      if not uv.run("once") and exports == 0 and work() > 0 and not (requested or stopped or expired) then
        stuck = true
        break
      end
    end
    if exports > 0 and (requested or (stopped and shutdown_on_stop)) then
      -- a signal, or stop() from the script's code while the CLI serves:
      -- the same clean shutdown (run() returns on stop() or its timeout
      -- with the exports in place)
      core.daemon_quiesce()
      if not forced then
        run_until(function() return busy() == 0 or forced end, M.drain_timeout)
      end
      M.shutdown(true)
    end
  end)
  local by_stop = stopped and not requested and not expired
  running = false
  stopped = false
  for _, sig in ipairs(signals) do
    sig:stop()
    sig:close()
  end
  if timer then timer:close() end
  uv.run("nowait") -- let close callbacks of handles closed in the last turn run
  if not ok then error(err, 0) end
  local rc = 0
  local n, names = work()
  if n > 0 and not by_stop then
    local why = requested and ("by " .. requested:upper())
      or stuck and "waiting for nothing (no I/O or timer left that could resume them)"
      or string.format("after its timeout of %g s", timeout)
    io.stderr:write(string.format("%s: stopped %s with %d task%s still alive (%s)\n", who, why, n,
      n == 1 and "" or "s", table.concat(names or {}, ", ")))
    rc = 1
  end
  if fail_on_error and failed > answered then
    io.stderr:write(string.format("%s: %d task%s failed (fail_on_error)\n", who, failed - answered,
      failed - answered == 1 and "" or "s"))
    rc = 1
  end
  answered = failed
  return rc
end

function M.run(opts)
  if M.current() then error("springrun.run: cannot run the loop from inside a task", 2) end
  if running then error("springrun.run: the loop is already running", 2) end
  if opts ~= nil then
    if type(opts) ~= "table" then error("springrun.run: opts must be a table, got " .. type(opts), 2) end
    for k in pairs(opts) do
      if k ~= "timeout" and k ~= "fail_on_error" then
        error(string.format("springrun.run: unknown option '%s' (timeout, fail_on_error)", tostring(k)), 2)
      end
    end
    local t = opts.timeout
    if t ~= nil and (type(t) ~= "number" or not (t > 0)) then
      error("springrun.run: timeout must be a positive number of seconds, got " .. tostring(t), 2)
    end
  end
  return serve(opts or {}, "springrun.run", false)
end

function M.serve_after_script()
  if exports == 0 and work() == 0 then return 0 end
  return serve({}, "springrun", true)
end

return M
