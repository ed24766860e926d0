-- springrun.runtime: task coroutines (spawn, current, resume) and the pool
-- that reuses them.
local runtime = require "springrun.runtime"

describe("springrun.runtime #unit", function()
  it("runs a task at once and knows it is inside one", function()
    local seen
    runtime.spawn(function(a, b) seen = { runtime.current() ~= nil, a, b } end, 1, 2)
    assert.are.same({ true, 1, 2 }, seen)
    assert.is_nil(runtime.current())
  end)

  it("resumes a task that yielded, with the values given", function()
    local co, got
    runtime.spawn(function()
      co = runtime.current()
      got = coroutine.yield()
    end)
    assert.is_not_nil(co)
    runtime.resume(co, "value")
    assert.are.equal("value", got)
    assert.has_error(function() runtime.resume(co) end,
      "runtime.resume: not a springrun task (or it has finished)")
  end)

  it("does not keep a finished task's arguments alive in the pooled coroutine", function()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local big = { string.rep("x", 1024 * 1024) }
      weak[1] = big
      runtime.spawn(function(t) return #t end, big)
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
  end)

  it("gives each running task a coroutine of its own", function()
    local cos = {}
    for i = 1, 3 do runtime.spawn(function() cos[i] = runtime.current(); coroutine.yield() end) end
    assert.are_not.equal(cos[1], cos[2])
    assert.are_not.equal(cos[2], cos[3])
    for i = 1, 3 do runtime.resume(cos[i]) end
  end)
end)
