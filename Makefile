# pg_outbox — PGXS build.  `make && make install`, then see README.md.
EXTENSION  = pg_outbox
MODULE_big = pg_outbox
EXTVERSION = 1.3

CXX_SRCS = src/rights.cpp src/guard.cpp src/limits.cpp src/json_writer.cpp src/envelope.cpp src/json_impl.cpp src/pg_outbox.cpp src/shmem.cpp src/wakeup.cpp \
           src/utility_hook.cpp src/pending_ddl.cpp src/notify.cpp src/payload.cpp \
           src/trigger_config.cpp src/trigger_row.cpp src/trigger_buffer.cpp src/trigger_attach.cpp \
           src/xact_events.cpp src/invalidation.cpp src/jsonb_text.cpp src/spi_util.cpp src/publish.cpp src/drain.cpp src/drain_failures.cpp src/history.cpp \
           src/direct.cpp src/worker_settings.cpp src/launcher.cpp src/worker.cpp src/admin.cpp \
           src/schema_guard.cpp src/consumers.cpp src/health.cpp src/log_pass.cpp src/log_publish.cpp \
           src/storage_mode.cpp src/log_epoch.cpp
OBJS = $(CXX_SRCS:.cpp=.o)

# The install script is assembled from one piece per feature (src/sql/NN_*.sql). The scripts
# of released versions are frozen in src/sql/releases/ (install scripts of 0.9 .. 1.2, and the
# upgrades between them); the upgrade from the previous release is assembled the same way from
# src/sql/upgrade/NN_*.sql. Built scripts go to src/sql/build/ (not committed).
SQL_PARTS  = $(sort $(wildcard src/sql/[0-9]*.sql))
PREVVERSION = 1.2
DATA_built = src/sql/build/$(EXTENSION)--$(EXTVERSION).sql src/sql/build/$(EXTENSION)--$(PREVVERSION)--$(EXTVERSION).sql
DATA       = $(wildcard src/sql/releases/$(EXTENSION)--*.sql)

