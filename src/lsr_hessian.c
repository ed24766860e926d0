/*
 * lsr_hessian.c -- the Hessian codec between the Lua stack and bytes (the
 * reader and writers are hessian.c's), and its bindings in springrun.core:
 *   core.hessian_encode(v) -> bytes                  (one Hessian 2 value)
 *   core.hessian_decode(bytes, version, max_depth, max_elements, max_bytes, max_string) -> v
 *   core.hessian_encode_call(method, args, n) -> bytes      (H 02 00 C ...)
 *   core.hessian_encode_reply(v) -> bytes                   (H 02 00 R v)
 *   core.hessian_encode_fault(code, message, detail) -> bytes (H 02 00 F {...})
 *   core.hessian_decode_reply(bytes, limits...) -> "reply"|"fault", v, version
 *   core.hessian_decode_call(bytes, limits...) -> method, args, version
 *   core.hessian_mt: { binary, date, long, map } (metatables: the wrappers', untyped maps')
 * Each returns the fail tuple (nil, msg, errname) on error.
 *
 * Value mapping (the user-facing rules are in lua/springrun/hessian.lua):
 * a table's metatable field __hessian says what it is -- "list", "map",
 * "object" (with __jtype, the Java type or class name, and for objects
 * __fields, the field order), "binary" (field data), "date" (field ms),
 * "long" (field value); tables carrying the JSON array marker are untyped
 * lists; other tables are lists when their keys are exactly 1..n (n >= 1),
 * else maps. Every list, map and object is numbered in the order it starts,
 * so a table met again (shared or cyclic) is written as a back-reference,
 * and refs read back to the same Lua table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hessian.h"
#include "lsr_codec.h"

#define LSR_HESSIAN_READER_MT "springrun.hessian.reader"
#define MT_BINARY "springrun.hessian.binary"
#define MT_DATE "springrun.hessian.date"
#define MT_LONG "springrun.hessian.long"
#define MT_MAP "springrun.hessian.map"
/* Containers out of line: a scalar (most values) then costs a small
 * function's frame, not that of the container code inlined into it. */
#if defined(__GNUC__)
#define LSR_NOINLINE __attribute__((noinline))
#else
#define LSR_NOINLINE
#endif
/* Deepest nesting written (cycles become refs, so only real depth counts). */
#define ENC_MAX_DEPTH 1000
/* Path frames kept for error messages. */
#define ENC_PATH 64

/* ---- encoder ------------------------------------------------------------ */

/* The containers written so far, for back-references: an open-addressing
 * table of their addresses and ref numbers (linear probing, at most half
 * full), in a userdata on the stack that is replaced by one twice the size
 * as it fills. The tables themselves are anchored in a Lua list, so no
 * address can be reused by another table while the message is written. */
typedef struct seen_ent_s {
  const void *p;
  size_t ref;
} seen_ent_t;

typedef struct seen_set_s {
  size_t cap, n; /* cap: a power of 2 */
  seen_ent_t ent[];
} seen_set_t;

typedef struct enc_s {
  lua_State *L;
  sr_buf_t *out;
  char *err;
  size_t errlen;
  /* stack slots: the seen set's userdata (nil until the first container)
   * and its anchors (ref + 1 -> table), type name -> index, def key ->
   * index (and __fields list -> { class name -> index }) */
  int seen_ud, seen, types, defs;
  seen_set_t *set;
  /* the (__fields list, class name) met last and its definition: objects of
   * one class in a row skip the lookups in defs (both are keys there, so
   * neither address can be reused while the message is written) */
  const void *last_fields;
  const char *last_class;
  size_t last_def;
  /* the metatable of the object written last, when it has no metatable of
   * its own (so reading its fields runs no code), and that object's
   * definition: instances of one metatable skip reading __hessian, __jtype
   * and __fields again. The metatable and its __fields list are kept in
   * the stack slots omt and ofields, so neither address can be reused. */
  const void *obj_mt;
  size_t obj_def, obj_nf;
  int omt, ofields;
  size_t nrefs, ntypes, ndefs;
  int depth;
  struct {
    lua_Integer index; /* > 0: list index; < 0: field -index of the __fields list at keyslot */
    int keyslot;       /* else the stack slot of the map key / field name */
  } path[ENC_PATH];
} enc_t;

static int enc_value(enc_t *e, int idx);
static LSR_NOINLINE int enc_table(enc_t *e, int idx);

static int enc_fail(enc_t *e, int code, const char *what) {
  char path[512];
  size_t o = 0;
  path[0] = '\0';
  for (int i = 0; i < e->depth && i < ENC_PATH && o < sizeof path - 32; i++) {
    if (e->path[i].index > 0) {
      o += (size_t)snprintf(path + o, sizeof path - o, "[%lld]", (long long)e->path[i].index);
    } else if (e->path[i].index < 0) {
      /* the encoder checked this list's names are strings */
      lua_rawgeti(e->L, e->path[i].keyslot, -e->path[i].index);
      o += (size_t)snprintf(path + o, sizeof path - o, ".%.40s", lua_tostring(e->L, -1));
      lua_pop(e->L, 1);
    } else if (e->path[i].keyslot == 0) {
      continue;
    } else if (lua_type(e->L, e->path[i].keyslot) == LUA_TSTRING) {
      o += (size_t)snprintf(path + o, sizeof path - o, ".%.40s", lua_tostring(e->L, e->path[i].keyslot));
    } else {
      o += (size_t)snprintf(path + o, sizeof path - o, "[<%s key>]", luaL_typename(e->L, e->path[i].keyslot));
    }
  }
  if (o >= sizeof path) o = sizeof path - 1;
  return sr_seterr(e->err, e->errlen, code, "hessian: %s%s%s", what, o ? " at " : "", path);
}

static int enc_nomem(enc_t *e) { return enc_fail(e, SR_ENOMEM, "out of memory"); }

static int enc_string(enc_t *e, const char *s, size_t n) {
  size_t bad;
  int rc = sr_hessian_put_string(e->out, s, n, &bad);
  if (rc == SR_EUTF8) {
    char what[128];
    snprintf(what, sizeof what,
             "invalid UTF-8 at byte %zu of a string (send raw bytes with hessian.binary(s))", bad);
    return enc_fail(e, rc, what);
  }
  return rc ? enc_nomem(e) : 0;
}

