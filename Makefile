# springrun -- build the C core (springrun.core for Lua 5.4) and the CLI.
# Paths come from variables so that LuaRocks (rockspec/) can override them.

LUA_VERSION ?= 5.4
LUA ?= lua$(LUA_VERSION)
LUA_INCDIR ?= /usr/include/lua$(LUA_VERSION)
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LUADIR ?= $(PREFIX)/share/lua/$(LUA_VERSION)
LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
MANDIR ?= $(PREFIX)/share/man/man1
# Where LuaRocks found the external libraries (rockspec external_dependencies);
# empty: the compiler's default paths.
LIBUV_INCDIR ?=
LIBUV_LIBDIR ?=
OPENSSL_INCDIR ?=
OPENSSL_LIBDIR ?=
ZLIB_INCDIR ?=
ZLIB_LIBDIR ?=
CURL_INCDIR ?=
CURL_LIBDIR ?=
DOUBLE_CONVERSION_INCDIR ?=
DOUBLE_CONVERSION_LIBDIR ?=
FAST_FLOAT_INCDIR ?=
DEP_INC = $(addprefix -I,$(sort $(LIBUV_INCDIR) $(OPENSSL_INCDIR) $(ZLIB_INCDIR) $(CURL_INCDIR) \
  $(DOUBLE_CONVERSION_INCDIR) $(FAST_FLOAT_INCDIR)))
DEP_LIB = $(addprefix -L,$(sort $(LIBUV_LIBDIR) $(OPENSSL_LIBDIR) $(ZLIB_LIBDIR) $(CURL_LIBDIR) \
  $(DOUBLE_CONVERSION_LIBDIR)))

CC ?= cc
CXX ?= c++
OPT ?= -O2
SANITIZE ?=
ifeq ($(SANITIZE),1)
BUILD ?= build-san
SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# make test SANITIZE=1: lua5.4 is not built with ASan, so the ASan runtime is
# preloaded into it (spec/helpers/preload.lua drops LD_PRELOAD again so that
# Python and other children do not inherit it); bin/springrun-san (the CLI
# built with the sanitizers, finding build-san/) links the runtime itself and
# is what the specs start (SPRINGRUN_BIN). LeakSanitizer is off: the
# interpreter is uninstrumented (make valgrind checks leaks instead).
CLI_NAME = springrun-san
TEST_ENV = SPRINGRUN_SANITIZE=1 SPRINGRUN_BIN=$(CURDIR)/bin/springrun-san \
  LD_PRELOAD=$(shell $(CC) -print-file-name=libasan.so) \
  ASAN_OPTIONS=detect_leaks=0:detect_stack_use_after_return=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
BUILD ?= build
CLI_NAME = springrun
TEST_ENV =
SANFLAGS =
endif

WARN = -Wall -Wextra -Werror
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) -g -fPIC -pthread \
             -I$(LUA_INCDIR) $(DEP_INC) $(SANFLAGS) $(CFLAGS)
LIBS_CORE = -luv -lz -lssl -lcrypto -ldouble-conversion -lcurl -lhttp_parser -lpthread -ldl
LIBS_CLI = -llua$(LUA_VERSION) -lreadline -lm -ldl

