/*
 * container.c -- the object container's core (see container.h): definitions
 * in definition order, dependency edges with where they were written, graph
 * validation with whole-chain cycle reports, eager creation order, the
 * creation stack, and the singleton cache of opaque handles with its creation
 * order. Plain C: it never calls user code; the Lua binding does that.
 *
 * Graph walks are iterative (an explicit stack), so a long chain of
 * definitions cannot overflow the C stack. Ids are found through an
 * open-addressing hash index (FNV-1a, linear probing) over the definitions.
 */
#include "container.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sr_edge_s {
  char *dep;
  char *via; /* may be NULL */
} sr_edge_t;

typedef struct sr_def_s {
  char *id;
  char *parent; /* may be NULL */
  unsigned flags;
  sr_edge_t *edges;
  size_t nedges, capedges;
  int has_handle;
  int64_t handle;
} sr_def_t;

struct sr_container_s {
  sr_def_t *defs;
  size_t ndefs, capdefs;
  size_t *stack; /* indices of defs being created, bottom first */
  size_t depth, capstack;
  size_t *created; /* indices of stored singletons, first created first */
  size_t ncreated, capcreated;
  size_t *index; /* hash slots holding def index + 1 (0 = empty); nslots is a power of 2 */
  size_t nslots;
};

static char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p != NULL) memcpy(p, s, n);
  return p;
}

/* Grows *arr (elements of size sz) so that it holds at least need; 0 or SR_ENOMEM. */
static int grow(void **arr, size_t *cap, size_t need, size_t sz) {
  if (need <= *cap) return 0;
  size_t ncap = *cap ? *cap * 2 : 8;
  while (ncap < need) ncap *= 2;
  void *p = realloc(*arr, ncap * sz);
  if (p == NULL) return SR_ENOMEM;
  *arr = p;
  *cap = ncap;
  return 0;
}

static size_t hash_id(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ull;
  }
  return (size_t)h;
}

static long find(const sr_container_t *c, const char *id) {
  if (id == NULL || c->nslots == 0) return -1;
  size_t mask = c->nslots - 1;
  for (size_t s = hash_id(id) & mask;; s = (s + 1) & mask) {
    size_t v = c->index[s];
    if (v == 0) return -1;
    if (strcmp(c->defs[v - 1].id, id) == 0) return (long)(v - 1);
  }
}

/* Makes room in the index for one more definition (load <= 1/2) and inserts
 * def index `di`. Returns 0 or SR_ENOMEM (index unchanged). */
static int index_add(sr_container_t *c, size_t di) {
  if ((c->ndefs + 1) * 2 > c->nslots) {
    size_t n = c->nslots ? c->nslots * 2 : 16;
    while ((c->ndefs + 1) * 2 > n) n *= 2;
    size_t *slots = calloc(n, sizeof(size_t));
    if (slots == NULL) return SR_ENOMEM;
    for (size_t i = 0; i < c->ndefs; i++) {
      size_t s = hash_id(c->defs[i].id) & (n - 1);
      while (slots[s] != 0) s = (s + 1) & (n - 1);
      slots[s] = i + 1;
    }
    free(c->index);
    c->index = slots;
    c->nslots = n;
  }
  size_t mask = c->nslots - 1;
  size_t s = hash_id(c->defs[di].id) & mask;
  while (c->index[s] != 0) s = (s + 1) & mask;
  c->index[s] = di + 1;
  return 0;
}

static void free_edges(sr_def_t *d) {
  for (size_t i = 0; i < d->nedges; i++) {
    free(d->edges[i].dep);
    free(d->edges[i].via);
  }
  free(d->edges);
  d->edges = NULL;
  d->nedges = d->capedges = 0;
}

sr_container_t *sr_container_new(void) {
  return calloc(1, sizeof(sr_container_t));
}

void sr_container_free(sr_container_t *c) {
  if (c == NULL) return;
  for (size_t i = 0; i < c->ndefs; i++) {
    free(c->defs[i].id);
    free(c->defs[i].parent);
    free_edges(&c->defs[i]);
  }
  free(c->defs);
  free(c->stack);
  free(c->created);
  free(c->index);
  free(c);
}

/* Removes def index `di` from the creation order (a redefined singleton). */
static void drop_created(sr_container_t *c, size_t di) {
  size_t w = 0;
  for (size_t r = 0; r < c->ncreated; r++)
    if (c->created[r] != di) c->created[w++] = c->created[r];
  c->ncreated = w;
}

