-- Spec helpers for running the springrun executable from the checkout.
local M = {}

M.root = assert(io.popen("pwd")):read("l")
-- SPRINGRUN_BIN: the CLI under test (make test SANITIZE=1 sets bin/springrun-san)
M.bin = os.getenv("SPRINGRUN_BIN") or (M.root .. "/bin/springrun")

-- Runs a shell command; returns its stdout, ok, exit code.
function M.run(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok, code
end

-- Writes text to a new temporary file and returns its path (removed at exit
-- of the spec run by os.tmpname's owner: the caller's finally if it cares).
function M.tmpfile(text, suffix)
  local path = os.tmpname() .. (suffix or ".lua")
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

return M