/* What a table's metatable field __hessian says it is. */
enum { K_NONE, K_BINARY, K_DATE, K_LONG, K_LIST, K_MAP, K_OBJECT, K_OTHER };

/* The __hessian kind of the metatable at mt (K_NONE when it has none). */
static int mt_kind(lua_State *L, int mt) {
  lua_getfield(L, mt, "__hessian");
  const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the metatable still holds the string */
  if (k == NULL) return K_NONE;
  static const struct {
    const char *name;
    int kind;
  } kinds[] = {{"object", K_OBJECT}, {"list", K_LIST}, {"map", K_MAP},
               {"binary", K_BINARY}, {"date", K_DATE}, {"long", K_LONG}};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (k[0] == kinds[i].name[0] && strcmp(k, kinds[i].name) == 0) return kinds[i].kind;
  return K_OTHER;
}

/* Type index of name (entered in the type table when new: *tidx = -1). */
static void type_index(enc_t *e, const char *name, size_t len, int64_t *tidx) {
  lua_State *L = e->L;
  lua_pushlstring(L, name, len);
  if (lua_rawget(L, e->types) == LUA_TNUMBER) {
    *tidx = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushlstring(L, name, len);
  lua_pushinteger(L, (lua_Integer)e->ntypes++);
  lua_rawset(L, e->types);
  *tidx = -1;
}

static int enc_items(enc_t *e, int idx, lua_Integer len) {
  for (lua_Integer i = 1; i <= len; i++) {
    lua_rawgeti(e->L, idx, i);
    e->path[e->depth - 1 < ENC_PATH ? e->depth - 1 : 0].index = i;
    int rc = enc_value(e, lua_gettop(e->L));
    lua_pop(e->L, 1);
    if (rc) return rc;
  }
  return 0;
}

static int enc_pairs(enc_t *e, int idx) {
  lua_State *L = e->L;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = lua_gettop(L) - 1;
    if (e->depth - 1 < ENC_PATH) {
      e->path[e->depth - 1].index = 0;
      e->path[e->depth - 1].keyslot = k;
    }
    int rc = enc_value(e, k);
    if (rc == 0) rc = enc_value(e, k + 1);
    lua_pop(L, 1);
    if (rc) {
      lua_pop(L, 1);
      return rc;
    }
  }
  return sr_hessian_put_end(e->out) ? enc_nomem(e) : 0;
}

typedef struct fld_s {
  const char *s;
  size_t n;
} fld_t;

static int fld_cmp(const void *a, const void *b) {
  const fld_t *x = a, *y = b;
  size_t m = x->n < y->n ? x->n : y->n;
  int c = memcmp(x->s, y->s, m);
  return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* The definition of the object at idx (metatable at mt): its index in the
 * message's class table, written to the output first when new (once per
 * class and field list in a message). The field names are left in
 * *fields_slot (the __fields list) or, when the metatable has none, in f[0..nf)
 * (the table's string keys in byte order, in a userdata left on the stack). */
static int obj_def(enc_t *e, int idx, int mt, size_t *def, int *fields_slot, fld_t **fo,
                   size_t *nfo) {
  lua_State *L = e->L;
  int top = lua_gettop(L);
  lua_getfield(L, mt, "__jtype");
  if (lua_type(L, -1) != LUA_TSTRING)
    return enc_fail(e, SR_ETYPE, "an object table needs its class name (__jtype)");
  size_t nlen;
  const char *name = lua_tolstring(L, -1, &nlen);
  size_t nf = 0;
  if (lua_getfield(L, mt, "__fields") == LUA_TTABLE) {
    *fields_slot = lua_gettop(L);
    nf = (size_t)lua_rawlen(L, *fields_slot);
  } else {
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      if (lua_type(L, -1) == LUA_TSTRING) nf++;
    }
  }
  fld_t *f = lua_newuserdatauv(L, (nf ? nf : 1) * (sizeof(fld_t) + sizeof(char *) + sizeof(size_t)), 0);
  const char **fp = (const char **)(f + (nf ? nf : 1));
  size_t *fl = (size_t *)(fp + (nf ? nf : 1));
  if (*fields_slot) {
    for (size_t i = 0; i < nf; i++) {
      lua_rawgeti(L, *fields_slot, (lua_Integer)i + 1);
      if (lua_type(L, -1) != LUA_TSTRING)
        return enc_fail(e, SR_ETYPE, "an object's __fields must be a list of strings");
      f[i].s = lua_tolstring(L, -1, &f[i].n); /* the __fields table keeps it alive */
      lua_pop(L, 1);
    }
  } else {
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      if (lua_type(L, -1) == LUA_TSTRING) {
        f[i].s = lua_tolstring(L, -1, &f[i].n); /* the table being encoded keeps it alive */
        i++;
      }
    }
    qsort(f, nf, sizeof *f, fld_cmp);
  }
  *fo = f;
  *nfo = nf;
  luaL_Buffer kb;
  luaL_buffinit(L, &kb);
  luaL_addlstring(&kb, name, nlen);
  for (size_t i = 0; i < nf; i++) {
    luaL_addchar(&kb, '\0');
    luaL_addlstring(&kb, f[i].s, f[i].n);
  }
  luaL_pushresult(&kb);
  int key = lua_gettop(L);
  lua_pushvalue(L, key);
  if (lua_rawget(L, e->defs) == LUA_TNUMBER) {
    *def = (size_t)lua_tointeger(L, -1);
  } else {
    for (size_t i = 0; i < nf; i++) {
      fp[i] = f[i].s;
      fl[i] = f[i].n;
    }
    size_t bad;
    int rc = sr_hessian_put_def(e->out, name, nlen, nf, fp, fl, &bad);
    if (rc) return rc == SR_EUTF8 ? enc_fail(e, rc, "invalid UTF-8 in a class or field name") : enc_nomem(e);
    *def = e->ndefs++;
    lua_pushvalue(L, key);
    lua_pushinteger(L, (lua_Integer)*def);
    lua_rawset(L, e->defs);
  }
  if (*fields_slot) {
    /* later instances with this __fields list and class find the
     * definition as defs[__fields][class], without building the key */
    lua_pushvalue(L, *fields_slot);
    if (lua_rawget(L, e->defs) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, *fields_slot);
      lua_pushvalue(L, -2);
      lua_rawset(L, e->defs);
    }
    lua_pushvalue(L, top + 1); /* the class name */
    lua_pushinteger(L, (lua_Integer)*def);
    lua_rawset(L, -3);
    e->last_fields = lua_topointer(L, *fields_slot);
    e->last_class = lua_tostring(L, top + 1);
    e->last_def = *def;
  }
  return 0;
}