int sr_container_define(sr_container_t *c, const char *id, unsigned flags, const char *parent,
                        int *had_handle, int64_t *old_handle, char *err, size_t errlen) {
  if (had_handle != NULL) *had_handle = 0;
  if (id == NULL || id[0] == '\0')
    return sr_seterr(err, errlen, SR_EINVAL, "object id must be a non-empty string");
  char *pcopy = NULL;
  if (parent != NULL && (pcopy = dupstr(parent)) == NULL)
    return sr_seterr(err, errlen, SR_ENOMEM, "out of memory defining '%s'", id);
  long at = find(c, id);
  if (at >= 0) {
    sr_def_t *d = &c->defs[at];
    free(d->parent);
    d->parent = pcopy;
    d->flags = flags;
    free_edges(d);
    if (d->has_handle) {
      if (had_handle != NULL) *had_handle = 1;
      if (old_handle != NULL) *old_handle = d->handle;
      d->has_handle = 0;
      drop_created(c, (size_t)at);
    }
    return 1;
  }
  char *icopy = dupstr(id);
  if (icopy == NULL ||
      grow((void **)&c->defs, &c->capdefs, c->ndefs + 1, sizeof(sr_def_t)) != 0) {
    free(icopy);
    free(pcopy);
    return sr_seterr(err, errlen, SR_ENOMEM, "out of memory defining '%s'", id);
  }
  sr_def_t *d = &c->defs[c->ndefs];
  memset(d, 0, sizeof(*d));
  d->id = icopy;
  d->parent = pcopy;
  d->flags = flags;
  if (index_add(c, c->ndefs) != 0) {
    free(icopy);
    free(pcopy);
    return sr_seterr(err, errlen, SR_ENOMEM, "out of memory defining '%s'", id);
  }
  c->ndefs++;
  return 0;
}

int sr_container_add_dep(sr_container_t *c, const char *id, const char *dep, const char *via,
                         char *err, size_t errlen) {
  long at = find(c, id);
  if (at < 0) return sr_seterr(err, errlen, SR_ENOTFOUND, "no object named '%s'", id ? id : "");
  if (dep == NULL || dep[0] == '\0')
    return sr_seterr(err, errlen, SR_EINVAL, "object '%s': empty reference", id);
  sr_def_t *d = &c->defs[at];
  char *dc = dupstr(dep);
  char *vc = via != NULL ? dupstr(via) : NULL;
  if (dc == NULL || (via != NULL && vc == NULL) ||
      grow((void **)&d->edges, &d->capedges, d->nedges + 1, sizeof(sr_edge_t)) != 0) {
    free(dc);
    free(vc);
    return sr_seterr(err, errlen, SR_ENOMEM, "out of memory adding a reference to '%s'", id);
  }
  d->edges[d->nedges].dep = dc;
  d->edges[d->nedges].via = vc;
  d->nedges++;
  return 0;
}

/* Appends "a -> b -> ... -> a" for path[from..n) followed by path[from] to err. */
static int chain_error(const sr_container_t *c, const char *what, const size_t *path, size_t from,
                       size_t n, char *err, size_t errlen) {
  if (err == NULL || errlen == 0) return SR_ECYCLE;
  size_t len = 0;
  int w = snprintf(err, errlen, "%s: ", what);
  if (w > 0) len = (size_t)w < errlen ? (size_t)w : errlen - 1;
  for (size_t i = from; i <= n && len + 1 < errlen; i++) {
    size_t di = i < n ? path[i] : path[from];
    w = snprintf(err + len, errlen - len, "%s%s", i > from ? " -> " : "", c->defs[di].id);
    if (w < 0) break;
    len += (size_t)w < errlen - len ? (size_t)w : errlen - len - 1;
  }
  return SR_ECYCLE;
}

/* Parent chains: unknown parents and loops. Returns 0 or an error. Each
 * definition is walked up once: `mark` holds 0 (unseen), the 1-based root of
 * the walk that is visiting it, or SIZE_MAX once known to end without a loop. */
