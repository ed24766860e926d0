-- Busted output handler: busted's plain terminal output, then one closing
-- line "N passed, N failed" counted from busted's own results (errors count
-- as failures), which CI reads.
return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.plainTerminal"(options)

  busted.subscribe({ "suite", "end" }, function()
    local failed = handler.failuresCount + handler.errorsCount
    local line = string.format("%d passed, %d failed", handler.successesCount, failed)
    if handler.pendingsCount > 0 then
      line = line .. string.format(", %d skipped", handler.pendingsCount)
    end
    io.write(line, "\n")
    io.flush()
    -- luv 1.44 crashes in its loop finalizer at exit when a handle was closed
    -- and the loop has not turned since (the handle's memory is freed while
    -- still queued for closing): give pending close callbacks one turn.
    local has_luv, uv = pcall(require, "luv")
    if has_luv then uv.run("nowait") end
    return nil, true
  end)

  return handler
end
