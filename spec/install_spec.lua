-- Installing springrun: `make install PREFIX=...` / `make uninstall` and
-- `luarocks make --tree ...` into temporary directories; the installed
-- command then runs the seed's server and client (copied out of the
-- checkout) with an empty environment, from another working directory.
local proc = require "helpers.proc"

local HOST = "127.0.0.1"
local SAN = os.getenv("SPRINGRUN_SANITIZE") and "1" or ""

local function sh(cmd)
  local out, ok, code = proc.run(cmd .. " 2>&1")
  assert(ok, cmd .. " failed (" .. tostring(code) .. "):\n" .. out)
  return out
end

local function tmpdir(cleanup)
  local dir = proc.run("mktemp -d"):gsub("%s+$", "")
  cleanup(function() os.execute("rm -rf " .. proc.shquote(dir)) end)
  return dir
end

-- Files under dir (sorted list of paths relative to it).
local function files(dir)
  local out = proc.run("cd " .. proc.shquote(dir) .. " && find . -type f | sort")
  local list = {}
  for l in out:gmatch("[^\n]+") do list[#list + 1] = l:sub(3) end
  return list
end

-- Copies the seed's service, server and client into a directory of their own.
local function copy_examples(dir)
  for _, f in ipairs({ "service.lua", "server.lua", "client.lua" }) do
    sh("cp " .. proc.shquote(proc.root .. "/examples/" .. f) .. " " .. proc.shquote(dir))
  end
end

-- Runs server.lua and client.lua of dir with `bin` and `env -i`, from /,
-- then `bin inspect --stats` against the server.
local function server_and_client(cleanup, bin, dir)
  local port = proc.free_port()
  local server = proc.spawn({ "env", "-i", bin, dir .. "/server.lua", HOST, tostring(port) }, { cwd = "/" })
  cleanup(function() proc.stop(server) end)
  assert(proc.wait_port(HOST, port, 15, server))
  local c = proc.spawn({ "env", "-i", bin, dir .. "/client.lua", HOST, tostring(port) }, { cwd = "/" })
  cleanup(function() proc.stop(c) end)
  assert.are.equal(0, proc.wait_exit(c, 30), c:stderr())
  assert.are.equal("CLIENT: You got remote data => Hello\n", c:stdout())
  -- the installed command's tools: the server counted the client's call
  local i = proc.spawn({ "env", "-i", bin, "inspect", "--stats",
    string.format("PYRO:ServiceName@%s:%d", HOST, port) }, { cwd = "/" })
  cleanup(function() proc.stop(i) end)
  assert.are.equal(0, proc.wait_exit(i, 30), i:stderr())
  assert.truthy(i:stdout():find("\nmethods: get_data\n.*\ncalls: 1 %(errors: 0, in flight: 0%)\n"), i:stdout())
  proc.kill(server, "sigterm")
  assert.are.equal(0, proc.wait_exit(server, 10), server:stderr())
end

describe("installing springrun #net", function()
  it("make install PREFIX=... runs with an empty environment; make uninstall removes it all", function()
    local cleanup = proc.cleanups(finally)
    local prefix, ex = tmpdir(cleanup), tmpdir(cleanup)
    local vars = "PREFIX=" .. proc.shquote(prefix) .. " SANITIZE=" .. SAN
    sh("make -s install " .. vars)
    local got = files(prefix)
    for _, f in ipairs({ "bin/springrun", "lib/lua/5.4/springrun/core.so", "share/lua/5.4/springrun/init.lua",
        "share/lua/5.4/springrun/cli.lua", "share/man/man1/springrun.1" }) do
      assert.is_truthy(got[1] and table.concat(got, "\n"):find(f, 1, true), f .. " not installed")
    end
    copy_examples(ex)
    server_and_client(cleanup, prefix .. "/bin/springrun", ex)
    -- --env names this prefix, and plain lua5.4 finds springrun with it
    local env = sh("env -i " .. proc.shquote(prefix .. "/bin/springrun") .. " --env")
    assert.are.equal(string.format("export LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;;'\n"
      .. "export LUA_CPATH='%s/lib/lua/5.4/?.so;;'\n", prefix, prefix, prefix), env)
    if SAN == "" then
      local out = sh("env -i PATH=/usr/bin:/bin sh -c " .. proc.shquote("eval \"$(" .. prefix
        .. "/bin/springrun --env)\"; cd / && lua5.4 -e 'print(package.searchpath(\"springrun.cli\", package.path))'"))
      assert.are.equal(prefix .. "/share/lua/5.4/springrun/cli.lua\n", out)
    end
    -- the man page is a man page
    assert.truthy(sh("man -l " .. proc.shquote(prefix .. "/share/man/man1/springrun.1") .. " | cat")
      :find("springrun", 1, true))
    sh("make -s uninstall " .. vars)
    assert.are.same({}, files(prefix))
    assert.are.equal("", proc.run("cd " .. proc.shquote(prefix) .. " && find . -mindepth 1"))
  end)

  it("luarocks make --tree ... installs a command that runs the examples from that tree alone", function()
    local cleanup = proc.cleanups(finally)
    local tree, ex = tmpdir(cleanup), tmpdir(cleanup)
    local out = sh("luarocks --lua-version 5.4 make rockspec/springrun-scm-1.rockspec --tree "
      .. proc.shquote(tree) .. " --deps-mode=none")
    assert.truthy(out:find("springrun scm-1 is now installed in " .. tree, 1, true), out)
    local got = table.concat(files(tree), "\n")
    for _, f in ipairs({ "bin/springrun", "lib/lua/5.4/springrun/core.so", "share/lua/5.4/springrun/init.lua",
        "lib/luarocks/rocks-5.4/springrun/scm-1/doc/springrun.1" }) do
      assert.truthy(got:find(f, 1, true), f .. " not in the tree:\n" .. got)
    end
    copy_examples(ex)
    server_and_client(cleanup, tree .. "/bin/springrun", ex)
    local env = sh("env -i " .. proc.shquote(tree .. "/bin/springrun") .. " --env")
    assert.truthy(env:find("export LUA_PATH='" .. tree .. "/share/lua/5.4/?.lua;", 1, true), env)
  end)
end)