static int check_parents(const sr_container_t *c, char *err, size_t errlen) {
  int rc = 0;
  if (c->ndefs == 0) return 0;
  for (size_t i = 0; i < c->ndefs; i++) {
    const sr_def_t *d = &c->defs[i];
    if (d->parent != NULL && find(c, d->parent) < 0)
      return sr_seterr(err, errlen, SR_ENOTFOUND, "object '%s' has unknown parent '%s'", d->id,
                       d->parent);
  }
  size_t *mark = calloc(c->ndefs, sizeof(size_t));
  size_t *path = malloc(c->ndefs * sizeof(size_t));
  if (mark == NULL || path == NULL) {
    free(mark);
    free(path);
    return sr_seterr(err, errlen, SR_ENOMEM, "out of memory validating");
  }
  for (size_t i = 0; i < c->ndefs && rc == 0; i++) {
    size_t n = 0;
    long cur = (long)i;
    while (cur >= 0 && mark[cur] == 0) {
      mark[cur] = i + 1;
      path[n++] = (size_t)cur;
      cur = find(c, c->defs[cur].parent);
    }
    if (cur >= 0 && mark[cur] == i + 1) { /* met this walk again: a loop */
      size_t from = 0;
      while (path[from] != (size_t)cur) from++;
      rc = chain_error(c, "circular parent chain", path, from, n, err, errlen);
    }
    for (size_t k = 0; k < n; k++) mark[path[k]] = SIZE_MAX;
  }
  free(mark);
  free(path);
  return rc;
}

enum { WHITE = 0, GREY = 1, BLACK = 2 };

/* Iterative DFS over dependency edges from each root in definition order
 * (only from eager roots when eager_only). Unknown deps are skipped (validate
 * reports them first). Reports the first cycle with its chain. When `out` is
 * non-NULL the eager definitions are appended to it in post-order. */
static int walk(const sr_container_t *c, int eager_only, const char **out, size_t *nout,
                char *err, size_t errlen) {
  size_t n = c->ndefs;
  int rc = 0;
  if (nout != NULL) *nout = 0;
  if (n == 0) return 0;
  unsigned char *color = calloc(n, 1);
  size_t *path = malloc(n * sizeof(size_t));
  size_t *next = malloc(n * sizeof(size_t));
  if (color == NULL || path == NULL || next == NULL) {
    rc = sr_seterr(err, errlen, SR_ENOMEM, "out of memory ordering objects");
    goto done;
  }
  for (size_t root = 0; root < n && rc == 0; root++) {
    const sr_def_t *r = &c->defs[root];
    if (color[root] != WHITE) continue;
    if (eager_only && (r->flags & (SR_DEF_PROTOTYPE | SR_DEF_LAZY | SR_DEF_ABSTRACT))) continue;
    size_t top = 0;
    path[top] = root;
    next[top] = 0;
    top = 1;
    color[root] = GREY;
    while (top > 0) {
      size_t cur = path[top - 1];
      const sr_def_t *d = &c->defs[cur];
      if (next[top - 1] < d->nedges) {
        long dep = find(c, d->edges[next[top - 1]++].dep);
        if (dep < 0) continue;
        if (color[dep] == GREY) {
          size_t from = 0;
          while (path[from] != (size_t)dep) from++;
          rc = chain_error(c, "circular dependency", path, from, top, err, errlen);
          goto done;
        }
        if (color[dep] == WHITE) {
          color[dep] = GREY;
          path[top] = (size_t)dep;
          next[top] = 0;
          top++;
        }
        continue;
      }
      color[cur] = BLACK;
      if (out != NULL && !(d->flags & (SR_DEF_PROTOTYPE | SR_DEF_LAZY | SR_DEF_ABSTRACT)))
        out[(*nout)++] = d->id;
      top--;
    }
  }
done:
  free(color);
  free(path);
  free(next);
  return rc;
}

int sr_container_validate(const sr_container_t *c, char *err, size_t errlen) {
  int rc = check_parents(c, err, errlen);
  if (rc != 0) return rc;
  for (size_t i = 0; i < c->ndefs; i++) {
    const sr_def_t *d = &c->defs[i];
    for (size_t e = 0; e < d->nedges; e++) {
      const sr_edge_t *ed = &d->edges[e];
      long t = find(c, ed->dep);
      if (t < 0)
        return sr_seterr(err, errlen, SR_ENOTFOUND, "object '%s' refers to unknown object '%s'%s%s%s",
                         d->id, ed->dep, ed->via ? " (" : "", ed->via ? ed->via : "",
                         ed->via ? ")" : "");
      if (c->defs[t].flags & SR_DEF_ABSTRACT)
        return sr_seterr(err, errlen, SR_EINVAL,
                         "object '%s' refers to abstract object '%s'%s%s%s (an abstract "
                         "definition is only a parent and is never created)",
                         d->id, ed->dep, ed->via ? " (" : "", ed->via ? ed->via : "",
                         ed->via ? ")" : "");
    }
  }
  return walk(c, 0, NULL, NULL, err, errlen);
}

