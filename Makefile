# pg_outbox — PGXS build.  `make && make install`, then see README.md.
EXTENSION  = pg_outbox
MODULE_big = pg_outbox
EXTVERSION = 1.0

CXX_SRCS = src/guard.cpp src/envelope.cpp src/json_impl.cpp src/pg_outbox.cpp src/notify.cpp src/payload.cpp src/trigger.cpp \
           src/outbox.cpp src/worker.cpp
OBJS = $(CXX_SRCS:.cpp=.o)

# The install script is assembled from one piece per feature (src/sql/NN_*.sql).
SQL_PARTS  = $(sort $(wildcard src/sql/[0-9]*.sql))
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA       = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*.sql))

# Regression tests run by test/run_tests.sh (it calls pg_regress and friends with a
# temporary instance that preloads the library, as an unprivileged user).
REGRESS = $(filter-out $(EXTENSION)--%,$(basename $(notdir $(wildcard sql/*.sql))))

PG_CONFIG ?= pg_config

# Debian's server is built with LLVM JIT; PGXS would also compile every source to
# LLVM bitcode for inlining.  That gains nothing for this extension (its hot paths are
# executor and SPI calls, not tiny inlinable functions) and needs clang++ to understand
# the same C++17 + Boost code, so bitcode is switched off on purpose.
override with_llvm := no

PG_CPPFLAGS = -I$(srcdir)/src
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-register
SHLIB_LINK  = -lstdc++

EXTRA_CLEAN = $(DATA_built) test/unit/unit_tests results tmp_check regression.diffs regression.out

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

$(DATA_built): $(SQL_PARTS)
	cat $^ > $@

# Pure C++ unit tests (no Postgres headers involved).
UNIT_SRCS = $(wildcard test/unit/*.cpp) src/envelope.cpp src/json_impl.cpp src/payload.cpp
test/unit/unit_tests: $(UNIT_SRCS) $(wildcard src/*.hpp)
	$(CXX) -std=c++17 -Wall -Wextra -O1 -g -I$(srcdir)/src -o $@ $(UNIT_SRCS) -lgtest -lgtest_main -pthread

unit: test/unit/unit_tests
	./test/unit/unit_tests

format:
	clang-format -i src/*.cpp src/*.hpp test/unit/*.cpp

.PHONY: unit format
