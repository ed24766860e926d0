/* lsr_serpent.c -- placeholder: this part of springrun.core is not written yet. */
#include "lsr.h"

void lsr_open_serpent(lua_State *L) { (void)L; }
