/*
 * lsr_tbuild.c -- decoded lists and maps built at their final size (see
 * lsr_tbuild.h): the values wait on the Lua stack, the table is created
 * once their number is known.
 */
#include "lsr_tbuild.h"

/* Moves the waiting values into the table, creating it at their count
 * when this is the first flush (the end of a container is one more). */
void lsr_tb_end(lua_State *L, lsr_tbuild_t *b) {
  int w = b->waiting, slot = b->slot, t = slot, k;
  lua_Integer n = b->n;
  b->waiting = 0;
  if (!b->made) {
    b->made = 1;
    if (w == 0) lua_pop(L, 1); /* an empty container: the table takes the slot */
    lua_createtable(L, b->map ? 0 : w, b->map ? w / 2 : 0);
    if (b->mt) {
      lua_pushvalue(L, b->mt);
      lua_setmetatable(L, -2);
    }
    if (w == 0) return;
    if (!b->map) {
      /* the array part holds exactly these: any order fills it, and
       * popping from the top needs no copies */
      lua_replace(L, slot);
      for (k = w; k > 0; k--) lua_rawseti(L, slot, k);
      b->n = w;
      return;
    }
    t = lua_gettop(L); /* the new map, above its pairs until they are set */
  }
  if (b->map) {
    for (k = 1; k < w; k += 2) { /* in order: a repeated key keeps its last value */
      lua_pushvalue(L, slot + k);
      lua_pushvalue(L, slot + k + 1);
      lua_rawset(L, t);
    }
  } else {
    for (k = 1; k <= w; k++) {
      lua_pushvalue(L, slot + k);
      lua_rawseti(L, slot, n + k);
    }
    b->n = n + w;
  }
  if (t != slot) lua_copy(L, t, slot);
  if (t != slot || w) lua_settop(L, slot);
}

void lsr_tb_make_room(lua_State *L, lsr_tbuild_t *b) {
  /* the waiting values fill the room: double it while that stays under
   * LSR_TB_STACK and the stack grants the slots, else set them now. The
   * bound keeps every request far from Lua's own limit (LUAI_MAXSTACK),
   * where a refused lua_checkstack would leave the stack at its error
   * size: a deep document of big lists flushes in smaller chunks instead. */
  if (b->room < LSR_TB_MAX && b->slot + 2 * b->room + LSR_TB_SPARE <= LSR_TB_STACK &&
      lua_checkstack(L, b->room + LSR_TB_SPARE)) {
    b->room *= 2;
    return;
  }
  lsr_tb_end(L, b);
}