# Regression tests run by test/run_tests.sh (it calls pg_regress and friends with a
# temporary instance that preloads the library, as an unprivileged user).
REGRESS = $(basename $(notdir $(wildcard sql/*.sql)))

PG_CONFIG ?= pg_config

# Debian's server is built with LLVM JIT; PGXS would also compile every source to
# LLVM bitcode for inlining.  That gains nothing for this extension (its hot paths are
# executor and SPI calls, not tiny inlinable functions) and needs clang++ to understand
# the same C++17 + Boost code, so bitcode is switched off on purpose.
override with_llvm := no

PG_CPPFLAGS = -I$(srcdir)/src -DPG_OUTBOX_VERSION='"$(EXTVERSION)"'
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-register
SHLIB_LINK  = -lstdc++

EXTRA_CLEAN = $(DATA_built) test/unit/unit_tests results tmp_check regression.diffs regression.out \
              $(LISTEN_BIN) $(LISTEN_OBJS)

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The version is compiled in (PG_OUTBOX_VERSION): objects are rebuilt when this file changes.
$(OBJS): Makefile $(wildcard src/*.hpp)

# The limits (src/limits.hpp, one definition each) reach the SQL pieces by substitution:
# @MAX_CHANNEL_BYTES@ and @MAX_PAYLOAD_BYTES@ become the numbers defined there, so a CHECK stays a
# plain comparison. A token left over (misspelt) fails the build.
limit_of = $(shell sed -n 's/^\#define PGO_$(1) \([0-9][0-9]*\).*/\1/p' $(srcdir)/src/limits.hpp)
SQL_LIMITS = -e 's/@MAX_CHANNEL_BYTES@/$(call limit_of,MAX_CHANNEL_BYTES)/g' \
             -e 's/@MAX_PAYLOAD_BYTES@/$(call limit_of,MAX_PAYLOAD_BYTES)/g'
define assemble_sql
	@mkdir -p src/sql/build
	cat $(1) | sed $(SQL_LIMITS) > $@.tmp
	@if grep -n '@[A-Z_]*@' $@.tmp; then echo "$@: unknown @TOKEN@ above (src/limits.hpp defines the limits)"; rm -f $@.tmp; exit 1; fi
	mv $@.tmp $@
endef

src/sql/build/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS) src/limits.hpp
	$(call assemble_sql,$(SQL_PARTS))

UPGRADE_PARTS = $(sort $(wildcard src/sql/upgrade/[0-9]*.sql))
src/sql/build/$(EXTENSION)--$(PREVVERSION)--$(EXTVERSION).sql: $(UPGRADE_PARTS) src/limits.hpp
	$(call assemble_sql,$(UPGRADE_PARTS))

# The reference consumer pg_outbox_listen: a C++17 program on libpq (not part of the module),
# installed into the server's bindir next to psql. Its objects are built with their own flags.
LISTEN_BIN    = src/listen/pg_outbox_listen
LISTEN_OWN    = src/listen/main.o src/listen/listen_core.o
LISTEN_SHARED = src/listen/envelope.o src/listen/json_writer.o src/listen/json_impl.o
LISTEN_OBJS   = $(LISTEN_OWN) $(LISTEN_SHARED)
LISTEN_CXXFLAGS = -std=c++17 -O2 -g -Wall -Wextra -I$(srcdir)/src -I$(includedir)

all: $(LISTEN_BIN)

$(LISTEN_OWN): src/listen/%.o: src/listen/%.cpp $(wildcard src/listen/*.hpp) src/envelope.hpp src/json_writer.hpp src/limits.hpp
	$(CXX) $(LISTEN_CXXFLAGS) -c -o $@ $<
$(LISTEN_SHARED): src/listen/%.o: src/%.cpp src/envelope.hpp src/json_writer.hpp src/limits.hpp
	$(CXX) $(LISTEN_CXXFLAGS) -c -o $@ $<
$(LISTEN_BIN): $(LISTEN_OBJS)
	$(CXX) -o $@ $^ -L$(libdir) -lpq

install: install-listen
install-listen: $(LISTEN_BIN)
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) $(LISTEN_BIN) '$(DESTDIR)$(bindir)/pg_outbox_listen'
uninstall: uninstall-listen
uninstall-listen:
	rm -f '$(DESTDIR)$(bindir)/pg_outbox_listen'

# The boundary self-test (test/selftest): a module of its own for the tests, never installed by
# `make install`; test/pgenv.sh installs it into the tests' private installation.
SELFTEST_SO = test/selftest/pg_outbox_selftest$(DLSUFFIX)
$(SELFTEST_SO): test/selftest/boundary_selftest.cpp src/guard.cpp src/guard.hpp
	$(CXX) $(CXXFLAGS) $(CFLAGS_SL) $(PG_CXXFLAGS) $(CPPFLAGS) -shared -o $@ test/selftest/boundary_selftest.cpp src/guard.cpp
install-selftest: $(SELFTEST_SO)
	$(MKDIR_P) '$(DESTDIR)$(pkglibdir)'
	$(INSTALL_SHLIB) $(SELFTEST_SO) '$(DESTDIR)$(pkglibdir)/'
EXTRA_CLEAN += $(SELFTEST_SO)
.PHONY: install-selftest

# Pure C++ unit tests (no Postgres headers involved).
UNIT_SRCS = $(wildcard test/unit/*.cpp) src/json_writer.cpp src/envelope.cpp src/json_impl.cpp src/payload.cpp src/listen/listen_core.cpp
test/unit/unit_tests: $(UNIT_SRCS) $(wildcard src/*.hpp src/listen/*.hpp)
	$(CXX) -std=c++17 -Wall -Wextra -O1 -g -I$(srcdir)/src -o $@ $(UNIT_SRCS) -lgtest -lgtest_main -pthread

unit: test/unit/unit_tests
	bash test/check_compat.sh
	bash test/check_wrappers.sh
	bash test/check_wrappers_test.sh
	./test/unit/unit_tests

format:
	clang-format -i src/*.cpp src/*.hpp src/listen/*.cpp src/listen/*.hpp test/unit/*.cpp

.PHONY: unit format install-listen uninstall-listen

# libFuzzer targets for the pure C++ code that parses or renders (test/fuzz/): built with
# Debian's clang (clang-14 + libclang-rt-14-dev), ASan and UBSan; test/run_tests.sh fuzz runs
# each for a bounded time on a copy of its seed corpus (test/fuzz/corpus/<target>).
FUZZ_CXX     ?= clang++-14
FUZZ_TARGETS  = template payload envelope listen
FUZZ_SRCS     = src/json_writer.cpp src/envelope.cpp src/json_impl.cpp src/payload.cpp src/listen/listen_core.cpp
FUZZ_DIR     ?= test/fuzz/bin
FUZZ_BINS     = $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))
$(FUZZ_DIR)/fuzz_%: test/fuzz/fuzz_%.cpp test/fuzz/fuzz_util.hpp $(FUZZ_SRCS) $(wildcard src/*.hpp src/listen/*.hpp)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CXX) -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	    -I$(srcdir)/src -I$(srcdir)/test/fuzz -o $@ $< $(FUZZ_SRCS)
fuzz-build: $(FUZZ_BINS)
EXTRA_CLEAN += test/fuzz/bin
.PHONY: fuzz-build
