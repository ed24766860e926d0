/*
 * lsr_task.c -- task coroutines: every incoming remote call, and every
 * runtime.spawn, runs in a coroutine of its own (the threading contract,
 * rule 4), started and resumed here. This is the one task pool of the
 * process; springrun.runtime is its Lua face.
 *
 *   core.task_new(tasks, report) -> spawn, resume, count
 *     tasks: runtime's table co -> true of the live tasks (weak keys);
 *     report(co, err): called for a task that failed (its coroutine is
 *     dropped, never reused).
 *   spawn(fn, ...) -> co        runs fn(...) in a task now, until it
 *                               returns, fails or yields (waiting for I/O)
 *   resume(co, ...) -> true [, yielded...] | false, err
 *                               resumes a task that yielded (a luv callback
 *                               calls it); the caller checked tasks[co]
 *
 * A task that failed is reset once reported (lua_resetthread): the values
 * it marked to-be-closed are closed then, not when it is collected (the
 * server's dispatch counts a call's end that way, lsr_serve.c).
 *   count() -> n                tasks started and not finished
 *
 * Why in C: a call that returns in its first resume -- nearly every
 * incoming call -- costs a lua_resume and nothing else: no Lua function,
 * coroutine.resume or end-of-task yield in between. A coroutine whose
 * function returned goes back to a pool (creating a coroutine and its stack
 * is a good share of a small call) and runs the next spawn. Each state that
 * calls task_new (the main one, a luv thread's) gets its own pool.
 */
#include "lsr.h"

/* Upvalue 1 of spawn/resume/count: the pool's state, a userdata whose user
 * values are the tasks table, report and the pool (a sequence). */
typedef struct lsr_tasks_s {
  lua_Integer count; /* started, not finished */
  int npool;         /* finished coroutines in the pool: 1..npool */
} lsr_tasks_t;

#define TASK_POOL_MAX 64
enum { UV_TASKS = 1, UV_REPORT, UV_POOL };

#define STATE_IDX lua_upvalueindex(1)

static lsr_tasks_t *state(lua_State *L) { return lua_touserdata(L, STATE_IDX); }

/* tasks[co] = v (true, or nil to forget) for the coroutine at co_idx. */
static void mark(lua_State *L, int co_idx, int alive) {
  lua_getiuservalue(L, STATE_IDX, UV_TASKS);
  lua_pushvalue(L, co_idx);
  if (alive)
    lua_pushboolean(L, 1);
  else
    lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* The task at co_idx finished: forgotten, and its coroutine pooled when
 * its function returned (status OK, stack emptied here). */
static void retire(lua_State *L, int co_idx, lua_State *co, int returned) {
  lsr_tasks_t *s = state(L);
  mark(L, co_idx, 0);
  s->count--;
  if (!returned || s->npool >= TASK_POOL_MAX) return;
  lua_settop(co, 0);
  lua_getiuservalue(L, STATE_IDX, UV_POOL);
  lua_pushvalue(L, co_idx);
  lua_rawseti(L, -2, ++s->npool); /* preallocated: allocates nothing */
  lua_pop(L, 1);
}

/* report(co, err) for the failed task at co_idx; err is on co's top. */
static void report(lua_State *L, int co_idx, lua_State *co) {
  lua_getiuservalue(L, STATE_IDX, UV_REPORT);
  lua_pushvalue(L, co_idx);
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1);
  lua_call(L, 2, 0);
}

/* spawn(fn, ...) -> co */
static int l_spawn(lua_State *L) {
  lsr_tasks_t *s = state(L);
  int nargs = lua_gettop(L) - 1;
  lua_State *co;
  if (s->npool > 0) {
    lua_getiuservalue(L, STATE_IDX, UV_POOL);
    lua_rawgeti(L, -1, s->npool);
    lua_pushnil(L);
    lua_rawseti(L, -3, s->npool--); /* the pool does not keep a running task alive */
    lua_remove(L, -2);
    co = lua_tothread(L, -1);
  } else {
    co = lua_newthread(L);
  }
  lua_insert(L, 1); /* co, fn, args */
  if (!lua_checkstack(co, nargs + 1)) return luaL_error(L, "task spawn: too many arguments");
  mark(L, 1, 1);
  s->count++;
  lua_xmove(L, co, nargs + 1);
  int nres = 0;
  int st = lua_resume(co, L, nargs, &nres);
  if (st == LUA_YIELD) { /* waiting for I/O: resume goes on with it */
    lua_pop(co, nres);
  } else if (st == LUA_OK) {
    retire(L, 1, co, 1);
  } else {
    retire(L, 1, co, 0);
    report(L, 1, co);
    lua_resetthread(co);
  }
  lua_settop(L, 1);
  return 1;
}

/* resume(co, ...) -> true [, yielded...] | false, err */
static int l_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "coroutine expected");
  int nargs = lua_gettop(L) - 1;
  if (!lua_checkstack(co, nargs)) return luaL_error(L, "task resume: too many arguments");
  lua_xmove(L, co, nargs);
  int nres = 0;
  int st = lua_resume(co, L, nargs, &nres);
  if (st == LUA_YIELD) {
    luaL_checkstack(L, nres + 1, "task resume");
    lua_pushboolean(L, 1);
    lua_xmove(co, L, nres);
    return nres + 1;
  }
  if (st == LUA_OK) {
    retire(L, 1, co, 1);
    lua_pushboolean(L, 1);
    return 1;
  }
  retire(L, 1, co, 0);
  report(L, 1, co);
  lua_pushboolean(L, 0);
  lua_xmove(co, L, 1);
  lua_resetthread(co);
  return 2;
}

static int l_count(lua_State *L) {
  lua_pushinteger(L, state(L)->count);
  return 1;
}

/* task_new(tasks, report) -> spawn, resume, count */
static int l_task_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lsr_tasks_t *s = lua_newuserdatauv(L, sizeof *s, 3);
  s->count = 0;
  s->npool = 0;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, UV_TASKS);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, UV_REPORT);
  lua_createtable(L, TASK_POOL_MAX, 0);
  lua_setiuservalue(L, -2, UV_POOL);
  int ud = lua_gettop(L);
  lua_pushvalue(L, ud);
  lua_pushcclosure(L, l_spawn, 1);
  lua_pushvalue(L, ud);
  lua_pushcclosure(L, l_resume, 1);
  lua_pushvalue(L, ud);
  lua_pushcclosure(L, l_count, 1);
  return 3;
}

void lsr_open_task(lua_State *L) {
  lua_pushcfunction(L, l_task_new);
  lua_setfield(L, -2, "task_new");
}