size_t sr_container_count(const sr_container_t *c) { return c->ndefs; }

const char *sr_container_id_at(const sr_container_t *c, size_t i) {
  return i < c->ndefs ? c->defs[i].id : NULL;
}

int sr_container_lookup(const sr_container_t *c, const char *id, unsigned *flags,
                        const char **parent) {
  long at = find(c, id);
  if (at < 0) return SR_ENOTFOUND;
  if (flags != NULL) *flags = c->defs[at].flags;
  if (parent != NULL) *parent = c->defs[at].parent;
  return 0;
}

int sr_container_eager_order(const sr_container_t *c, const char **ids, size_t *n, char *err,
                             size_t errlen) {
  return walk(c, 1, ids, n, err, errlen);
}

int sr_container_enter(sr_container_t *c, const char *id, char *err, size_t errlen) {
  long at = find(c, id);
  if (at < 0) return sr_seterr(err, errlen, SR_ENOTFOUND, "no object named '%s'", id ? id : "");
  for (size_t k = 0; k < c->depth; k++)
    if (c->stack[k] == (size_t)at)
      return chain_error(c, "circular dependency", c->stack, k, c->depth, err, errlen);
  if (grow((void **)&c->stack, &c->capstack, c->depth + 1, sizeof(size_t)) != 0)
    return sr_seterr(err, errlen, SR_ENOMEM, "out of memory creating '%s'", id);
  c->stack[c->depth++] = (size_t)at;
  return 0;
}

int sr_container_leave(sr_container_t *c, const char *id) {
  long at = find(c, id);
  if (c->depth == 0 || at < 0 || c->stack[c->depth - 1] != (size_t)at) return SR_EINVAL;
  c->depth--;
  return 0;
}

size_t sr_container_depth(const sr_container_t *c) { return c->depth; }

void sr_container_unwind(sr_container_t *c, size_t depth) {
  if (depth < c->depth) c->depth = depth;
}

int sr_container_store(sr_container_t *c, const char *id, int64_t handle) {
  long at = find(c, id);
  if (at < 0) return SR_ENOTFOUND;
  sr_def_t *d = &c->defs[at];
  if (d->has_handle) return SR_EEXISTS;
  if (grow((void **)&c->created, &c->capcreated, c->ncreated + 1, sizeof(size_t)) != 0)
    return SR_ENOMEM;
  d->has_handle = 1;
  d->handle = handle;
  c->created[c->ncreated++] = (size_t)at;
  return 0;
}

int sr_container_get(const sr_container_t *c, const char *id, int64_t *handle) {
  long at = find(c, id);
  if (at < 0) return SR_ENOTFOUND;
  if (!c->defs[at].has_handle) return 0;
  if (handle != NULL) *handle = c->defs[at].handle;
  return 1;
}

int sr_container_forget(sr_container_t *c, const char *id, int64_t *handle) {
  long at = find(c, id);
  if (at < 0) return SR_ENOTFOUND;
  sr_def_t *d = &c->defs[at];
  if (!d->has_handle) return 0;
  if (handle != NULL) *handle = d->handle;
  d->has_handle = 0;
  drop_created(c, (size_t)at);
  return 1;
}

size_t sr_container_created_count(const sr_container_t *c) { return c->ncreated; }

int sr_container_created_at(const sr_container_t *c, size_t i, const char **id,
                            int64_t *handle) {
  if (i >= c->ncreated) return SR_ENOTFOUND;
  const sr_def_t *d = &c->defs[c->created[i]];
  if (id != NULL) *id = d->id;
  if (handle != NULL) *handle = d->handle;
  return 0;
}

void sr_container_clear(sr_container_t *c, void (*release)(int64_t handle, void *ud), void *ud) {
  while (c->ncreated > 0) {
    sr_def_t *d = &c->defs[c->created[--c->ncreated]];
    if (d->has_handle && release != NULL) release(d->handle, ud);
    d->has_handle = 0;
  }
}
