/*
 * main.c -- the `springrun` executable: embeds Lua 5.4, points package.path
 * and package.cpath at the modules that belong with it (the checkout it runs
 * from, or the prefix it is installed in: make install PREFIX=P and a
 * LuaRocks tree both put it in P/bin, the Lua modules in P/share/lua/5.4 and
 * the core in P/lib/lua/5.4), builds `arg`, and hands the command line to
 * springrun.cli.main, whose return value is the exit status. Everything else
 * happens in Lua. Deriving the paths from the executable's own location is
 * what lets an installed springrun run with an empty environment from any
 * prefix.
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

#include <readline/history.h>
#include <readline/readline.h>

#include "lsr.h"

#define SR_LUA_VERSION LUA_VERSION_MAJOR "." LUA_VERSION_MINOR

enum layout { LAYOUT_NONE, LAYOUT_CHECKOUT, LAYOUT_PREFIX };

/* Fills root (PATH_MAX bytes) with the directory above the executable's bin/
 * and says what it is: a checkout (<root>/lua/springrun/init.lua), an
 * installed prefix (<root>/share/lua/5.4/springrun/init.lua), or neither. */
static enum layout find_root(char *root) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return LAYOUT_NONE;
  exe[n] = '\0';
  char *bindir = dirname(exe); /* modifies exe in place */
  char top[PATH_MAX + 8];
  snprintf(top, sizeof top, "%s/..", bindir);
  if (realpath(top, root) == NULL) return LAYOUT_NONE;
  char probe[PATH_MAX + 64];
  snprintf(probe, sizeof probe, "%s/lua/springrun/init.lua", root);
  if (access(probe, R_OK) == 0) return LAYOUT_CHECKOUT;
  snprintf(probe, sizeof probe, "%s/share/lua/" SR_LUA_VERSION "/springrun/init.lua", root);
  if (access(probe, R_OK) == 0) return LAYOUT_PREFIX;
  return LAYOUT_NONE;
}

/* Prepends path (a pushed string) to package[field]; pops it. */
static void prepend_path(lua_State *L, const char *field) {
  lua_getglobal(L, "package");
  lua_insert(L, -2);
  lua_getfield(L, -2, field);
  lua_concat(L, 2);
  lua_setfield(L, -2, field);
  lua_pop(L, 1);
}

/* ---- springrun.readline: GNU readline's callback interface for `springrun -i`
 *
 * The prompt must not block the loop (exporters keep serving while it waits),
 * so springrun.repl watches stdin with a luv poll handle and calls
 * read_char() when it is readable; readline hands a finished line to
 * on_line, which parks it here and removes the handler (the terminal goes
 * back to normal mode while the line runs; install() shows the next prompt).
 * Signals are not readline's: the REPL handles SIGINT (cancel()) on the loop.
 */
static char *rl_pending;  /* the finished line; owned here until pushed */
static int rl_state;      /* 0 nothing yet, 1 a line, 2 end of input */

static void on_line(char *line) {
  free(rl_pending);
  rl_pending = line;
  rl_state = line ? 1 : 2;
  rl_callback_handler_remove();
}

/* install(prompt): shows prompt and starts reading a line. */
static int rl_l_install(lua_State *L) {
  const char *prompt = luaL_checkstring(L, 1);
  rl_catch_signals = 0;
  rl_catch_sigwinch = 0;
  rl_callback_handler_install(prompt, on_line);
  return 0;
}

/* read_char() -> the line when one is finished, false at end of input
 * (Ctrl-D on an empty line), nothing otherwise. */
static int rl_l_read_char(lua_State *L) {
  rl_state = 0;
  rl_callback_read_char();
  if (rl_state == 2) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (rl_state != 1) return 0;
  lua_pushstring(L, rl_pending); /* on a memory error rl_pending stays owned here */
  free(rl_pending);
  rl_pending = NULL;
  return 1;
}

/* cancel(): drops the line being edited (Ctrl-C) and stops reading; the
 * caller installs the prompt again. */
static int rl_l_cancel(lua_State *L) {
  (void)L;
  rl_replace_line("", 0);
  rl_free_line_state();
  rl_callback_sigcleanup();
  rl_crlf();
  rl_callback_handler_remove();
  return 0;
}

/* remove(): stops reading and restores the terminal (idempotent). */
static int rl_l_remove(lua_State *L) {
  (void)L;
  rl_callback_handler_remove();
  free(rl_pending);
  rl_pending = NULL;
  return 0;
}

static int rl_l_add_history(lua_State *L) {
  add_history(luaL_checkstring(L, 1));
  return 0;
}

static int luaopen_springrun_readline(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "install", rl_l_install },     { "read_char", rl_l_read_char },
    { "cancel", rl_l_cancel },       { "remove", rl_l_remove },
    { "add_history", rl_l_add_history }, { NULL, NULL },
  };
  rl_readline_name = "springrun";
  /* pasting several lines sends them as lines (each one handled as typed) */
  rl_variable_bind("enable-bracketed-paste", "off");
  using_history();
  luaL_newlib(L, funcs);
  return 1;
}

/* Runs in protected mode: argv as light userdata pair. */
static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  luaL_openlibs(L);

  char root[PATH_MAX];
  enum layout layout = find_root(root);
  if (layout == LAYOUT_CHECKOUT) {
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", root, root);
    prepend_path(L, "path");
    lua_pushfstring(L, "%s/" SR_BUILD_DIR "/?.so;", root);
    prepend_path(L, "cpath");
  } else if (layout == LAYOUT_PREFIX) {
    lua_pushfstring(L, "%s/share/lua/" SR_LUA_VERSION "/?.lua;%s/share/lua/" SR_LUA_VERSION
                       "/?/init.lua;", root, root);
    prepend_path(L, "path");
    lua_pushfstring(L, "%s/lib/lua/" SR_LUA_VERSION "/?.so;", root);
    prepend_path(L, "cpath");
  }

  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_springrun_readline);
  lua_setfield(L, -2, "springrun.readline");
  lua_pop(L, 1);

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
  if (layout != LAYOUT_NONE)
    lua_pushstring(L, root);
  else
    lua_pushnil(L);
  lua_pushstring(L, argv[0]);
  if (layout == LAYOUT_CHECKOUT)
    lua_pushliteral(L, "checkout");
  else if (layout == LAYOUT_PREFIX)
    lua_pushliteral(L, "prefix");
  else
    lua_pushnil(L);
  if (lua_pcall(L, 4, 1, msgh) != LUA_OK) return lua_error(L);
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
