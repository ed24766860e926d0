-- springrun.cli: the command line of the `springrun` executable (src/main.c
-- only sets up paths and calls main). Runs a Lua script with `arg` set, then
-- keeps serving while anything is exported and the script's tasks run.
local M = {}

local USAGE = [[
usage: springrun [options] FILE.lua [args...]
       springrun [options] -i [FILE.lua] [args...]
       springrun [options] COMMAND [args...]
       springrun --env

Runs FILE.lua (its arguments in `arg`; FILE's directory first on
package.path), then serves for as long as anything is exported and
waits for the tasks it spawned (springrun.spawn); SIGINT/SIGTERM drain
in-flight calls, close contexts and exit 0 (1 with tasks still alive).

options:
  -i                  an interactive prompt (after FILE.lua, if given);
                      exported services keep serving while it waits;
                      Ctrl-C drops the line, Ctrl-D shuts down
  --log-level LEVEL   DEBUG, INFO, WARNING or ERROR (default INFO for a
                      script, WARNING for the commands; or SPRINGRUN_LOG)
  --env               print LUA_PATH/LUA_CPATH exports for the modules this
                      command uses (its checkout or its install prefix):
                      eval "$(springrun --env)"; then lua5.4 -l springrun
  --version           print the version
  -h, --help          this text

commands (COMMAND --help for each):
  call URL METHOD [ARGS...]  call a remote method, print the result as JSON
  inspect URL                list the methods, oneway methods and attributes
  ping URL                   check that the object answers (connect + handshake)
  ns [--host H] [--port P]   run a Pyro4-compatible name server
]]

-- command -> { module, function name }
local commands = {
  ns = { "springrun.cmd.ns", "main" },
  call = { "springrun.cmd.client", "call" },
  inspect = { "springrun.cmd.client", "inspect" },
  ping = { "springrun.cmd.client", "ping" },
}

-- The LUA_PATH/LUA_CPATH that make plain lua5.4 find the modules this
-- command uses: a checkout's lua/ and build/, or an installed prefix's
-- share/lua/5.4 and lib/lua/5.4 (layout: "checkout" or "prefix", from main.c).
local function env_lines(root, layout)
  local lpath, cpath
  local ver = _VERSION:match("%d+%.%d+")
  if layout == "checkout" then
    lpath = string.format("%s/lua/?.lua;%s/lua/?/init.lua;;", root, root)
    cpath = string.format("%s/build/?.so;;", root)
  elseif layout == "prefix" then
    lpath = string.format("%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua;;", root, ver, root, ver)
    cpath = string.format("%s/lib/lua/%s/?.so;;", root, ver)
  else
    return nil, "springrun --env: cannot tell where springrun's modules are (the command is "
      .. "neither in a checkout's bin/ nor in an installed prefix's bin/)"
  end
  return string.format("export LUA_PATH='%s'\nexport LUA_CPATH='%s'\n", lpath, cpath)
end

-- The message handler for the script and commands: a configuration error
-- (springrun.errors.config_error: an unknown property, an address in use...)
-- is its message alone, unless the log level is DEBUG; anything else gets
-- the traceback.
local function traceback(e)
  local errors = package.loaded["springrun.errors"]
  if errors and errors.is_config(e) then
    local log = require "springrun.log"
    if log.get_level() ~= "DEBUG" then return tostring(e) end
  end
  if type(e) ~= "string" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then e = tostring(e) else e = "(error object is a " .. type(e) .. " value)" end
  end
  return debug.traceback(e, 2)
end

local function err(fmt, ...)
  io.stderr:write("springrun: ", string.format(fmt, ...), "\n")
end

-- argv: the command line after the program name; root: the directory above
-- the command's bin/ (nil when unknown); layout: "checkout", "prefix" or nil.
-- Returns the exit status.
function M.main(argv, root, argv0, layout)
  local i, log_level, interactive = 1, nil, false
  while i <= #argv do
    local a = argv[i]
    if a == "-h" or a == "--help" then
      io.write(USAGE)
      return 0
    elseif a == "--version" then
      io.write("springrun ", require("springrun").version, "\n")
      return 0
    elseif a == "--env" then
      local text, msg = env_lines(root, layout)
      if not text then err("%s", msg) return 1 end
      io.write(text)
      return 0
    elseif a == "--log-level" or a:match("^%-%-log%-level=") then
      log_level = a:match("^%-%-log%-level=(.*)$")
      if not log_level then
        i = i + 1
        log_level = argv[i]
      end
      if not log_level then err("--log-level needs a level (DEBUG, INFO, WARNING, ERROR)") return 2 end
    elseif a == "-i" then
      interactive = true
    elseif a == "--" then
      i = i + 1
      break
    elseif a:sub(1, 1) == "-" then
      err("unknown option '%s' (see springrun --help)", a)
      return 2
    else
      break
    end
    i = i + 1
  end

  if log_level then
    local ok, e = pcall(require("springrun.log").set_level, log_level:upper())
    if not ok then err("--log-level: %s", tostring(e)) return 2 end
  end

  local target = argv[i]
  if target == nil and not interactive then
    io.stderr:write(USAGE)
    return 2
  end

  local rest = table.move(argv, i + 1, #argv, 1, {})
  local cmd = not interactive and commands[target]
  if cmd then
    local ok, rc = xpcall(function() return require(cmd[1])[cmd[2]](rest) end, traceback)
    if not ok then err("%s", rc) return 1 end
    return rc or 0
  end

  -- a script runs at INFO unless told otherwise: a server says what it
  -- exports and when it stops (the commands keep WARNING)
  local env_level = os.getenv("SPRINGRUN_LOG")
  if not log_level and (env_level == nil or env_level == "") then
    require("springrun.log").set_level("INFO")
  end

  if target == nil then return require("springrun.repl").run() end

  -- the script's arg table, as lua5.4 builds it
  local script_arg = { [-1] = argv0, [0] = target }
  for k, v in ipairs(rest) do script_arg[k] = v end
  _ENV.arg = script_arg

  local probe = io.open(target, "r")
  if not probe then
    err("no such file or command '%s'", target)
    return 2
  end
  probe:close()
  -- the script's directory first, so it requires its neighbours from any
  -- working directory (as Python puts a script's directory on sys.path)
  local dir = target:match("^(.*)/[^/]*$") or "."
  if dir == "" then dir = "/" end
  package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
  local chunk, lerr = loadfile(target)
  if not chunk then
    err("%s", lerr)
    return 1
  end
  local ok, e = xpcall(chunk, traceback, table.unpack(rest))
  if not ok then
    err("%s", e)
    return 1
  end

  if interactive then
    local ran, rc = xpcall(function() return require("springrun.repl").run() end, traceback)
    if not ran then err("%s", rc) return 1 end
    return rc
  end

  local rc = 0
  local springrun = package.loaded["springrun"]
  if springrun ~= nil then
    local served
    served, rc = xpcall(function() return springrun._serve_after_script() end, traceback)
    if not served then err("%s", rc) return 1 end
  end
  -- luv 1.44 crashes when the state closes with handles whose close has not
  -- completed: give a script's closed handles one turn of the loop (also
  -- when springrun is loaded but nothing was served: no turn was taken then).
  local uv = package.loaded["luv"]
  if uv ~= nil then uv.run("nowait") end
  return rc or 0
end

return M
