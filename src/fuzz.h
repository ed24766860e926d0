/*
 * fuzz.h -- what every libFuzzer target (src/fuzz_*.c, built by `make
 * fuzz`) starts with: the entry point's prototype and CHECK(cond), which
 * reports the target (FUZZ_NAME, defined before including this), the line
 * and the condition, then aborts so libFuzzer saves the input.
 */
#ifndef SR_FUZZ_H
#define SR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef FUZZ_NAME
#error "define FUZZ_NAME (the target's name) before including fuzz.h"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      fprintf(stderr, "%s: check failed at line %d: %s\n", FUZZ_NAME, __LINE__, #cond); \
      abort();                                                                        \
    }                                                                                 \
  } while (0)

#endif
