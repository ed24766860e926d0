/*
 * dconv.h -- float text both ways through Debian's libraries: the shortest
 * round-trip digits from libdouble-conversion (the conversion V8 and Firefox
 * use: one pass where a printf/strtod loop needs up to 17), and exact,
 * locale-free reading from fast_float (header-only). The codecs (json.c,
 * serpent.c) format and read every float through these two calls.
 */
#ifndef SR_DCONV_H
#define SR_DCONV_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest digit string sr_dconv_shortest writes, plus the NUL. */
#define SR_DCONV_DIGITS_BUFSZ 18

/* The shortest decimal digits of finite a > 0 that read back as a (ties:
 * the closest to a), into dig (SR_DCONV_DIGITS_BUFSZ bytes, NUL-terminated).
 * Returns the digit count; *e is the decimal exponent with a = D.DDD x 10^e. */
int sr_dconv_shortest(double a, char *dig, int *e);

/* The double nearest to the decimal text s[0..n) (digits with an optional
 * sign, '.', exponent: the caller has checked the syntax), with '.' as the
 * decimal point whatever the process locale; out of range gives +-inf or
 * +-0 as strtod does. fast_float's Eisel-Lemire reader: exact, and several
 * times faster than strtod on 17-digit input. */
double sr_dconv_strtod(const char *s, size_t n);

#ifdef __cplusplus
}
#endif
#endif
