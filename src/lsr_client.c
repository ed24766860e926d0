/* lsr_client.c -- placeholder: this part of springrun.core is not written yet. */
#include "lsr.h"

void lsr_open_client(lua_State *L) { (void)L; }
