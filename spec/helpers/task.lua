-- Helpers for service code that runs as a springrun task (a method called by
-- a daemon), shared by the specs and the fixture servers: the fixtures load
-- it by putting spec/ on package.path, as in
--   package.path = arg[0]:match("^(.-)[^/]*$") .. "../?.lua;" .. package.path
--   local task = require "helpers.task"
local uv = require "luv"
local runtime = require "springrun.runtime"

local M = {}

-- Suspends the calling task for ms milliseconds (a luv timer resumes it); the
-- daemon keeps serving other calls meanwhile. Call it only inside a task.
function M.sleep(ms)
  local co = runtime.current()
  local t = uv.new_timer()
  local deadline = uv.hrtime() + ms * 1e6
  -- the loop's clock is as old as its last turn: without this the timer
  -- can fire before ms have passed since the call (stats_spec times it)
  uv.update_time()
  -- and it counts whole ms: when the loop turns for something else while
  -- the timer runs, it can fire up to 1 ms early; wait out the rest
  local function fire()
    local left = deadline - uv.hrtime()
    if left > 0 then
      t:start(math.ceil(left / 1e6), 0, fire)
      return
    end
    t:close()
    runtime.resume(co)
  end
  t:start(ms, 0, fire)
  coroutine.yield()
end

return M