/* An object: class from __jtype (metatable at mt), fields from __fields or
 * the table's string keys in byte order. */
static int enc_object(enc_t *e, int idx, int mt, int same_mt) {
  lua_State *L = e->L;
  int top = lua_gettop(L), fields_slot = 0, rc = 0;
  fld_t *f = NULL;
  size_t nf = 0, def = 0;
  /* this class with this __fields list met before in the message? */
  int known = 0;
  if (same_mt) {
    /* a copy in this frame: a nested object of another class replaces
     * ofields, and the error path names fields from this slot */
    def = e->obj_def;
    nf = e->obj_nf;
    lua_pushvalue(L, e->ofields);
    fields_slot = top + 1;
  } else if (lua_getfield(L, mt, "__jtype") == LUA_TSTRING && lua_getfield(L, mt, "__fields") == LUA_TTABLE) {
    const void *fl = lua_topointer(L, top + 2);
    const char *cl = lua_tostring(L, top + 1);
    if (fl == e->last_fields && cl == e->last_class) {
      def = e->last_def;
      known = 1;
    } else {
      lua_pushvalue(L, top + 2);
      if (lua_rawget(L, e->defs) == LUA_TTABLE) {
        lua_pushvalue(L, top + 1);
        if ((known = lua_rawget(L, -2) == LUA_TNUMBER)) {
          def = (size_t)lua_tointeger(L, -1);
          e->last_fields = fl;
          e->last_class = cl;
          e->last_def = def;
        }
      }
    }
  }
  if (known) {
    fields_slot = top + 2;
    nf = (size_t)lua_rawlen(L, fields_slot);
  } else if (fields_slot == 0) {
    lua_settop(L, top);
    if ((rc = obj_def(e, idx, mt, &def, &fields_slot, &f, &nf))) {
      lua_settop(L, top);
      return rc;
    }
  }
  if (fields_slot && !same_mt) {
    if (lua_getmetatable(L, mt)) {
      lua_pop(L, 1);
    } else {
      lua_pushvalue(L, mt);
      lua_replace(L, e->omt);
      lua_pushvalue(L, fields_slot);
      lua_replace(L, e->ofields);
      e->obj_mt = lua_topointer(L, e->omt);
      e->obj_def = def;
      e->obj_nf = nf;
    }
  }
  if (sr_hessian_put_object(e->out, def)) {
    lua_settop(L, top);
    return enc_nomem(e);
  }
  int base = lua_gettop(L), pi = e->depth - 1 < ENC_PATH ? e->depth - 1 : -1;
  if (fields_slot) {
    /* per field: its name from the list, its value by raw lookup in place
     * of the name; the error path finds the name again by its index. The
     * values of a small object stay on the stack until its end (one settop
     * instead of one per field). */
    int keep = nf <= 16 && lua_checkstack(L, (int)nf + 2);
    if (pi >= 0) e->path[pi].keyslot = fields_slot;
    for (size_t i = 0; i < nf && rc == 0; i++) {
      if (pi >= 0) e->path[pi].index = -(lua_Integer)i - 1;
      lua_rawgeti(L, fields_slot, (lua_Integer)i + 1);
      lua_rawget(L, idx);
      rc = enc_value(e, keep ? base + 1 + (int)i : base + 1);
      if (!keep) lua_settop(L, base);
    }
  } else {
    for (size_t i = 0; i < nf && rc == 0; i++) {
      lua_pushlstring(L, f[i].s, f[i].n);
      if (pi >= 0) {
        e->path[pi].index = 0;
        e->path[pi].keyslot = base + 1;
      }
      lua_pushvalue(L, -1);
      lua_rawget(L, idx);
      rc = enc_value(e, base + 2);
      lua_settop(L, base);
    }
  }
  lua_settop(L, top);
  return rc;
}

