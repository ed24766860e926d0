-- springrun.future: concurrency for scripts -- tasks, futures, gather.
--
--   springrun.spawn(fn, ...) -> task    fn(...) as a task on the loop, now
--   springrun.sleep(s)                  pause s seconds (a task yields; outside
--                                       a task the loop turns meanwhile)
--   springrun.async(proxy[, opts]):m(...) -> future   the call m(...), started
--   proxy:async("m", ...) -> future     the same (PyroProxyFactory proxies)
--   springrun.gather(futures[, opts])   wait for all: results in order
--   springrun.first(futures[, opts])    wait for the first to finish
--
-- A task handle is a future too (of fn's results). A future:
--   f:wait([timeout])  its results, or raises the error; inside a task the
--                      task yields, outside one the loop turns until f is
--                      done; past timeout seconds raises kind "timeout"
--                      (f goes on)
--   f:done()           true once finished (a result, an error, cancelled)
--   f:result()         its results, or raises its error (not yet finished:
--                      raises)
--   f:on_done(fn)      fn(f) once f finished (at once when it has)
--   f:cancel()         stops waiting: f fails with kind "cancelled"; a call
--                      not yet answered goes on and its reply is dropped
--                      when it comes (the connection stays usable); true
--                      when f was still pending
--
-- opts of springrun.async: timeout = seconds, the call's own deadline
-- instead of the proxy's (a PyroProxyFactory applies it on the wire; any
-- other object, a pool, gets it as a deadline on the future).
--
-- Which thread, which coroutine: everything here runs on the Lua thread.
-- Each task, each future's call, runs in a coroutine of its own (a
-- springrun.runtime task); waiting yields it to luv's loop, so other tasks,
-- and the services this process exports, run meanwhile. Outside a task,
-- f:wait turns the loop itself. One proxy shared by many tasks does not
-- make them queue: it keeps up to max_connections connections
-- (springrun.proxy).
--
-- springrun.run() (springrun.runtime) runs the loop until every task and
-- pending future has finished (a cancelled future no longer counts).
local uv = require "luv"
local errors = require "springrun.errors"
local runtime = require "springrun.runtime"
-- closes handles so that a state closed right after is safe (luv 1.44)
local close_handle = require("springrun.transport").close_handle

local M = {}

local proxy_mod
local function proxies()
  proxy_mod = proxy_mod or require "springrun.proxy"
  return proxy_mod
end

-- The futures pending and not cancelled (the work springrun.run waits
-- for), with their count.
local alive, nalive = {}, 0

runtime._set_work(function()
  if nalive == 0 then return 0 end
  local names = {}
  for f in pairs(alive) do
    names[#names + 1] = f.desc
    if #names == 5 then break end
  end
  table.sort(names)
  return nalive, names
end)

local Future = { __name = "springrun.Future" }
Future.__index = Future

function Future.__tostring(f)
  return string.format("springrun.Future(%s, %s)", f.desc, f.state)
end

local function new(desc)
  local f = setmetatable({ state = "pending", desc = desc, waiters = nil, callbacks = nil }, Future)
  alive[f] = true
  nalive = nalive + 1
  return f
end

local function report_callback_error(e)
  runtime._report(debug.traceback(type(e) == "string" and e or tostring(e), 2))
  return e
end

-- Wakes the tasks waiting for f and runs its callbacks (f just finished).
local function wake(f)
  local w, cbs = f.waiters, f.callbacks
  f.waiters, f.callbacks = nil, nil
  if w then
    for i = 1, #w do runtime.resume(w[i]) end
  end
  if cbs then
    for i = 1, #cbs do xpcall(cbs[i], report_callback_error, f) end
  end
end

local function finish(f, state)
  f.state = state
  alive[f] = nil
  nalive = nalive - 1
  wake(f)
end

-- f's outcome from pcall's results; false when f was no longer pending
-- (cancelled, or timed out as a whole): the outcome is dropped.
local function settle(f, ok, ...)
  if f.state ~= "pending" then return false end
  if ok then
    f.values = table.pack(...)
    finish(f, "done")
  else
    f.err = (...)
    finish(f, "failed")
  end
  return true
end

local function remove(list, co)
  if list == nil then return end
  for i = #list, 1, -1 do
    if list[i] == co then table.remove(list, i) end
  end
end

local function check_timeout(timeout, who)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout) then
    error(string.format("%s: timeout must be a number of seconds >= 0, got %s", who, tostring(timeout)), 3)
  end
end