CORE_SRC = $(filter-out src/main.c src/fuzz_%.c,$(wildcard src/*.c))
# dconv.cc: the C face of libdouble-conversion, the core's only C++ file
CORE_OBJ = $(patsubst src/%.c,$(BUILD)/obj/%.o,$(CORE_SRC)) $(BUILD)/obj/dconv.o
CXXFLAGS_ALL = -std=c++11 -Wall -Wextra -Werror $(OPT) -g -fPIC -fno-exceptions -fno-rtti \
               $(DEP_INC) $(SANFLAGS) $(CXXFLAGS)
HEADERS = $(wildcard src/*.h)
CORE_SO = $(BUILD)/springrun/core.so
CLI = bin/$(CLI_NAME)

BUSTED = $(LUA) /usr/bin/busted
SPEC ?= spec

.PHONY: all deps test demo clean install uninstall fuzz fuzz-clang bench bench-codec valgrind soak

all: $(CORE_SO) $(CLI)

$(BUILD)/obj/%.o: src/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(BUILD)/obj/dconv.o: src/dconv.cc src/dconv.h
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_ALL) -c -o $@ $<

$(CORE_SO): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared $(SANFLAGS) $(LDFLAGS) $(DEP_LIB) -o $@ $(CORE_OBJ) $(LIBS_CORE)

$(CLI): src/main.c src/lsr.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -DSR_BUILD_DIR='"$(BUILD)"' -Wl,-E $(LDFLAGS) -o $@ src/main.c $(LIBS_CLI)

.PHONY: plain
plain:
	$(MAKE) all SANITIZE= BUILD=build

# Installs what is missing (as root on Debian) or says what to install.
deps:
	@sh .ci/deps

# Every busted spec under Lua 5.4; ends with "N passed, N failed". Under
# SANITIZE=1 the plain build is made too: `luarocks test` (install_spec)
# runs the specs the way .busted says, against build/.
ifeq ($(SANITIZE),1)
TEST_ALSO = plain
endif
test: deps all $(TEST_ALSO)
	$(TEST_ENV) SPRINGRUN_BUILD=$(BUILD) $(BUSTED) --lpath='lua/?.lua;lua/?/init.lua;spec/?.lua' \
	  --cpath='$(BUILD)/?.so' --helper=spec/helpers/preload.lua -o spec/helpers/summary_output.lua $(SPEC)

# The main job: a server and a client talking on the default settings.
demo: deps all
	sh examples/demo.sh

# make install PREFIX=P puts the command in P/bin, the modules in
# P/share/lua/5.4 and P/lib/lua/5.4, the man page in P/share/man/man1 (the
# layout src/main.c looks for next to the command). make uninstall (same
# variables) removes exactly those files, and the directories they leave
# empty up to PREFIX.
INSTALLED_DIRS = $(LUADIR) $(LIBDIR)/springrun $(BINDIR) $(MANDIR)
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/springrun $(DESTDIR)$(LUADIR) $(DESTDIR)$(MANDIR)
	install -m 755 $(CLI) $(DESTDIR)$(BINDIR)/springrun
	install -m 755 $(CORE_SO) $(DESTDIR)$(LIBDIR)/springrun/core.so
	cd lua && find springrun -name '*.lua' -exec install -D -m 644 {} $(DESTDIR)$(LUADIR)/{} \;
	install -m 644 springrun.1 $(DESTDIR)$(MANDIR)/springrun.1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/springrun $(DESTDIR)$(LIBDIR)/springrun/core.so $(DESTDIR)$(MANDIR)/springrun.1
	cd lua && find springrun -name '*.lua' -exec rm -f $(DESTDIR)$(LUADIR)/{} \;
	@cd lua && for d in $$(find springrun -depth -type d); do rmdir "$(DESTDIR)$(LUADIR)/$$d" 2>/dev/null || true; done
	@for d in $(INSTALLED_DIRS); do d=$(DESTDIR)$$d; \
	  while [ "$$d" != "$(DESTDIR)$(PREFIX)" ] && [ "$$d" != / ] && rmdir "$$d" 2>/dev/null; do \
	    d=$$(dirname "$$d"); done; done

# The C-facing specs under valgrind memcheck (not in CI: several minutes).
# Fails on any memory error or definite leak (the Lua state is closed at
# exit, so a block our C code lost shows up as definitely lost); suppressions
# (commented) in .ci/valgrind.supp. Child processes are not traced.
VALGRIND_SPECS ?= spec/wire_spec.lua spec/json_spec.lua spec/serpent_spec.lua \
  spec/container_spec.lua spec/daemon_spec.lua spec/exporter_spec.lua spec/proxy_spec.lua \
  spec/reliability_spec.lua spec/fuzz_corpus_spec.lua spec/http_spec.lua
VALGRIND = valgrind --error-exitcode=99 --fair-sched=yes --leak-check=full --show-leak-kinds=definite,possible \
  --errors-for-leak-kinds=definite --num-callers=40 --suppressions=.ci/valgrind.supp

valgrind: deps all
	@command -v valgrind >/dev/null 2>&1 || { echo "make valgrind needs valgrind: apt-get install valgrind"; exit 1; }
	SPRINGRUN_BUILD=$(BUILD) $(VALGRIND) $(BUSTED) --lpath='lua/?.lua;lua/?/init.lua;spec/?.lua' \
	  --cpath='$(BUILD)/?.so' --helper=spec/helpers/preload.lua -o spec/helpers/summary_output.lua $(VALGRIND_SPECS)

# Soak test (not in CI): SOAK_MINUTES (default 2) of mixed load against one
# server process with faults injected; prints calls made/failed and the
# server's RSS over time (bench/soak.lua).
SOAK_MINUTES ?= 2
soak: deps all
	ulimit -n 4096 && SOAK_MINUTES=$(SOAK_MINUTES) $(CLI) bench/soak.lua

# libFuzzer targets (developer tool, not part of `make test`): builds every
# src/fuzz_*.c with clang against the Lua-free core sources and runs each for
# FUZZ_SECONDS on its seed corpus spec/fixtures/fuzz/<name>/ (new inputs go to
# build/fuzz/corpus/<name>/, crashes to build/fuzz/<name>-crash-*).
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_CXX ?= clang++
FUZZ_BUILD = build/fuzz
FUZZ_LIBSRC = $(filter-out src/lsr%.c src/main.c src/fuzz_%.c,$(wildcard src/*.c))
FUZZ_BINS = $(patsubst src/fuzz_%.c,$(FUZZ_BUILD)/fuzz_%,$(wildcard src/fuzz_*.c))
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra -g -O1 -fno-omit-frame-pointer \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc

fuzz: $(FUZZ_BINS)
	@set -e; for t in $(FUZZ_BINS); do n=$${t##*/fuzz_}; \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$n spec/fixtures/fuzz/$$n; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS)s, seeds spec/fixtures/fuzz/$$n"; \
	  $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/$$n- $(FUZZ_BUILD)/corpus/$$n spec/fixtures/fuzz/$$n; \
	  echo "fuzz: $$n ran clean for $(FUZZ_SECONDS)s"; done