static size_t seen_hash(const void *p, size_t cap) {
  return (size_t)((((uint64_t)(uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

/* The ref number of the table at address p, or -1 when not met yet. */
static int64_t seen_find(const enc_t *e, const void *p) {
  const seen_set_t *s = e->set;
  if (s == NULL) return -1;
  for (size_t i = seen_hash(p, s->cap);; i = (i + 1) & (s->cap - 1)) {
    if (s->ent[i].p == p) return (int64_t)s->ent[i].ref;
    if (s->ent[i].p == NULL) return -1;
  }
}

static void seen_put(seen_set_t *s, const void *p, size_t ref) {
  size_t i = seen_hash(p, s->cap);
  while (s->ent[i].p != NULL) i = (i + 1) & (s->cap - 1);
  s->ent[i].p = p;
  s->ent[i].ref = ref;
  s->n++;
}

/* Enters the table at idx as ref number ref. */
static void seen_add(enc_t *e, int idx, size_t ref) {
  lua_State *L = e->L;
  seen_set_t *s = e->set;
  if (s == NULL || (s->n + 1) * 2 > s->cap) {
    size_t cap = s ? s->cap * 2 : 64;
    seen_set_t *g = lua_newuserdatauv(L, sizeof *g + cap * sizeof g->ent[0], 0);
    g->cap = cap;
    g->n = 0;
    memset(g->ent, 0, cap * sizeof g->ent[0]);
    for (size_t i = 0; s && i < s->cap; i++)
      if (s->ent[i].p) seen_put(g, s->ent[i].p, s->ent[i].ref);
    lua_replace(L, e->seen_ud);
    e->set = s = g;
  }
  seen_put(s, lua_topointer(L, idx), ref);
  lua_pushvalue(L, idx);
  lua_rawseti(L, e->seen, (lua_Integer)ref + 1);
}

/* 1 when the table at idx has keys exactly 1..n, n >= 1 (*n set). */
static int is_sequence(lua_State *L, int idx, lua_Integer *n) {
  lua_Integer count = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
      lua_pop(L, 1);
      return 0;
    }
    lua_Integer k = lua_tointeger(L, -1);
    if (k > max) max = k;
    count++;
  }
  *n = count;
  return count > 0 && count == max;
}

static LSR_NOINLINE int enc_table(enc_t *e, int idx) {
  lua_State *L = e->L;
  int top = lua_gettop(L), rc = 0;
  int mt = lua_getmetatable(L, idx) ? lua_gettop(L) : 0;
  int same_mt = mt != 0 && lua_topointer(L, mt) == e->obj_mt;
  int kind = mt == 0 ? K_NONE : same_mt ? K_OBJECT : mt_kind(L, mt);
  if (kind == K_BINARY) {
    lua_getfield(L, idx, "data");
    size_t n;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (s == NULL) rc = enc_fail(e, SR_ETYPE, "a binary table needs a string field data");
    else if (sr_hessian_put_binary(e->out, s, n)) rc = enc_nomem(e);
    lua_settop(L, top);
    return rc;
  }
  if (kind == K_DATE || kind == K_LONG) {
    int date = kind == K_DATE;
    lua_getfield(L, idx, date ? "ms" : "value");
    if (!lua_isinteger(L, -1))
      rc = enc_fail(e, SR_ETYPE, date ? "a date table needs an integer field ms"
                                      : "a long table needs an integer field value");
    else if (date ? sr_hessian_put_date(e->out, lua_tointeger(L, -1))
                  : sr_hessian_put_long(e->out, lua_tointeger(L, -1)))
      rc = enc_nomem(e);
    lua_settop(L, top);
    return rc;
  }
  /* a container: a back-reference when met before */
  int64_t ref = seen_find(e, lua_topointer(L, idx));
  if (ref >= 0) {
    rc = sr_hessian_put_ref(e->out, (size_t)ref) ? enc_nomem(e) : 0;
    lua_settop(L, top);
    return rc;
  }
  if (e->depth >= ENC_MAX_DEPTH || !lua_checkstack(L, 12)) {
    lua_settop(L, top);
    char what[64];
    snprintf(what, sizeof what, "nesting too deep (more than %d levels)", ENC_MAX_DEPTH);
    return enc_fail(e, SR_EDEPTH, what);
  }
  seen_add(e, idx, e->nrefs++);
  if (e->depth < ENC_PATH) {
    e->path[e->depth].index = 0;
    e->path[e->depth].keyslot = 0;
  }
  e->depth++;
  const char *jtype = NULL;
  size_t jlen = 0;
  if (kind == K_LIST || kind == K_MAP) {
    lua_getfield(L, mt, "__jtype");
    if (lua_type(L, -1) == LUA_TSTRING) jtype = lua_tolstring(L, -1, &jlen); /* mt keeps it */
    lua_pop(L, 1);
  }
  if (jtype && jlen == 0) jtype = NULL;
  int64_t tidx = -1;
  if (jtype) type_index(e, jtype, jlen, &tidx);
  lua_Integer n = 0;
  if (kind == K_OBJECT) {
    rc = enc_object(e, idx, mt, same_mt);
  } else if (kind == K_LIST || lsr_is_array_marked(L, idx) || (kind == K_NONE && is_sequence(L, idx, &n))) {
    if (kind != K_NONE || n == 0) n = (lua_Integer)lua_rawlen(L, idx);
    if (sr_hessian_put_list(e->out, jtype, jlen, tidx, n)) rc = enc_nomem(e);
    else rc = enc_items(e, idx, n);
  } else {
    if (sr_hessian_put_map(e->out, jtype, jlen, tidx)) rc = enc_nomem(e);
    else rc = enc_pairs(e, idx);
  }
  if (rc == 0) e->depth--;
  lua_settop(L, top);
  return rc;
}

static LSR_NOINLINE int enc_cannot(enc_t *e, int idx) {
  char what[64];
  snprintf(what, sizeof what, "cannot encode a %s value", luaL_typename(e->L, idx));
  return enc_fail(e, SR_ETYPE, what);
}

static int enc_value(enc_t *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return sr_hessian_put_null(e->out) ? enc_nomem(e) : 0;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return sr_hessian_put_null(e->out) ? enc_nomem(e) : 0;
      break;
    case LUA_TBOOLEAN:
      return sr_hessian_put_bool(e->out, lua_toboolean(L, idx)) ? enc_nomem(e) : 0;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Integer v = lua_tointeger(L, idx);
        int rc = v >= INT32_MIN && v <= INT32_MAX ? sr_hessian_put_int(e->out, (int32_t)v)
                                                  : sr_hessian_put_long(e->out, v);
        return rc ? enc_nomem(e) : 0;
      }
      return sr_hessian_put_double(e->out, lua_tonumber(L, idx)) ? enc_nomem(e) : 0;
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      return enc_string(e, s, n);
    }
    case LUA_TTABLE:
      return enc_table(e, idx);
    default:
      break;
  }
  return enc_cannot(e, idx);
}

/* Pushes the seen set's slot, the encoder's three tables and the output
 * buffer; *e ready. */
static sr_buf_t *enc_begin(lua_State *L, enc_t *e, char *err, size_t errlen) {
  memset(e, 0, sizeof *e);
  e->L = L;
  e->err = err;
  e->errlen = errlen;
  luaL_checkstack(L, 10, "hessian encoder");
  lua_pushnil(L);
  e->seen_ud = lua_gettop(L);
  lua_pushnil(L);
  e->omt = lua_gettop(L);
  lua_pushnil(L);
  e->ofields = lua_gettop(L);
  lua_newtable(L);
  e->seen = lua_gettop(L);
  lua_newtable(L);
  e->types = lua_gettop(L);
  lua_newtable(L);
  e->defs = lua_gettop(L);
  e->out = lsr_push_buf(L);
  return e->out;
}

