/*
 * main.c -- the `springrun` executable: embeds Lua 5.4, points package.path
 * and package.cpath at the checkout it runs from (when it runs from one),
 * builds `arg`, and hands the command line to springrun.cli.main, whose
 * return value is the exit status. Everything else happens in Lua.
 */
/* The build directory of the checkout whose core this CLI loads (the
 * Makefile passes build-san for the sanitizer build). */
#ifndef SR_BUILD_DIR
#define SR_BUILD_DIR "build"
#endif

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <libgen.h>
#include <signal.h>
#include <sys/resource.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lsr.h"

/* Fills root with the checkout's top directory when the executable lives in
 * <root>/bin and <root>/lua/springrun/init.lua exists; returns 1 if so. */
static int find_checkout(char *root, size_t cap) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return 0;
  exe[n] = '\0';
  char *bindir = dirname(exe); /* modifies exe in place */
  char probe[PATH_MAX + 64];
  snprintf(probe, sizeof probe, "%s/../lua/springrun/init.lua", bindir);
  if (access(probe, R_OK) != 0) return 0;
  char top[PATH_MAX + 8];
  snprintf(top, sizeof top, "%s/..", bindir);
  if (realpath(top, root) == NULL) return 0;
  (void)cap;
  return 1;
}

/* Runs in protected mode: argv as light userdata pair. */
static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  luaL_openlibs(L);

  char root[PATH_MAX];
  int in_checkout = find_checkout(root, sizeof root);
  if (in_checkout) {
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", root, root);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pushfstring(L, "%s/" SR_BUILD_DIR "/?.so;", root);
    lua_getfield(L, -2, "cpath");
    lua_concat(L, 2);
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
  }

  /* arg: arg[0] = argv[0] for now; the CLI re-bases it on the script. */
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_setglobal(L, "arg");

  lua_pushcfunction(L, lsr_traceback);
  int msgh = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "springrun.cli");
  if (lua_pcall(L, 1, 1, msgh) != LUA_OK) return lua_error(L);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  if (in_checkout)
    lua_pushstring(L, root);
  else
    lua_pushnil(L);
  lua_pushstring(L, argv[0]);
  if (lua_pcall(L, 3, 1, msgh) != LUA_OK) return lua_error(L);
  return 1;
}

int main(int argc, char **argv) {
  /* a peer that closes while a reply is being written must cost that
   * connection only: writes fail with EPIPE instead of ending the process */
  signal(SIGPIPE, SIG_IGN);
  /* a server's connections are its open files: take all the system allows
   * this process (the soft limit is often 1024, the hard one much more) */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fputs("springrun: cannot create Lua state (out of memory)\n", stderr);
    return 1;
  }
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 0);
  int rc;
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "springrun: %s\n", msg ? msg : "(error object is not a string)");
    rc = 1;
  } else {
    rc = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : (lua_toboolean(L, -1) ? 0 : 1);
  }
  fflush(stdout);
  lua_close(L);
  return rc;
}
