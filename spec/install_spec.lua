-- Installing springrun: `make install PREFIX=...` / `make uninstall` and
-- `luarocks make --tree ...` into temporary directories; the installed
-- command then runs the seed's server and client (copied out of the
-- checkout) with an empty environment, from another working directory;
-- and `luarocks test` runs specs as the rockspec says.
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
    local out = sh("env -i PATH=/usr/bin:/bin sh -c " .. proc.shquote("eval \"$(" .. prefix
      .. "/bin/springrun --env)\"; cd / && lua5.4 -e 'print(package.searchpath(\"springrun.cli\", package.path))'"))
    assert.are.equal(prefix .. "/share/lua/5.4/springrun/cli.lua\n", out)
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

  -- The rockspec's test_dependencies name the busted rock; the registry is
  -- not reachable here, so Debian's busted (lua-busted) is registered as
  -- that rock in a scratch tree (LuaRocks' own wrapper runs it with
  -- lua5.4), the tree being the only one LuaRocks is told of.
  it("luarocks test runs the specs with busted, as the rockspec and .busted say", function()
    local cleanup = proc.cleanups(finally)
    local tree, shim = tmpdir(cleanup), tmpdir(cleanup)
    local version = sh("lua5.4 /usr/bin/busted --version"):match("^(%d[%d.]*)")
    assert.truthy(version, "no busted version")
    sh("cp /usr/bin/busted " .. proc.shquote(shim .. "/busted"))
    local spec = assert(io.open(shim .. "/busted-" .. version .. "-1.rockspec", "w"))
    spec:write(string.format([[
rockspec_format = "3.0"
package = "busted"
version = "%s-1"
source = { url = "file:///usr/bin/busted" }
description = { summary = "Debian's busted (lua-busted) as a rock" }
dependencies = { "lua >= 5.1" }
build = { type = "builtin", modules = {}, install = { bin = { busted = "busted" } } }
]], version))
    spec:close()
    sh("cd " .. proc.shquote(shim) .. " && luarocks --lua-version 5.4 make busted-" .. version
      .. "-1.rockspec --tree " .. proc.shquote(tree) .. " --deps-mode=none")
    local config = tree .. "/config.lua"
    local f = assert(io.open(config, "w"))
    f:write(string.format("rocks_trees = { { name = 'scratch', root = %q } }\n", tree))
    f:close()
    local out = sh("cd " .. proc.shquote(proc.root) .. " && LUAROCKS_CONFIG=" .. proc.shquote(config)
      .. " luarocks --lua-version 5.4 test rockspec/springrun-scm-1.rockspec -- spec/uri_spec.lua spec/json_spec.lua")
    local ok = out:match("\n(%d+) successes / 0 failures / 0 errors / 0 pending")
    assert.truthy(ok, out)
    assert.is_true(tonumber(ok) > 100, out)
    assert.truthy(out:find("springrun scm-1 depends on busted (" .. version .. "-1 installed)", 1, true), out)
    -- a failing spec fails luarocks test
    local bad = proc.tmpfile([[describe("x", function() it("fails", function() assert.are.equal(1, 2) end) end)]],
      "_spec.lua")
    cleanup(function() os.remove(bad) end)
    local out2, okrun = proc.run("cd " .. proc.shquote(proc.root) .. " && LUAROCKS_CONFIG=" .. proc.shquote(config)
      .. " luarocks --lua-version 5.4 test rockspec/springrun-scm-1.rockspec -- " .. proc.shquote(bad) .. " 2>&1")
    assert.is_false(okrun == true, out2)
    assert.truthy(out2:find("0 successes / 1 failure", 1, true), out2)
  end)
end)