static int enc_finish(lua_State *L, enc_t *e, int rc) {
  if (rc) {
    sr_buf_free(e->out);
    return lsr_codec_fail(L, rc, e->err);
  }
  lua_pushlstring(L, e->out->data ? (const char *)e->out->data : "", e->out->len);
  sr_buf_free(e->out);
  return 1;
}

static int l_encode(lua_State *L) {
  char err[640];
  enc_t e;
  luaL_checkany(L, 1);
  enc_begin(L, &e, err, sizeof err);
  return enc_finish(L, &e, enc_value(&e, 1));
}

static int l_encode_reply(lua_State *L) {
  char err[640];
  enc_t e;
  luaL_checkany(L, 1);
  enc_begin(L, &e, err, sizeof err);
  int rc = sr_hessian_put_reply(e.out) ? enc_nomem(&e) : enc_value(&e, 1);
  return enc_finish(L, &e, rc);
}

/* core.hessian_encode_call(method, args, n): args[1..n] (nil -> null). */
static int l_encode_call(lua_State *L) {
  char err[640];
  enc_t e;
  size_t mlen;
  const char *m = luaL_checklstring(L, 1, &mlen);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = luaL_optinteger(L, 3, (lua_Integer)lua_rawlen(L, 2));
  luaL_argcheck(L, n >= 0 && n <= INT32_MAX, 3, "argument count out of range");
  enc_begin(L, &e, err, sizeof err);
  size_t bad;
  int rc = sr_hessian_put_call(e.out, m, mlen, (int32_t)n, &bad);
  if (rc == SR_EUTF8) rc = enc_fail(&e, rc, "invalid UTF-8 in the method name");
  else if (rc) rc = enc_nomem(&e);
  for (lua_Integer i = 1; i <= n && rc == 0; i++) {
    lua_rawgeti(L, 2, i);
    rc = enc_value(&e, lua_gettop(L));
    if (rc) {
      char what[640];
      snprintf(what, sizeof what, "%.560s (argument %lld)", err, (long long)i);
      snprintf(err, sizeof err, "%s", what);
    }
    lua_pop(L, 1);
  }
  return enc_finish(L, &e, rc);
}

/* core.hessian_encode_fault(code, message, detail): the map skeletons send,
 * with detail left out when nil. The map itself is ref #0. */
static int l_encode_fault(lua_State *L) {
  char err[640];
  enc_t e;
  size_t cl, ml;
  const char *code = luaL_checklstring(L, 1, &cl);
  const char *msg = luaL_checklstring(L, 2, &ml);
  enc_begin(L, &e, err, sizeof err);
  int rc = 0;
  if (sr_hessian_put_fault(e.out) || sr_hessian_put_map(e.out, NULL, 0, -1)) rc = enc_nomem(&e);
  e.nrefs = 1;
  if (rc == 0 && (rc = enc_string(&e, "code", 4)) == 0 && (rc = enc_string(&e, code, cl)) == 0 &&
      (rc = enc_string(&e, "message", 7)) == 0 && (rc = enc_string(&e, msg, ml)) == 0 &&
      !lua_isnoneornil(L, 3) && (rc = enc_string(&e, "detail", 6)) == 0)
    rc = enc_value(&e, 3);
  if (rc == 0 && sr_hessian_put_end(e.out)) rc = enc_nomem(&e);
  return enc_finish(L, &e, rc);
}

/* ---- decoder ------------------------------------------------------------ */

typedef struct bld_s {
  lua_State *L;
  sr_hessian_reader_t *r;
  int refs;   /* stack slot: ref slot + 1 -> value */
  int cache;  /* stack slot: metatables of typed lists/maps ("l" / "m" .. type) and of defs (def_mt) */
  int arr_mt; /* the JSON array marker (untyped lists) */
  /* the definition of the object read last, with its metatable and
   * __fields list in the stack slots dmt and dfields: instances of one
   * class in a row skip the lookups in cache. By index + 1 (0: none), as
   * the reader's definition table moves when it grows. */
  size_t last_def;
  int dmt, dfields;
} bld_t;

static int bld_value(bld_t *b, sr_hessian_tok_t *t);

static int reader_gc(lua_State *L) {
  sr_hessian_reader_free((sr_hessian_reader_t *)luaL_checkudata(L, 1, LSR_HESSIAN_READER_MT));
  return 0;
}

/* Pushes the metatable for a typed list/map (kind 'l'/'m') of type s. */
static void typed_mt(bld_t *b, char kind, const char *s, size_t n) {
  lua_State *L = b->L;
  lua_pushlstring(L, &kind, 1);
  lua_pushlstring(L, s, n);
  lua_concat(L, 2);
  if (lua_rawget(L, b->cache) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 2);
  lua_pushstring(L, kind == 'l' ? "list" : "map");
  lua_setfield(L, -2, "__hessian");
  lua_pushlstring(L, s, n);
  lua_setfield(L, -2, "__jtype");
  lua_pushlstring(L, &kind, 1);
  lua_pushlstring(L, s, n);
  lua_concat(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, b->cache);
}

/* Pushes the metatable of instances of definition d and its __fields list
 * (made once per definition in a message: cache[2i + 1] and cache[2i + 2]
 * for definition i, whose field names the instances' tables then share). */
