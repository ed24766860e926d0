/*
 * container.h -- the object container's core, in plain C (no Lua, no libuv).
 *
 * It owns what does not need to call user code: object definitions (id, scope,
 * lazy/abstract flags, parent), the dependency graph between them (every ref
 * and depends_on, each edge remembering where it was written, e.g.
 * "props.service"), validation (unknown refs and parents, refs to abstract
 * definitions, circular dependencies and circular parent chains reported with
 * the whole chain "a -> b -> c -> a"), the eager creation order, the stack of
 * objects being created (so a cycle met at run time is also reported with its
 * chain), the singleton cache and the creation order used to destroy in
 * reverse. Objects themselves are opaque handles (int64_t) chosen by the
 * caller: the Lua binding (lsr_container.c) stores registry-style references.
 *
 * Definitions keep the order they were first defined in; redefining an id
 * replaces it in place. Lookups are linear: contexts hold tens of objects.
 * Functions return 0 (or a documented count/boolean) or a negative SR_E* code
 * with a message in the caller's err[errlen] buffer (which may be NULL).
 */
#ifndef SR_CONTAINER_H
#define SR_CONTAINER_H

#include <stddef.h>
#include <stdint.h>

#include "sr.h"

typedef struct sr_container_s sr_container_t;

/* Definition flags. */
#define SR_DEF_PROTOTYPE 0x1u /* a new object on every get/ref (else singleton) */
#define SR_DEF_LAZY 0x2u      /* singleton created on first get, not eagerly */
#define SR_DEF_ABSTRACT 0x4u  /* only a parent for other definitions */

/* A new empty container, or NULL when out of memory. */
sr_container_t *sr_container_new(void);
/* Frees the container, its definitions and cache (handles are the caller's:
 * release them first, e.g. with sr_container_clear's callback). NULL is ok. */
void sr_container_free(sr_container_t *c);

/* Defines (or redefines, in place) object `id` with flags and an optional
 * parent id (NULL: none). Redefinition drops the old edges and the cached
 * singleton handle (which is reported through *old_handle when non-NULL and
 * one existed; *had_handle says so). Returns 1 when an existing definition was
 * replaced, 0 when added, SR_EINVAL for an empty id, SR_ENOMEM. */
int sr_container_define(sr_container_t *c, const char *id, unsigned flags, const char *parent,
                        int *had_handle, int64_t *old_handle, char *err, size_t errlen);

/* Adds a dependency edge id -> dep; `via` (may be NULL) says where it was
 * written ("props.service", "depends_on"). Returns 0, SR_ENOTFOUND when `id`
 * is not defined, SR_ENOMEM. `dep` need not exist yet: see validate. */
int sr_container_add_dep(sr_container_t *c, const char *id, const char *dep, const char *via,
                         char *err, size_t errlen);

/* Checks the whole graph, first error wins, definitions in order:
 *   SR_ENOTFOUND "object 'a' has unknown parent 'p'" /
 *                "object 'a' refers to unknown object 'x' (props.service)"
 *   SR_EINVAL    "object 'a' refers to abstract object 'base' (props.x)"
 *   SR_ECYCLE    "circular parent chain: a -> b -> a" /
 *                "circular dependency: a -> b -> c -> a"
 * Returns 0 when the graph is sound. */
int sr_container_validate(const sr_container_t *c, char *err, size_t errlen);

/* Number of definitions; the id of the i-th (definition order), NULL past the end. */
size_t sr_container_count(const sr_container_t *c);
const char *sr_container_id_at(const sr_container_t *c, size_t i);

/* Looks up a definition: returns 0 and fills *flags and *parent (NULL when
 * none; owned by the container), or SR_ENOTFOUND. Either out pointer may be NULL. */
int sr_container_lookup(const sr_container_t *c, const char *id, unsigned *flags,
                        const char **parent);

/* The eager creation order: the non-lazy, non-abstract singletons, each
 * after the eager singletons it depends on (directly or through other
 * objects), otherwise in definition order. Fills ids[0..*n) with pointers
 * owned by the container (valid until the next define/free); `ids` must have
 * room for sr_container_count(c) entries. Requires a validated graph
 * (returns SR_ECYCLE with the chain otherwise). */
int sr_container_eager_order(const sr_container_t *c, const char **ids, size_t *n, char *err,
                             size_t errlen);

/* The creation stack. enter pushes `id`; if it is already being created,
 * nothing is pushed and SR_ECYCLE is returned with the chain
 * ("circular dependency: a -> b -> a"). leave pops the top entry, which must
 * be `id` (SR_EINVAL otherwise). depth is the current stack size;
 * unwind(depth) pops back to a depth saved earlier (error paths). */
int sr_container_enter(sr_container_t *c, const char *id, char *err, size_t errlen);
int sr_container_leave(sr_container_t *c, const char *id);
size_t sr_container_depth(const sr_container_t *c);
void sr_container_unwind(sr_container_t *c, size_t depth);

/* The singleton cache. store records the handle for `id` and appends `id` to
 * the creation order (SR_EEXISTS when a handle is already stored, SR_ENOTFOUND
 * for an unknown id). get returns 1 and *handle when cached, 0 when not,
 * SR_ENOTFOUND for an unknown id. */
int sr_container_store(sr_container_t *c, const char *id, int64_t handle);
int sr_container_get(const sr_container_t *c, const char *id, int64_t *handle);

/* Drops the cached singleton of `id` (an object whose initialisation failed
 * after it was stored) from the cache and the creation order. Returns 1 and
 * *handle (the caller releases it) when one was cached, 0 when none was,
 * SR_ENOTFOUND for an unknown id. */
int sr_container_forget(sr_container_t *c, const char *id, int64_t *handle);

/* Creation order: how many singletons were stored, and the i-th (0 = first
 * created) with its handle. Returns 0 or SR_ENOTFOUND past the end. */
size_t sr_container_created_count(const sr_container_t *c);
int sr_container_created_at(const sr_container_t *c, size_t i, const char **id,
                            int64_t *handle);

/* Forgets every cached singleton and the creation order, calling
 * release(handle, ud) for each, newest first (release may be NULL).
 * Definitions stay. */
void sr_container_clear(sr_container_t *c, void (*release)(int64_t handle, void *ud), void *ud);

#endif
