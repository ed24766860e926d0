/* lsr_container.c -- placeholder: this part of springrun.core is not written yet. */
#include "lsr.h"

void lsr_open_container(lua_State *L) { (void)L; }