static void def_mt(bld_t *b, const sr_hessian_def_t *d) {
  lua_State *L = b->L;
  lua_Integer slot = 2 * (lua_Integer)(d - b->r->defs) + 1;
  if (lua_rawgeti(L, b->cache, slot) == LUA_TTABLE) {
    lua_rawgeti(L, b->cache, slot + 1);
    return;
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "object");
  lua_setfield(L, -2, "__hessian");
  lua_pushlstring(L, d->name.s, d->name.n);
  lua_setfield(L, -2, "__jtype");
  lua_createtable(L, (int)d->nfields, 0);
  for (size_t i = 0; i < d->nfields; i++) {
    lua_pushlstring(L, d->fields[i].s, d->fields[i].n);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__fields");
  lua_pushvalue(L, -2);
  lua_rawseti(L, b->cache, slot);
  lua_pushvalue(L, -1);
  lua_rawseti(L, b->cache, slot + 1);
}

static int bld_next(bld_t *b, sr_hessian_tok_t *t) { return sr_hessian_next(b->r, t); }

static void set_ref(bld_t *b, size_t ref) {
  lua_pushvalue(b->L, -1);
  lua_rawseti(b->L, b->refs, (lua_Integer)ref + 1);
}

/* The three Java boxes Hessian 2 writes as objects with one field _value. */
static int is_handle(const sr_hessian_def_t *d) {
  static const char *const names[] = {"com.caucho.hessian.io.ShortHandle",
                                      "com.caucho.hessian.io.ByteHandle",
                                      "com.caucho.hessian.io.FloatHandle"};
  if (d->nfields != 1 || strcmp(d->fields[0].s, "_value") != 0) return 0;
  for (int i = 0; i < 3; i++)
    if (strcmp(d->name.s, names[i]) == 0) return 1;
  return 0;
}

/* Reads key/value tokens into the table on top until END. */
static int bld_pairs(bld_t *b) {
  lua_State *L = b->L;
  sr_hessian_tok_t t;
  int rc;
  for (;;) {
    if ((rc = bld_next(b, &t))) return rc;
    if (t.kind == SR_HK_END) return 0;
    size_t koff = t.off;
    if ((rc = bld_value(b, &t))) return rc;
    if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))
      return sr_hessian_err(b->r, SR_ESYNTAX, koff, "NaN as a map key");
    if ((rc = bld_next(b, &t))) return rc;
    if ((rc = bld_value(b, &t))) return rc;
    lua_rawset(L, -3);
  }
}

static LSR_NOINLINE int bld_container(bld_t *b, sr_hessian_tok_t *t);

static int bld_value(bld_t *b, sr_hessian_tok_t *t) {
  lua_State *L = b->L;
  switch (t->kind) {
    case SR_HK_NULL: lua_pushlightuserdata(L, NULL); return 0;
    case SR_HK_BOOL: lua_pushboolean(L, (int)t->i); return 0;
    case SR_HK_INT:
    case SR_HK_LONG: lua_pushinteger(L, (lua_Integer)t->i); return 0;
    case SR_HK_DOUBLE: lua_pushnumber(L, (lua_Number)t->d); return 0;
    case SR_HK_STRING: lua_pushlstring(L, t->s, t->slen); return 0;
    case SR_HK_BINARY:
      lua_createtable(L, 0, 1);
      lua_pushlstring(L, t->s, t->slen);
      lua_setfield(L, -2, "data");
      luaL_setmetatable(L, MT_BINARY);
      return 0;
    case SR_HK_DATE:
      lua_createtable(L, 0, 1);
      lua_pushinteger(L, (lua_Integer)t->i);
      lua_setfield(L, -2, "ms");
      luaL_setmetatable(L, MT_DATE);
      return 0;
    case SR_HK_REF: lua_rawgeti(L, b->refs, (lua_Integer)t->i + 1); return 0;
    case SR_HK_LIST:
    case SR_HK_MAP:
    case SR_HK_OBJECT: return bld_container(b, t);
    default:
      return sr_hessian_err(b->r, SR_ESYNTAX, t->off, "unexpected end of list or map");
  }
}

/* A list, map or object (its start in t): reads its values and END. */
static LSR_NOINLINE int bld_container(bld_t *b, sr_hessian_tok_t *t) {
  lua_State *L = b->L;
  int rc;
  /* a container keeps at most 3 slots (its table, field names, a key) below
   * a value, and a value other than a container pushes at most 3 */
  if (!lua_checkstack(L, 8)) return sr_hessian_err(b->r, SR_ENOMEM, t->off, "out of Lua stack space");
  switch (t->kind) {
    case SR_HK_LIST:
    default: /* bld_value calls it for a list, map or object only */ {
      lua_createtable(L, t->i > 0 ? (int)t->i : 0, 0);
      if (t->slen) typed_mt(b, 'l', t->s, t->slen);
      else lua_pushvalue(L, b->arr_mt);
      lua_setmetatable(L, -2);
      set_ref(b, t->ref);
      sr_hessian_tok_t c;
      for (lua_Integer i = 1;; i++) {
        if ((rc = bld_next(b, &c))) return rc;
        if (c.kind == SR_HK_END) return 0;
        if ((rc = bld_value(b, &c))) return rc;
        lua_rawseti(L, -2, i);
      }
    }
    case SR_HK_MAP:
      lua_newtable(L);
      if (t->slen) typed_mt(b, 'm', t->s, t->slen);
      else luaL_getmetatable(L, MT_MAP);
      lua_setmetatable(L, -2);
      set_ref(b, t->ref);
      return bld_pairs(b);
    case SR_HK_OBJECT: {
      const sr_hessian_def_t *d = t->def;
      size_t ref = t->ref;
      lua_createtable(L, 0, (int)d->nfields);
      size_t di = (size_t)(d - b->r->defs) + 1;
      if (di != b->last_def) {
        def_mt(b, d); /* the metatable, then its __fields list */
        lua_replace(L, b->dfields);
        lua_replace(L, b->dmt);
        b->last_def = di;
      }
      lua_pushvalue(L, b->dmt);
      lua_setmetatable(L, -2);
      lua_pushvalue(L, -1);
      lua_rawseti(L, b->refs, (lua_Integer)ref + 1);
      /* left: the table, then the field names (a copy: a nested object of
       * another class replaces dfields) */
      lua_pushvalue(L, b->dfields);
      sr_hessian_tok_t c;
      for (lua_Integer i = 1;; i++) {
        if ((rc = bld_next(b, &c))) return rc;
        if (c.kind == SR_HK_END) break;
        /* a null field is left out: reading it gives nil */
        if (c.kind == SR_HK_NULL) continue;
        lua_rawgeti(L, -1, i);
        if ((rc = bld_value(b, &c))) return rc;
        lua_rawset(L, -4);
      }
      lua_pop(L, 1);
      if (is_handle(d)) {
        lua_getfield(L, -1, "_value");
        lua_remove(L, -2);
        set_ref(b, ref);
      }
      return 0;
    }
  }
}

