/*
 * json.h -- the Lua-free pieces of springrun's JSON payload serializer
 * (Pyro4 serializer id 2): UTF-8 validation, string escaping and reading,
 * number formatting (shortest round-trip, Python repr style) and reading
 * (64-bit integers kept exact), base64 for the documented binary form, and
 * a validating skipper. lsr_json.c drives them between the Lua stack and
 * bytes; the daemon thread uses sr_json_handshake_object (payload.h).
 * Byte offsets in error messages are 0-based offsets into the document.
 */
#ifndef SR_JSON_H
#define SR_JSON_H

#include "sr.h"

/* Longest text sr_json_fmt_double writes, plus the NUL. */
#define SR_JSON_DOUBLE_BUFSZ 32
/* Nesting allowed inside a CONNECT handshake (as the default decode limit). */
#define SR_JSON_HANDSHAKE_DEPTH 200

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes at s
 * (avail > 0 of them) are not one (overlong forms, surrogates, code points
 * above U+10FFFF and truncated sequences are all invalid, as in Python). */
size_t sr_utf8_seqlen(const uint8_t *s, size_t avail);
/* Offset of the first byte that starts an invalid sequence, or len when
 * all of s[0..len) is valid UTF-8. */
size_t sr_utf8_check(const uint8_t *s, size_t len);

/* Appends the JSON text of double d to b the way Python's json module does:
 * the shortest digits that read back to the same double (repr), "1.0" for an
 * integral value, exponent form "1e+16"/"1e-05" outside [1e-4, 1e16), and
 * NaN / Infinity / -Infinity. Writes into out[SR_JSON_DOUBLE_BUFSZ] and
 * returns the length (NUL-terminated). */
size_t sr_json_fmt_double(double d, char *out);
/* Decimal text of v into out[24]; returns the length (not NUL-terminated). */
size_t sr_json_fmt_int(int64_t v, char *out);

/* Appends s[0..len) as a JSON string literal (quotes included), escaping
 * '"', '\\' and control characters as Python does with ensure_ascii=False.
 * Returns 0, SR_ENOMEM, or SR_EUTF8 with *bad = offset of the first invalid
 * byte in s (b may then hold a partial literal: the caller resets it). */
int sr_json_put_string(sr_buf_t *b, const uint8_t *s, size_t len, size_t *bad);

/* Reads the JSON string literal whose opening quote is p[pos]. On success
 * *s / *slen give the decoded bytes: they point into p when the literal has
 * no escapes, otherwise into scratch (reset and reused; the caller owns it),
 * and *end is the offset after the closing quote. Rejects raw control
 * characters, invalid UTF-8, bad escapes and lone surrogates (SR_ESYNTAX or
 * SR_EUTF8, err names the offset). */
int sr_json_read_string(const uint8_t *p, size_t n, size_t pos, sr_buf_t *scratch,
                        const char **s, size_t *slen, size_t *end, char *err, size_t errlen);

/* Reads the number at p[pos] ('-' or a digit, also NaN, Infinity and
 * -Infinity). Without fraction or exponent and within int64 it is an integer
 * (*is_int = 1, *iv); otherwise a double (*dv; integers beyond 64 bits become
 * the nearest double). *end is the offset after it. SR_ESYNTAX when the text
 * is not a JSON number (err names the offset). */
int sr_json_read_number(const uint8_t *p, size_t n, size_t pos, int *is_int, int64_t *iv,
                        double *dv, size_t *end, char *err, size_t errlen);

/* Offset of the first non-whitespace byte at or after pos (may be n). */
size_t sr_json_skip_ws(const uint8_t *p, size_t n, size_t pos);

/* Validates and skips one JSON value starting at pos (after whitespace);
 * *end is the offset after it. depth_left bounds nesting. */
int sr_json_skip_value(const uint8_t *p, size_t n, size_t pos, int depth_left,
                       sr_buf_t *scratch, size_t *end, char *err, size_t errlen);

/* Appends the base64 (standard alphabet, '=' padding) of s[0..len) to b. */
int sr_base64_encode(sr_buf_t *b, const uint8_t *s, size_t len);
/* Appends the bytes encoded by the base64 text s[0..len) to b; strict:
 * length a multiple of 4, padding only at the end. SR_ESYNTAX with the
 * offset of the bad character in err. */
int sr_base64_decode(sr_buf_t *b, const uint8_t *s, size_t len, char *err, size_t errlen);

/* "expected ',' or '}' at offset 17" style message (adds " (end of input)"
 * when pos == n); returns code. */
int sr_json_err_at(char *err, size_t errlen, int code, size_t pos, size_t n, const char *what);

/* Reads a CONNECT-style payload: one top-level JSON object, validated whole.
 * For the LAST occurrence of `key` (a later duplicate wins, as in Python):
 * returns 1 with its decoded string value in out (replacing out's contents),
 * 0 when that value is not a string; SR_ENOTFOUND when the key is absent;
 * SR_ESYNTAX/SR_EUTF8/SR_EDEPTH/SR_ENOMEM (err names the offset) when the
 * payload cannot be read. *val_off gets the value's offset when found. */
int sr_json_top_string(const uint8_t *p, size_t n, const char *key, sr_buf_t *out,
                       size_t *val_off, char *err, size_t errlen);

#endif