-- Waits until pred() holds (fs: the futures whose ends can make it hold)
-- or timeout seconds passed; true when pred() holds. In a task the task
-- yields; outside one the loop turns.
local function wait_until(fs, pred, timeout, who)
  if pred() then return true end
  local co = runtime.current()
  if co == nil and runtime._running() then
    error(who .. ": outside a task while the loop runs (a luv callback): spawn a task or use on_done", 3)
  end
  local expired, timer = false, nil
  if timeout ~= nil then
    uv.update_time()
    timer = uv.new_timer()
    timer:start(math.floor(timeout * 1000 + 0.5), 0, function()
      expired = true
      if co then runtime.resume(co) end
    end)
  end
  if co then
    for i = 1, #fs do
      local f = fs[i]
      if f.state == "pending" then
        local w = f.waiters
        if w == nil then
          w = {}
          f.waiters = w
        end
        w[#w + 1] = co
      end
    end
    while not pred() and not expired do coroutine.yield() end
    for i = 1, #fs do remove(fs[i].waiters, co) end
  else
    while not pred() and not expired do
      if not uv.run("once") and not pred() and not expired then
        if timer then close_handle(timer) end
        error(string.format("%s: nothing left on the loop can finish %s", who, fs[1] and fs[1].desc or "it"), 3)
      end
    end
  end
  if timer then close_handle(timer) end
  return pred()
end

local function outcome(f)
  if f.state == "done" then return table.unpack(f.values, 1, f.values.n) end
  error(f.err, 0)
end

function Future:done() return self.state ~= "pending" end

function Future:result()
  if self.state == "pending" then
    error(string.format("%s: not finished yet (wait for it first)", tostring(self)), 2)
  end
  return outcome(self)
end

function Future:wait(timeout)
  check_timeout(timeout, "future:wait")
  local fs = { self }
  if not wait_until(fs, function() return self.state ~= "pending" end, timeout, "future:wait") then
    error(errors.new("timeout", string.format("waiting for %s timed out after %g s (it goes on)",
      self.desc, timeout)), 0)
  end
  return outcome(self)
end

function Future:on_done(fn)
  if type(fn) ~= "function" then error("future:on_done: expected a function, got " .. type(fn), 2) end
  if self.state ~= "pending" then
    xpcall(fn, report_callback_error, self)
  else
    local cbs = self.callbacks
    if cbs == nil then
      cbs = {}
      self.callbacks = cbs
    end
    cbs[#cbs + 1] = fn
  end
  return self
end

function Future:cancel()
  if self.state ~= "pending" then return false end
  self.err = errors.new("cancelled", self.desc .. " was cancelled")
  finish(self, "cancelled")
  return true
end

local function is_future(v) return getmetatable(v) == Future end
M.is_future = is_future

-- ---- tasks ---------------------------------------------------------------

local function where(fn)
  local info = debug.getinfo(fn, "S")
  return string.format("task %s:%d", info.short_src, info.linedefined)
end

local function task_error(e)
  local text = e
  if type(e) ~= "string" then
    local mt = getmetatable(e)
    text = (mt and mt.__tostring) and tostring(e) or ("(error object is a " .. type(e) .. " value)")
  end
  runtime._report(debug.traceback(text, 2), true)
  return e
end

function M.spawn(fn, ...)
  if type(fn) ~= "function" then error("springrun.spawn: expected a function, got " .. type(fn), 2) end
  local f = new(where(fn))
  runtime.spawn(function(...) settle(f, xpcall(fn, task_error, ...)) end, ...)
  return f
end

function M.sleep(s)
  check_timeout(s, "springrun.sleep")
  if s == nil then error("springrun.sleep: expected seconds", 2) end
  local co = runtime.current()
  local fired = false
  uv.update_time()
  local timer = uv.new_timer()
  timer:start(math.floor(s * 1000 + 0.5), 0, function()
    fired = true
    if co then runtime.resume(co) end
  end)
  if co then
    while not fired do coroutine.yield() end
  else
    if runtime._running() then
      close_handle(timer)
      error("springrun.sleep: outside a task while the loop runs (a luv callback)", 2)
    end
    while not fired do uv.run("once") end
  end
  close_handle(timer)
end

-- ---- calls ---------------------------------------------------------------

-- A new future (desc: what it waits for) of fn(co, ...) run as a task
-- (co: that task): the one way springrun's calls become futures.
local function start(desc, fn, ...)
  local f = new(desc)
  runtime.spawn(function(...) settle(f, pcall(fn, runtime.current(), ...)) end, ...)
  return f
end
M._start = start

-- The future of obj:name(...) (obj: a PyroProxyFactory proxy, a pool or
-- any object whose methods may be called from a task).
local function call(obj, timeout, name, ...)
  local pm = proxies()
  if pm.is_proxy(obj) then
    return start(string.format("call %s to %s", name, obj._pyroUri), function(co, ...)
      return pm._task_call(obj, co, timeout, name, ...)
    end, ...)
  end
  local f = start(string.format("call %s to %s", name, tostring(obj)), function(_, ...)
    return obj[name](obj, ...)
  end, ...)
  if timeout ~= nil and f.state == "pending" then
    -- no wire deadline to give it: the future's own
    uv.update_time()
    local timer = uv.new_timer()
    timer:start(math.floor(timeout * 1000 + 0.5), 0, function()
      if f.state == "pending" then
        f.err = errors.new("timeout", string.format("%s timed out after %g s", f.desc, timeout),
          { method = name })
        finish(f, "failed")
      end
    end)
    f:on_done(function() close_handle(timer) end)
  end
  return f
end
M._call = call

local Async = { __name = "springrun.async" }

function Async.__index(a, name)
  return function(me, ...)
    if me ~= a then
      error(string.format("springrun.async: call methods with ':' (async:%s(...))", tostring(name)), 2)
    end
    return call(rawget(a, 1), rawget(a, 2), name, ...)
  end
end

function M.async(obj, opts)
  if type(obj) ~= "table" and type(obj) ~= "userdata" then
    error("springrun.async: expected a proxy, got " .. type(obj), 2)
  end
  local timeout
  if opts ~= nil then
    if type(opts) ~= "table" then error("springrun.async: opts must be a table, got " .. type(opts), 2) end
    for k in pairs(opts) do
      if k ~= "timeout" then error(string.format("springrun.async: unknown option '%s' (timeout)", tostring(k)), 2) end
    end
    timeout = opts.timeout
    if timeout ~= nil and (type(timeout) ~= "number" or not (timeout > 0) or timeout == math.huge) then
      error("springrun.async: timeout must be a positive number of seconds, got " .. tostring(timeout), 2)
    end
  end
  return setmetatable({ obj, timeout }, Async)
end

-- ---- several futures -------------------------------------------------------

local function check_futures(fs, who)
  if type(fs) ~= "table" then error(who .. ": expected a list of futures, got " .. type(fs), 3) end
  for i = 1, #fs do
    if not is_future(fs[i]) then
      error(string.format("%s: item %d is not a future (%s)", who, i, type(fs[i])), 3)
    end
  end
end

-- gather(fs[, opts]) -> results: the first result of each future, in order
-- ({ n = #fs, ... }: nil results keep their place). Raises the first error
-- as soon as a future fails; with opts.all_errors it waits for all and
-- returns results, errs (errs[i]: the error of fs[i]; nil when none failed).
-- opts.timeout: raise kind "timeout" past it (the futures go on).
function M.gather(fs, opts)
  check_futures(fs, "springrun.gather")
  opts = opts or {}
  check_timeout(opts.timeout, "springrun.gather")
  local all_errors = opts.all_errors == true
  local n = #fs
  -- the first future (in list order) that failed, or nil
  local function failed()
    for i = 1, n do
      local s = fs[i].state
      if s == "failed" or s == "cancelled" then return fs[i] end
    end
  end
  local function pred()
    if not all_errors and failed() then return true end
    for i = 1, n do
      if fs[i].state == "pending" then return false end
    end
    return true
  end
  if not wait_until(fs, pred, opts.timeout, "springrun.gather") then
    local left = 0
    for i = 1, n do if fs[i].state == "pending" then left = left + 1 end end
    error(errors.new("timeout", string.format("springrun.gather: %d of %d futures not done after %g s",
      left, n, opts.timeout)), 0)
  end
  if not all_errors then
    local f = failed()
    if f then error(f.err, 0) end
  end
  local results, errs = { n = n }, nil
  for i = 1, n do
    local f = fs[i]
    if f.state == "done" then
      results[i] = f.values[1]
    else
      errs = errs or {}
      errs[i] = f.err
    end
  end
  return results, errs
end

-- first(fs[, opts]) -> i, results...: the first future to finish (its
-- index, then its results), or raises its error. opts.timeout as gather's.
function M.first(fs, opts)
  check_futures(fs, "springrun.first")
  if #fs == 0 then error("springrun.first: no futures given", 2) end
  opts = opts or {}
  check_timeout(opts.timeout, "springrun.first")
  local function pred()
    for i = 1, #fs do
      if fs[i].state ~= "pending" then return true end
    end
    return false
  end
  if not wait_until(fs, pred, opts.timeout, "springrun.first") then
    error(errors.new("timeout", string.format("springrun.first: none of %d futures done after %g s",
      #fs, opts.timeout)), 0)
  end
  for i = 1, #fs do
    if fs[i].state ~= "pending" then return i, outcome(fs[i]) end
  end
end

return M