/* Reads the optional limits at stack slots i..i+3. */
static void opt_limits(lua_State *L, int i, sr_hessian_limits_t *lim) {
  memset(lim, 0, sizeof *lim);
  lim->max_depth = (int)luaL_optinteger(L, i, SR_HESSIAN_DEFAULT_DEPTH);
  lim->max_elements = (size_t)luaL_optinteger(L, i + 1, SR_HESSIAN_DEFAULT_ELEMENTS);
  lim->max_bytes = (size_t)luaL_optinteger(L, i + 2, SR_HESSIAN_DEFAULT_MAX_BYTES);
  lim->max_string = (size_t)luaL_optinteger(L, i + 3, SR_HESSIAN_DEFAULT_MAX_STRING);
  luaL_argcheck(L, lim->max_depth > 0 && lim->max_depth <= SR_DECODE_MAX_DEPTH, i, "depth out of range");
}

/* Pushes the reader userdata, the refs and cache tables, the array
 * marker and the last definition's two slots (6 slots) and sets up b; 0 or the reader's init error. */
static int bld_begin(lua_State *L, bld_t *b, const char *s, size_t n, int version,
                     const sr_hessian_limits_t *lim, char *err, size_t errlen) {
  luaL_checkstack(L, 14, "hessian decoder");
  sr_hessian_reader_t *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, LSR_HESSIAN_READER_MT);
  b->L = L;
  b->r = r;
  lua_newtable(L);
  b->refs = lua_gettop(L);
  lua_newtable(L);
  b->cache = lua_gettop(L);
  lsr_push_array_mt(L);
  b->arr_mt = lua_gettop(L);
  lua_pushnil(L);
  b->dmt = lua_gettop(L);
  lua_pushnil(L);
  b->dfields = lua_gettop(L);
  b->last_def = 0;
  return sr_hessian_reader_init(r, (const uint8_t *)s, n, version, lim, err, errlen);
}

static int bld_top_value(bld_t *b) {
  sr_hessian_tok_t t;
  int rc = bld_next(b, &t);
  return rc ? rc : bld_value(b, &t);
}

static int l_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  int version = (int)luaL_optinteger(L, 2, 2);
  luaL_argcheck(L, version == 1 || version == 2, 2, "version must be 1 or 2");
  sr_hessian_limits_t lim;
  opt_limits(L, 3, &lim);
  char err[256];
  bld_t b;
  int rc = bld_begin(L, &b, s, n, version, &lim, err, sizeof err);
  if (rc == 0) rc = bld_top_value(&b);
  if (rc == 0) rc = sr_hessian_finish(b.r, 0);
  sr_hessian_reader_free(b.r);
  if (rc) return lsr_codec_fail(L, rc, err);
  return 1;
}

static int l_decode_reply(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  sr_hessian_limits_t lim;
  opt_limits(L, 2, &lim);
  char err[256];
  bld_t b;
  int fault = 0;
  int rc = bld_begin(L, &b, s, n, 2, &lim, err, sizeof err);
  if (rc == 0) rc = sr_hessian_read_reply(b.r, &fault);
  if (rc == 0 && fault && b.r->version == 1) {
    lua_newtable(L);
    rc = bld_pairs(&b);
  } else if (rc == 0) {
    rc = bld_top_value(&b);
  }
  if (rc == 0) rc = sr_hessian_finish(b.r, b.r->version == 1);
  int version = b.r->version;
  sr_hessian_reader_free(b.r);
  if (rc) return lsr_codec_fail(L, rc, err);
  lua_pushstring(L, fault ? "fault" : "reply");
  lua_insert(L, -2);
  lua_pushinteger(L, version);
  return 3;
}

/* Reads a call (Hessian 2 or 1) from s[0..n) with lim: pushes the method
 * name and the arguments (an array-marked list with field n) and sets
 * *version; returns 0, or an SR_E* code with err set and nothing pushed. */
static int decode_call(lua_State *L, const char *s, size_t n, const sr_hessian_limits_t *lim,
                       int *version, char *err, size_t errlen) {
  int base = lua_gettop(L);
  bld_t b;
  int64_t argc = -1;
  int rc = bld_begin(L, &b, s, n, 2, lim, err, errlen);
  sr_buf_t *method = lsr_push_buf(L);
  int mslot = lua_gettop(L);
  if (rc == 0) rc = sr_hessian_read_call(b.r, method, &argc);
  if (rc == 0) {
    lua_createtable(L, argc > 0 && argc < 256 ? (int)argc : 0, 1);
    lua_pushvalue(L, b.arr_mt);
    lua_setmetatable(L, -2);
    lua_Integer i = 0;
    while (rc == 0 && (argc >= 0 ? i < argc : !sr_hessian_at_call_end(b.r))) {
      rc = bld_top_value(&b);
      if (rc == 0) lua_rawseti(L, -2, ++i);
    }
    if (rc == 0) {
      lua_pushinteger(L, i);
      lua_setfield(L, -2, "n");
      rc = sr_hessian_finish(b.r, 0);
    }
  }
  *version = b.r->version;
  sr_hessian_reader_free(b.r);
  if (rc) {
    sr_buf_free(method);
    lua_settop(L, base);
    return rc;
  }
  lua_pushlstring(L, method->data ? (const char *)method->data : "", method->len);
  sr_buf_free(method);
  lua_replace(L, mslot);
  lua_rotate(L, base + 1, 2); /* method and args to the bottom */
  lua_settop(L, base + 2);
  return 0;
}

static int l_decode_call(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  sr_hessian_limits_t lim;
  opt_limits(L, 2, &lim);
  char err[256];
  int version = 2;
  int rc = decode_call(L, s, n, &lim, &version, err, sizeof err);
  if (rc) return lsr_codec_fail(L, rc, err);
  lua_pushinteger(L, version);
  return 3;
}

