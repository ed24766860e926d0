/* lsr_json.c -- placeholder: this part of springrun.core is not written yet. */
#include "lsr.h"

void lsr_open_json(lua_State *L) { (void)L; }
