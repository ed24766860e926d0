-- Spec helper: the README's code blocks, so that specs run what it shows.
--   readme.block("## HTTP client (springrun.http)", "lua") -> the text of
--   the first ```lua block after that heading (raises when missing)
--   readme.run_lua(code, replacements) -> status, stdout, stderr: runs code
--   with bin/springrun after replacing each key of replacements (plain
--   text, e.g. a default port) by its value
local proc = require "helpers.proc"

local M = {}

function M.block(heading, lang)
  local f = assert(io.open(proc.root .. "/README.md", "rb"))
  local text = f:read("a")
  f:close()
  local at = text:find("\n" .. heading .. "\n", 1, true)
  assert(at, "README.md has no heading " .. heading)
  local open = "```" .. lang .. "\n"
  local s = text:find(open, at, true)
  assert(s, "README.md has no ```" .. lang .. " block after " .. heading)
  local e = text:find("\n```", s + #open, true)
  return text:sub(s + #open, e)
end

function M.run_lua(code, replacements)
  for k, v in pairs(replacements or {}) do
    code = code:gsub(k:gsub("%p", "%%%0"), (tostring(v):gsub("%%", "%%%%")))
  end
  local path = proc.tmpfile(code)
  local p = proc.spawn({ proc.bin, path })
  local st = proc.wait_exit(p, 30)
  proc.stop(p)
  os.remove(path)
  return st, p:stdout(), p:stderr()
end

return M
