-- springrun.runtime: the event loop (placeholder until the remoting layer
-- exists: nothing can be exported yet, so there is nothing to serve).
local M = {}

function M.serve_after_script() return 0 end

return M