int lsr_hessian_decode_call(lua_State *L, const uint8_t *p, size_t n, const sr_decode_limits_t *dl,
                            char *err, size_t errlen) {
  sr_hessian_limits_t lim;
  memset(&lim, 0, sizeof lim);
  lim.max_depth = dl && dl->max_depth > 0 ? dl->max_depth : SR_HESSIAN_DEFAULT_DEPTH;
  lim.max_elements = dl && dl->max_elements > 0 ? dl->max_elements : SR_HESSIAN_DEFAULT_ELEMENTS;
  lim.max_bytes = n > 0 ? n : 1;
  lim.max_string = SR_HESSIAN_DEFAULT_MAX_STRING;
  int version;
  return decode_call(L, (const char *)p, n, &lim, &version, err, errlen);
}

/* The Java exception a Pyro-style exception dict (at idx) becomes, and the
 * fault code a Caucho client expects for it: lookups that failed are
 * NoSuchMethodException, requests that could not be read
 * ProtocolException, anything else ServiceException with the exception
 * as detail -- java.lang.RuntimeException, or the Java class a Lua error
 * named ("java.lang.IllegalArgumentException: text", as an error object
 * {class = "java.lang.IllegalArgumentException", message = "text"} reads
 * once the exporter has turned it into a message). */
static int put_fault(enc_t *e, int idx) {
  lua_State *L = e->L;
  const char *cls = "";
  if (lua_type(L, idx) == LUA_TTABLE && lua_getfield(L, idx, "__class__") == LUA_TSTRING)
    cls = lua_tostring(L, -1);
  int clsslot = lua_gettop(L);
  const char *msg = NULL;
  size_t ml = 0;
  if (lua_type(L, idx) == LUA_TTABLE && lua_getfield(L, idx, "args") == LUA_TTABLE) {
    if (lua_rawgeti(L, -1, 1) == LUA_TSTRING) msg = lua_tolstring(L, -1, &ml);
  }
  if (msg == NULL) {
    msg = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &ml) : "error";
    if (lua_type(L, idx) != LUA_TSTRING) ml = strlen(msg);
  }
  const char *code = "ServiceException";
  if (strcmp(cls, "builtins.AttributeError") == 0)
    code = "NoSuchMethodException";
  else if (strcmp(cls, "Pyro4.errors.SerializeError") == 0 ||
           strcmp(cls, "Pyro4.errors.ProtocolError") == 0 || strcmp(cls, "builtins.KeyError") == 0)
    code = "ProtocolException";
  /* the Java class: named at the start of the message, or RuntimeException */
  const char *jcls = "java.lang.RuntimeException";
  size_t jl = strlen(jcls);
  const char *dmsg = msg;
  size_t dl = ml;
  const char *colon = memchr(msg, ':', ml);
  if ((strncmp(msg, "java.", 5) == 0 || strncmp(msg, "javax.", 6) == 0) && colon &&
      (size_t)(colon - msg) + 1 < ml && colon[1] == ' ' && memchr(msg, ' ', (size_t)(colon - msg)) == NULL) {
    jcls = msg;
    jl = (size_t)(colon - msg);
    dmsg = colon + 2;
    dl = ml - jl - 2;
  }
  int rc = 0;
  if (sr_hessian_put_fault(e->out) || sr_hessian_put_map(e->out, NULL, 0, -1)) return enc_nomem(e);
  e->nrefs = 1;
  if ((rc = enc_string(e, "code", 4)) || (rc = enc_string(e, code, strlen(code))) ||
      (rc = enc_string(e, "message", 7)) || (rc = enc_string(e, dmsg, dl)))
    return rc;
  if (strcmp(code, "ServiceException") == 0) {
    /* detail: an instance of the Java class with its detailMessage */
    static const char *const fields[1] = { "detailMessage" };
    const size_t flens[1] = { 13 };
    size_t bad;
    if ((rc = enc_string(e, "detail", 6))) return rc;
    if (sr_hessian_put_def(e->out, jcls, jl, 1, fields, flens, &bad) ||
        sr_hessian_put_object(e->out, e->ndefs++))
      return enc_nomem(e);
    e->nrefs++;
    if ((rc = enc_string(e, dmsg, dl))) return rc;
  }
  lua_settop(L, clsslot - 1);
  if (sr_hessian_put_end(e->out)) return enc_nomem(e);
  return 0;
}

int lsr_hessian_put_reply(lua_State *L, int idx, int fault, sr_buf_t *out, char *err,
                          size_t errlen) {
  idx = lua_absindex(L, idx);
  int base = lua_gettop(L);
  enc_t e;
  enc_begin(L, &e, err, errlen);
  e.out = out; /* appended to the caller's buffer; the pushed one stays empty */
  int rc;
  if (fault)
    rc = put_fault(&e, idx);
  else
    rc = sr_hessian_put_reply(out) ? enc_nomem(&e) : enc_value(&e, idx);
  lua_settop(L, base);
  return rc;
}

void lsr_open_hessian(lua_State *L) {
  static const luaL_Reg fns[] = {{"hessian_encode", l_encode},
                                 {"hessian_decode", l_decode},
                                 {"hessian_encode_call", l_encode_call},
                                 {"hessian_encode_reply", l_encode_reply},
                                 {"hessian_encode_fault", l_encode_fault},
                                 {"hessian_decode_reply", l_decode_reply},
                                 {"hessian_decode_call", l_decode_call},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
  if (luaL_newmetatable(L, LSR_HESSIAN_READER_MT)) {
    lua_pushcfunction(L, reader_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 4);
  static const char *const wrappers[][2] = {
      {"binary", MT_BINARY}, {"date", MT_DATE}, {"long", MT_LONG}, {"map", MT_MAP}};
  for (int i = 0; i < 4; i++) {
    luaL_newmetatable(L, wrappers[i][1]);
    lua_pushstring(L, wrappers[i][0]);
    lua_setfield(L, -2, "__hessian");
    lua_setfield(L, -2, wrappers[i][0]);
  }
  lua_setfield(L, -2, "hessian_mt");
}
