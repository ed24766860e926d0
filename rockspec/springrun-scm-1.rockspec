rockspec_format = "3.0"
package = "springrun"
version = "scm-1"
source = { url = "git+file:///dev/null" }
description = {
  summary = "Remoting runtime for Lua 5.4 with a C core: Pyro4-compatible wire, IoC container",
  license = "Apache-2.0",
}
dependencies = { "lua >= 5.4, < 5.5" }
build = {
  type = "make",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LUA_INCDIR = "$(LUA_INCDIR)",
  },
  install_variables = {
    PREFIX = "$(PREFIX)",
    BINDIR = "$(BINDIR)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
  },
}
