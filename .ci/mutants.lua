-- make mutants: applies each deliberate bug kept in spec/mutants/*.mutant to
-- a scratch copy of the checkout, one at a time, rebuilds it (incrementally:
-- the copy keeps the checkout's build/ with its timestamps) and runs only the
-- spec files the mutant names. A mutant must be killed: those specs must
-- fail. Fails naming every mutant that survived, and every mutant that no
-- longer applies (its find text is not in its file exactly once, e.g. after
-- the code moved: update the mutant's file and snippet), does not build, or
-- names a spec file that does not exist.
--
-- Mutant file format (plain text; the find/replace blocks are exact text,
-- compared byte for byte, so that nothing depends on line numbers):
--   breaks: what the change breaks (one line)
--   file: src/auth.c
--   specs: spec/edge_spec.lua spec/auth_spec.lua
--   --- find
--   <lines of the original code>
--   --- replace
--   <lines of the mutated code>
--   --- end
--
-- Usage: lua5.4 .ci/mutants.lua [name-substring ...]   (from the checkout)
-- Prints one line per mutant, then "mutants: N killed, N survived" last.

local function sh(cmd)
  local ok, _, code = os.execute(cmd)
  return ok == true, code
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function spit(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function plain_count(hay, needle)
  local n, i = 0, 1
  while true do
    local s, e = hay:find(needle, i, true)
    if not s then return n end
    n = n + 1
    i = e + 1
  end
end

local function parse(path)
  local text = assert(slurp(path))
  local m = { path = path, name = path:match("([^/]+)%.mutant$") }
  local block, buf = nil, {}
  for line in (text .. (text:sub(-1) == "\n" and "" or "\n")):gmatch("(.-)\n") do
    local marker = line:match("^%-%-%- (%a+)$")
    if marker then
      if block then m[block] = table.concat(buf, "\n") end
      block, buf = nil, {}
      if marker == "find" or marker == "replace" then block = marker end
    elseif block then
      buf[#buf + 1] = line
    else
      local k, v = line:match("^(%a+):%s*(.-)%s*$")
      if k then m[k] = v end
    end
  end
  local missing = {}
  for _, k in ipairs({ "breaks", "file", "specs", "find", "replace" }) do
    if not m[k] then missing[#missing + 1] = k end
  end
  if #missing > 0 then m.problem = "malformed: missing " .. table.concat(missing, ", ") end
  if m.find and m.replace and m.find == m.replace then m.problem = "find and replace are the same" end
  return m
end

local filters = { ... }
local list = {}
local p = assert(io.popen("ls spec/mutants/*.mutant 2>/dev/null | sort"))
for path in p:lines() do
  local keep = #filters == 0
  for _, f in ipairs(filters) do if path:find(f, 1, true) then keep = true end end
  if keep then list[#list + 1] = path end
end
p:close()
if #list == 0 then
  print("mutants: no spec/mutants/*.mutant file" .. (#filters > 0 and " matches" or ""))
  print("mutants: 0 killed, 1 survived")
  os.exit(1)
end

local t0 = os.time()
local scratch = assert(io.popen("mktemp -d /tmp/springrun-mutants.XXXXXX")):read("l")
local function cleanup() sh("rm -rf " .. q(scratch)) end
-- the working tree as it is (committed or not), with build/ and its
-- timestamps; no .git, no sanitizer build
assert(sh("tar --exclude=./.git --exclude=./build-san --exclude=./bin/springrun-san -cf - . | tar -xf - -C "
  .. q(scratch)), "cannot copy the checkout to " .. scratch)
local log = scratch .. "/.mutant.log"
if not sh("make -C " .. q(scratch) .. " all > " .. q(log) .. " 2>&1") then
  io.stdout:write(slurp(log) or "")
  print("mutants: the unmodified copy does not build")
  print("mutants: 0 killed, 1 survived")
  cleanup()
  os.exit(1)
end

local killed, bad = 0, {}
for _, path in ipairs(list) do
  local m = parse(path)
  local started = os.time()
  local target = not m.problem and (scratch .. "/" .. m.file)
  local orig = target and slurp(target)
  if not m.problem and not orig then m.problem = "no longer applies: " .. m.file .. " does not exist" end
  if not m.problem then
    local n = plain_count(orig, m.find)
    if n ~= 1 then
      m.problem = string.format("no longer applies: its find text occurs %d times in %s (must be once)", n, m.file)
    end
  end
  local specs = {}
  if not m.problem then
    for s in m.specs:gmatch("%S+") do
      specs[#specs + 1] = s
      if not slurp(scratch .. "/" .. s) then m.problem = "names a spec file that does not exist: " .. s end
    end
    if #specs == 0 then m.problem = "names no spec files" end
  end
  if not m.problem then
    local s, e = orig:find(m.find, 1, true)
    spit(target, orig:sub(1, s - 1) .. m.replace .. orig:sub(e + 1))
    if not sh("make -C " .. q(scratch) .. " all > " .. q(log) .. " 2>&1") then
      m.problem = "does not build:\n" .. (slurp(log) or ""):sub(-2000)
    else
      local ok = sh("cd " .. q(scratch) .. " && timeout 600 make test SPEC=" .. q(table.concat(specs, " "))
        .. " > " .. q(log) .. " 2>&1")
      local out = slurp(log) or ""
      local summary = "no summary"
      for line in out:gmatch("[^\n]+") do
        if line:match("^%d+ passed, %d+ failed") then summary = line end
      end
      if ok and summary:match("^%d+ passed, 0 failed") then
        m.problem = "SURVIVED: " .. table.concat(specs, " ") .. " passed (" .. summary .. ")"
      else
        killed = killed + 1
        print(string.format("mutant %s: killed by %s (%s, %d s)", m.name, table.concat(specs, " "),
          summary, os.time() - started))
      end
    end
    spit(target, orig) -- restored: newer than the mutated build, so rebuilt next time
  end
  if m.problem then
    bad[#bad + 1] = m.name
    print(string.format("mutant %s (%s, %s): %s", m.name, m.file or "?", m.breaks or "?", m.problem))
  end
  io.stdout:flush()
end
cleanup()
print(string.format("mutants: %d mutants in %d s", #list, os.time() - t0))
if #bad > 0 then print("mutants not killed: " .. table.concat(bad, ", ")) end
print(string.format("mutants: %d killed, %d survived", killed, #bad))
os.exit(#bad == 0 and 0 or 1)
