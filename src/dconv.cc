/*
 * dconv.cc -- the C face of libdouble-conversion and fast_float (see
 * dconv.h). The only C++ in the core: two calls, no exceptions, no
 * allocation, no static objects.
 */
#include "dconv.h"

#include <double-conversion/double-conversion.h>
#include <fast_float/fast_float.h>

using double_conversion::DoubleToStringConverter;

extern "C" int sr_dconv_shortest(double a, char *dig, int *e) {
  bool sign;
  int len, point;
  DoubleToStringConverter::DoubleToAscii(a, DoubleToStringConverter::SHORTEST, 0, dig,
                                         SR_DCONV_DIGITS_BUFSZ, &sign, &len, &point);
  *e = point - 1;
  return len;
}

extern "C" double sr_dconv_strtod(const char *s, size_t n) {
  double d = 0.0;
  const char *p = s, *end = s + n;
  if (p < end && *p == '+') p++; /* from_chars, like C++17's, takes no '+' */
  fast_float::from_chars(p, end, d);
  return d;
}
