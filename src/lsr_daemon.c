/* lsr_daemon.c -- placeholder: this part of springrun.core is not written yet. */
#include "lsr.h"

void lsr_open_daemon(lua_State *L) { (void)L; }