fuzz-clang:
	@sh .ci/deps clang
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "make fuzz needs clang with libFuzzer" \
	  "($(FUZZ_CC) not found): apt-get install clang"; exit 1; }

$(FUZZ_BUILD)/fuzz_%: src/fuzz_%.c $(FUZZ_LIBSRC) $(HEADERS) | fuzz-clang
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) -std=c++11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
	  -c -o $@-dconv.o src/dconv.cc
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_LIBSRC) $@-dconv.o -luv -lz -lssl -lcrypto \
	  -ldouble-conversion -lcurl -lhttp_parser -lstdc++ -lpthread -lm

# Benchmarks (issue 7, not part of make test): springrun, Pyro4 and a C floor side by
# side in one run; tables to stdout and bench/results/. BENCH_QUICK=1: short run;
# BENCH_PIN=same|split: pin servers/clients with taskset (see bench/README.md).
BENCH_FLOOR = $(BUILD)/bench/floor
$(BENCH_FLOOR): bench/floor.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(WARN) -O2 -g -pthread -o $@ bench/floor.c

bench: deps all $(BENCH_FLOOR)
	@sh .ci/deps gnuplot-nox
	ulimit -n $$(ulimit -Hn) && BUILD=$(BUILD) /usr/bin/python3 bench/run.py $(if $(BENCH_QUICK),--quick) $(if $(BENCH_PIN),--pin $(BENCH_PIN))

# Codecs side by side without sockets (issue 18): springrun.json/serpent,
# lua-cjson, Python's json and serpent; BENCH_QUICK=1: short run.
bench-codec: deps all
	BUILD=$(BUILD) /usr/bin/python3 bench/codec.py $(if $(BENCH_QUICK),--quick)

clean:
	rm -rf build build-san bin

# Mutation run (issue 20, in CI): each deliberate bug kept in spec/mutants/
# (one file each: what it breaks, the file and exact text it changes, the
# spec files that must catch it) applied alone to a scratch copy of the
# checkout, rebuilt there and checked against those specs only. Fails
# naming every mutant that survives or no longer applies. MUTANTS=word runs
# only the mutants whose file name contains it.
.PHONY: mutants
mutants: deps all
	$(LUA) .ci/mutants.lua $(MUTANTS)
