# Thin wrapper around Meson so that a newcomer needs two commands:
#   make demo    build, then live-migrate a 4 GiB image between two processes on loopback
#   make check   build, then run the whole test suite
# Other targets: build, asan, tsan, fuzz, fuzz-long, bench, bench-live, format, clean.

BUILD    ?= build
MESON    ?= meson
DEMO_SIZE ?= 4G
FUZZ_SECONDS ?= 60

.PHONY: all build deps demo check asan tsan fuzz fuzz-long bench bench-live format clean

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/build.ninja: | deps
	$(MESON) setup $(BUILD) >/dev/null

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Live: two writer threads dirty 100 MB/s over a 512 MiB hot set of the
# source while it moves over a 1 GB/s link (the link, not the CPU, limits).
demo: build
	./$(BUILD)/tools/vmig/vmig bench --live --size $(DEMO_SIZE) --hot-set 512M \
	    --dirty-rate 100000000 --max-bandwidth 1000000000 --progress

check: build
	./scripts/run-tests.py $(BUILD)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
asan: deps
	[ -f build-asan/build.ninja ] || $(MESON) setup build-asan -Dbuildtype=debugoptimized \
	    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
	ninja -C build-asan
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
	    ./scripts/run-tests.py build-asan

# The threaded tests under ThreadSanitizer.
tsan: deps
	[ -f build-tsan/build.ninja ] || CC=clang $(MESON) setup build-tsan \
	    -Dbuildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false >/dev/null
	ninja -C build-tsan
	TSAN_OPTIONS=halt_on_error=1 ./scripts/run-tests.py build-tsan --suite e2e

# libFuzzer: each target for FUZZ_SECONDS on its corpus (new finds go to corpus-new/).
fuzz: deps
	[ -f build-fuzz/build.ninja ] || CC=clang $(MESON) setup build-fuzz -Dfuzzing=true \
	    -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
	ninja -C build-fuzz
	for t in handshake packet control; do \
	    mkdir -p tests/fuzz/corpus-new/$$t; \
	    ./build-fuzz/tests/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        tests/fuzz/corpus-new/$$t tests/fuzz/corpus/$$t || exit 1; \
	done

fuzz-long:
	$(MAKE) fuzz FUZZ_SECONDS=3600

# The figures of docs/benchmarks.md: foundation (issue 2) and live pre-copy (issue 3).
bench: build
	./bench/run_foundation.py $(BUILD)
	./bench/run_live.py $(BUILD) --cold

bench-live: build
	./bench/run_live.py $(BUILD) --cold

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
