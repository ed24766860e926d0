/*
 * dconv.cc -- the C face of libdouble-conversion (see dconv.h). The only C++
 * in the core: two calls, no exceptions, no allocation; the C locale is made once
 * (a thread-safe local static).
 */
#include "dconv.h"

#include <double-conversion/double-conversion.h>
#include <locale.h>
#include <stdlib.h>

using double_conversion::DoubleToStringConverter;

extern "C" int sr_dconv_shortest(double a, char *dig, int *e) {
  bool sign;
  int len, point;
  DoubleToStringConverter::DoubleToAscii(a, DoubleToStringConverter::SHORTEST, 0, dig,
                                         SR_DCONV_DIGITS_BUFSZ, &sign, &len, &point);
  *e = point - 1;
  return len;
}

extern "C" double sr_dconv_strtod(const char *s) {
  static locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
  return c_locale != (locale_t)0 ? strtod_l(s, NULL, c_locale) : strtod(s, NULL);
}
