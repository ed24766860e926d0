-- Loaded by busted (--helper, see the Makefile's test rule) before any spec
-- file, so outside busted's per-file insulation: modules with process-wide C
-- state stay loaded for the whole run. Without this, a spec file that loads
-- luv (directly or through springrun.core) has it unloaded afterwards; once
-- that module is collected, luv's loop is gone while luv still points to it,
-- and the next file that makes a handle crashes in uv_tcp_init_ex
-- (reproduced with: a spec requiring springrun.core + collectgarbage(), then
-- spec/daemon_spec.lua).
local uv = require "luv"

-- make test SANITIZE=1 preloads the ASan runtime into this interpreter;
-- children (Python, sh, bin/springrun-san which links it itself) must not
-- inherit it. A spec that runs a plain lua5.4 on the sanitizer build's core
-- passes it on by hand (helpers.proc's `lua`), so it is kept under another
-- name.
if os.getenv("SPRINGRUN_SANITIZE") then
  uv.os_setenv("SPRINGRUN_ASAN_PRELOAD", os.getenv("LD_PRELOAD") or "")
  uv.os_unsetenv("LD_PRELOAD")
end
