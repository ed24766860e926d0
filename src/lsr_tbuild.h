/*
 * lsr_tbuild.h -- building the tables of decoded lists and maps at their
 * final size, shared by the JSON and serpent decoders.
 *
 * Growing a table one key at a time rehashes it at every power of two (a
 * 10,000-item list: 14 rehashes, each walking or moving everything so far).
 * Instead the values wait on the Lua stack above a placeholder slot, and the
 * table is created once their number is known, with that many slots:
 *   lsr_tb_begin   pushes the placeholder (nil);
 *   lsr_tb_added   after each item is pushed (a list's value, or a map's
 *                  key then value): when the values waiting fill the room,
 *                  the room grows (lua_checkstack, up to LSR_TB_MAX slots) or,
 *                  at the cap or when the stack refuses, they are flushed into
 *                  the table (created then, at their count: later flushes
 *                  grow it the usual way);
 *   lsr_tb_end     sets the rest; the table replaces the placeholder and is
 *                  the top of the stack.
 * Map pairs are set in the order they came, so a repeated key keeps its last
 * value. A container's first item still waits on the stack when its second
 * is added (serpent's "(x)" takes it from there). Deep nesting holds at most
 * the room each level was granted; a level the stack cannot grow for flushes
 * in smaller chunks, so the same path serves every depth.
 */
#ifndef SR_LSR_TBUILD_H
#define SR_LSR_TBUILD_H

#include "lsr.h"

/* Room (stack slots for waiting values) a container starts with: a small
 * call's params and kwargs fit without growing it. */
#define LSR_TB_FIRST 8
/* Most slots one container's waiting values may take: a list of up to
 * 16,384 items is made in one go (256 KB of stack while it waits). */
#define LSR_TB_MAX 16384
/* Rooms grow only below this stack slot (of the decoder's C call): with
 * LSR_TB_FIRST + 5 slots per level at SR_DECODE_MAX_DEPTH levels on top,
 * the stack stays well under LUAI_MAXSTACK. */
#define LSR_TB_STACK 65536

typedef struct lsr_tbuild_s {
  int slot;      /* the placeholder's stack slot: nil, then the table */
  int waiting;   /* values waiting above slot (map: 2 per pair) */
  int room;      /* most values that may wait before lsr_tb_make_room */
  int map;       /* 1: a map (key, value pairs), 0: a list */
  int mt;        /* stack slot of the metatable to give the table, 0: none */
  int made;      /* the table exists (at slot) */
  lua_Integer n; /* list items already in the table */
} lsr_tbuild_t;

/* Stack slots kept free above the waiting values: a flush pushes a key and
 * a value (pushvalue) before setting them. */
#define LSR_TB_SPARE 4

/* Pushes the placeholder of a list (map 0) or map (map 1) whose table gets
 * the metatable at stack slot mt (0: none). Returns 0, or -1 with nothing
 * pushed when the Lua stack cannot grow by the first room. */
static inline int lsr_tb_begin(lua_State *L, lsr_tbuild_t *b, int map, int mt) {
  if (!lua_checkstack(L, 1 + LSR_TB_FIRST + LSR_TB_SPARE)) return -1;
  lua_pushnil(L);
  b->slot = lua_gettop(L);
  b->waiting = 0;
  b->room = LSR_TB_FIRST;
  b->map = map;
  b->mt = mt;
  b->made = 0;
  b->n = 0;
  return 0;
}

/* The slow half of lsr_tb_added. */
void lsr_tb_make_room(lua_State *L, lsr_tbuild_t *b);

/* After a list's value, or a map's key and value, were pushed. */
static inline void lsr_tb_added(lua_State *L, lsr_tbuild_t *b) {
  b->waiting += 1 + b->map;
  if (b->waiting >= b->room) lsr_tb_make_room(L, b);
}

/* Sets what still waits; the finished table is at b->slot, the top. */
void lsr_tb_end(lua_State *L, lsr_tbuild_t *b);

#endif
