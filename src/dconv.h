/*
 * dconv.h -- shortest round-trip float digits from Debian's libdouble-conversion
 * (the conversion V8 and Firefox use: one pass where a printf/strtod loop
 * needs up to 17), and locale-free decimal reading. The codecs (json.c,
 * serpent.c) format and read every float through these two calls.
 */
#ifndef SR_DCONV_H
#define SR_DCONV_H

#ifdef __cplusplus
extern "C" {
#endif

/* Longest digit string sr_dconv_shortest writes, plus the NUL. */
#define SR_DCONV_DIGITS_BUFSZ 18

/* The shortest decimal digits of finite a > 0 that read back as a (ties:
 * the closest to a), into dig (SR_DCONV_DIGITS_BUFSZ bytes, NUL-terminated).
 * Returns the digit count; *e is the decimal exponent with a = D.DDD x 10^e. */
int sr_dconv_shortest(double a, char *dig, int *e);

/* The double nearest to the decimal text s (NUL-terminated: digits,
 * optional sign, '.', exponent), read with '.' as the decimal point whatever
 * locale the process has (glibc's strtod_l with the C locale: faster here
 * than the library's reader on 17-digit input). */
double sr_dconv_strtod(const char *s);

#ifdef __cplusplus
}
#endif
#endif
