/*
 * serpent.h -- the Lua-free half of the serpent payload serializer (Pyro4
 * serializer id 1, its default): a safe parser of the Python literal subset
 * that serpent writes (nothing is ever evaluated), driven through a visitor so
 * that the Lua binding (lsr_serpent.c) builds values and the daemon thread
 * scans handshakes with the same code; and the writers for the pieces of the
 * output that need no Lua (Python repr of str and float).
 *
 * Accepted input: optional "#" comment lines (the "# serpent utf-8
 * python3.2" header is one), whitespace, then one literal: None, True, False,
 * ints (decimal, 0x/0o/0b, "_" separators; any size), floats (1e30000 is
 * +inf), optional unary +/- on numbers, str literals ('...', "...", u/r
 * prefixes, adjacent literals concatenated, Python escapes), lists, tuples,
 * dicts and sets. Complex numbers, bytes literals, triple-quoted strings,
 * names other than None/True/False, any expression, a bare top-level tuple
 * ("1, 2") and line continuations outside strings are refused with the byte
 * offset (serpent writes none of them). The input must be UTF-8 without NUL bytes, as serpent.loads
 * requires.
 */
#ifndef SR_SERPENT_H
#define SR_SERPENT_H

#include "sr.h"

#define SR_SERPENT_HEADER "# serpent utf-8 python3.2\n"

typedef enum sr_serpent_seq_e {
  SR_SERPENT_LIST = 1,
  SR_SERPENT_TUPLE = 2,
  SR_SERPENT_SET = 3,
  /* "(x)": a parenthesised value, not a tuple. Reported only to seq_end,
   * after seq_begin(TUPLE) and one seq_item: the visitor replaces the
   * sequence by its single element. */
  SR_SERPENT_PAREN = 4
} sr_serpent_seq_t;

/* Callbacks of sr_serpent_parse. Each returns 0 to go on, or a negative
 * SR_E* code to stop the parse (which then returns that code and leaves err
 * alone: the visitor reports its own detail through its ud). `off` is the
 * byte offset of the value in the payload. Strings passed to `string` are
 * decoded, valid UTF-8, owned by the parser and valid only during the call.
 * Order: a scalar or a container (begin ... end) for each value; in a
 * sequence, seq_item after each element; in a dict, dict_pair after each
 * key and its value. */
typedef struct sr_serpent_visitor_s {
  int (*none)(void *ud, size_t off);
  int (*boolean)(void *ud, int v, size_t off);
  int (*integer)(void *ud, int64_t v, size_t off);
  int (*number)(void *ud, double v, size_t off);
  int (*string)(void *ud, const char *s, size_t len, size_t off);
  int (*seq_begin)(void *ud, sr_serpent_seq_t kind, size_t off);
  int (*seq_item)(void *ud, size_t index, size_t off); /* index is 1-based */
  int (*seq_end)(void *ud, sr_serpent_seq_t kind, size_t count, size_t off);
  int (*dict_begin)(void *ud, size_t off);
  int (*dict_pair)(void *ud, size_t key_off);
  int (*dict_end)(void *ud, size_t count, size_t off);
} sr_serpent_visitor_t;

/* Hard ceiling on max_depth: the parser recurses once per level on the C
 * stack (a few hundred bytes each), so larger requests are lowered to it. */
#define SR_SERPENT_MAX_DEPTH 10000

/* Parses one serpent document p[0..n) and reports it to v. max_depth limits
 * the nesting of containers (at most SR_SERPENT_MAX_DEPTH), max_elements the
 * total number of values (dict keys not counted). Returns 0; SR_ESYNTAX, SR_EUTF8, SR_EDEPTH,
 * SR_EELEMENTS or SR_ENOMEM with "serpent: <what> at offset N" in err; or
 * the first non-zero visitor code. scratch (decoded strings, number text)
 * belongs to the caller, who frees it (so a visitor may longjmp out); with
 * scratch NULL the parser uses and frees its own. */
int sr_serpent_parse(const uint8_t *p, size_t n, int max_depth, size_t max_elements,
                     const sr_serpent_visitor_t *v, void *ud, sr_buf_t *scratch, char *err,
                     size_t errlen);

/* Appends s[0..n) as a Python str literal, the way Python's repr() writes it
 * (single quotes unless the text has ' and no ", \\ \' \t \n \r, \xNN for
 * other control and Latin-1 non-printable characters; other non-ASCII
 * characters written as UTF-8). Returns 0, SR_ENOMEM, or SR_EUTF8 when s is
 * not valid UTF-8 (*bad gets the offset of the first bad byte; out may then
 * hold a partial literal: the caller discards it). */
int sr_serpent_put_str(sr_buf_t *out, const char *s, size_t n, size_t *bad);

/* Appends d as Python's repr(float) does ("0.1", "1.0", "1e+16", "-0.0",
 * "5e-324"), except that +/-inf are written 1e30000 / -1e30000 and NaN as
 * {'__class__':'float','value':'nan'}, as serpent does. 0 or SR_ENOMEM.
 * (Digits from sr_json_fmt_double, json.h: the same repr text.) */
int sr_serpent_put_float(sr_buf_t *out, double d);

/* As sr_json_top_string (json.h), for a serpent CONNECT-style payload: the
 * LAST top-level `key` of the document's dict: 1 with its string value in out,
 * 0 when that value is not a string, SR_ENOTFOUND when absent, SR_ESYNTAX...
 * when the payload cannot be read (or is not a dict). */
int sr_serpent_top_string(const uint8_t *p, size_t n, const char *key, sr_buf_t *out,
                          size_t *val_off, char *err, size_t errlen);

#endif
