-- springrun from its git repository's main branch (releases have their own
-- rockspec, springrun-<version>-1.rockspec, pointing at the release tag).
-- The source URL names the project's public repository, which does not
-- exist yet: until then install from a checkout (luarocks make).
--   luarocks make rockspec/springrun-scm-1.rockspec            (from a checkout)
--   luarocks install springrun-scm-1.rockspec                  (fetches the source)
--   luarocks test rockspec/springrun-scm-1.rockspec            (runs the specs with busted)
-- The C core is built by the Makefile; the paths of the external libraries
-- LuaRocks found are passed to it (LIBUV_*, OPENSSL_*, ZLIB_*, CURL_*,
-- DOUBLE_CONVERSION_*, FAST_FLOAT_INCDIR). The
-- springrun command goes to the tree's bin/ and finds the tree's modules
-- from its own location (src/main.c), so no LUA_PATH is needed.
rockspec_format = "3.0"
package = "springrun"
version = "scm-1"
source = {
  url = "git+https://github.com/springrun/springrun.git",
  branch = "main",
}
description = {
  summary = "Remoting runtime for Lua 5.4 with a C core: Pyro4-compatible wire, IoC container",
  detailed = [[
Export a Lua object on a host:port and call it from anywhere through a proxy;
Python Pyro4 programs are peers (JSON and serpent payloads, TLS, handshake
secrets, a name server). Which objects exist and which are remote is
configuration: Lua context scripts in the style of Spring Python.]],
  homepage = "https://github.com/springrun/springrun",
  license = "Apache-2.0",
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "luv",
  "lua-cjson",
  "luaexpat",
}
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
  ZLIB = { header = "zlib.h", library = "z" },
  -- no header: Debian keeps curl/curl.h in the multiarch include directory,
  -- where the compiler looks but LuaRocks 3.8 does not
  CURL = { library = "curl" },
  DOUBLE_CONVERSION = { header = "double-conversion/double-conversion.h", library = "double-conversion" },
  FAST_FLOAT = { header = "fast_float/fast_float.h" },
}
test_dependencies = { "busted" }
test = { type = "busted" }
build = {
  type = "make",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LIBUV_INCDIR = "$(LIBUV_INCDIR)", LIBUV_LIBDIR = "$(LIBUV_LIBDIR)",
    OPENSSL_INCDIR = "$(OPENSSL_INCDIR)", OPENSSL_LIBDIR = "$(OPENSSL_LIBDIR)",
    ZLIB_INCDIR = "$(ZLIB_INCDIR)", ZLIB_LIBDIR = "$(ZLIB_LIBDIR)",
    CURL_INCDIR = "$(CURL_INCDIR)", CURL_LIBDIR = "$(CURL_LIBDIR)",
    DOUBLE_CONVERSION_INCDIR = "$(DOUBLE_CONVERSION_INCDIR)",
    DOUBLE_CONVERSION_LIBDIR = "$(DOUBLE_CONVERSION_LIBDIR)",
    FAST_FLOAT_INCDIR = "$(FAST_FLOAT_INCDIR)",
  },
  install_variables = {
    PREFIX = "$(PREFIX)",
    BINDIR = "$(BINDIR)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    MANDIR = "$(PREFIX)/doc",
  },
}
