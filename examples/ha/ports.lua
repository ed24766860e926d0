-- The ports of the seed's 7.4 scenario, shared by server.lua and client.lua:
-- the script's arguments when there are any, else HA_PORTS (a space- or
-- comma-separated list), else the ten ports 7001..7010. The same context
-- file therefore runs as ten copies in one process (no arguments), or once
-- per port in N processes (one port each), without being edited.
local M = {}

function M.list(args)
  local out = {}
  local function add(s)
    local n = tonumber(s)
    if math.type(n) ~= "integer" or n < 0 or n > 65535 then
      error("examples/ha: not a port number: " .. tostring(s), 0)
    end
    out[#out + 1] = n
  end
  for i = 1, #(args or {}) do add(args[i]) end
  if #out == 0 and os.getenv("HA_PORTS") then
    for s in os.getenv("HA_PORTS"):gmatch("[^%s,]+") do add(s) end
  end
  if #out == 0 then
    for p = 7001, 7010 do out[#out + 1] = p end
  end
  return out
end

M.host = os.getenv("HA_HOST") or "127.0.0.1"

return M
