# Thin wrapper around Meson so that a newcomer needs two commands:
#   make demo    build, then live-migrate a running 2 GiB KVM guest (minivm) between two
#                processes on this machine (without KVM: a synthetic 4 GiB live workload)
#   make check   build, then run the whole test suite
# Other targets: build, asan, tsan, fuzz, fuzz-long, qpl-check, bench, bench-live, bench-minivm,
# bench-compress, bench-accel, bench-devstate, bench-colo, bench-tls, bench-resume, format, clean.

BUILD    ?= build
MESON    ?= meson
FUZZ_SECONDS ?= 60
DEMO_SIZE ?= 2G

.PHONY: all build deps demo check asan tsan fuzz fuzz-long bench bench-live bench-minivm bench-compress bench-accel bench-devstate bench-colo bench-tls bench-resume format clean qpl-check

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/build.ninja: | deps
	$(MESON) setup $(BUILD) >/dev/null

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# minivm's guest migrated live and checked (scripts/demo.sh); without a usable
# /dev/kvm, two writer threads dirty 100 MB/s of a 4 GiB image instead.
demo: build
	./scripts/demo.sh $(BUILD) $(DEMO_SIZE)

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
	TSAN_OPTIONS=halt_on_error=1 ./scripts/run-tests.py build-tsan --suite e2e --suite threads

# libFuzzer: each target for FUZZ_SECONDS on its corpus (new finds go to corpus-new/).
fuzz: deps
	[ -f build-fuzz/build.ninja ] || CC=clang $(MESON) setup build-fuzz -Dfuzzing=true \
	    -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
	ninja -C build-fuzz
	for t in handshake chack packet control minivm_state minivm_sdev codec_zlib codec_zstd codec_deflate_page codec_lz4 tls_record; do \
	    [ -x build-fuzz/tests/fuzz/fuzz_$$t ] || { echo "fuzz_$$t: not built (no GnuTLS?)"; continue; }; \
	    mkdir -p tests/fuzz/corpus-new/$$t; \
	    ./build-fuzz/tests/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        tests/fuzz/corpus-new/$$t tests/fuzz/corpus/$$t || exit 1; \
	done

fuzz-long:
	$(MAKE) fuzz FUZZ_SECONDS=3600

# The figures of docs/benchmarks.md: foundation (issue 2), live pre-copy
# (issue 3), minivm (issue 4; skipped without /dev/kvm) and compression
# (issue 5; the emulated links are skipped without network namespaces).
bench: build
	./bench/run_foundation.py $(BUILD)
	./bench/run_live.py $(BUILD) --cold
	./bench/run_minivm.py $(BUILD) --rings || [ $$? = 77 ]
	./$(BUILD)/bench/bench_codec
	./bench/run_compress.py $(BUILD) || [ $$? = 77 ]
	./bench/run_devstate.py $(BUILD) || [ $$? = 77 ]
	./bench/run_colo.py $(BUILD) || [ $$? = 77 ]
	./bench/run_tls.py $(BUILD) || [ $$? = 77 ]
	./bench/run_tls.py $(BUILD) --cold --only plain,x509 || [ $$? = 77 ]
	./bench/run_resume.py $(BUILD) --runs 10

# TLS against plain (issue 9): prefaulted destination, then cold.
bench-tls: build
	./bench/run_tls.py $(BUILD)
	./bench/run_tls.py $(BUILD) --cold --only plain,x509

# A channel cut half way with resume=on, against an uninterrupted migration (issue 9).
bench-resume: build
	./bench/run_resume.py $(BUILD) --runs 10 --markdown

bench-minivm: build
	./bench/run_minivm.py $(BUILD) --rings

bench-live: build
	./bench/run_live.py $(BUILD) --cold

# Every codec over 1 and 10 Gbit/s links (two network namespaces, bench/linkemu.sh;
# needs root) and plain loopback: bench/run_compress.py.
bench-compress: build
	./bench/run_compress.py $(BUILD)

# Zero-page detection through the DSA pipeline (accel=dsa-model) against the
# CPU path on loopback: time ratio and channel-thread CPU (bench/run_accel.py).
bench-accel: build
	./bench/run_accel.py $(BUILD)

# Downtime of a minivm with 512 MiB of device state: over the data channels
# against serially on the control channel (bench/run_devstate.py).
bench-devstate: build
	./bench/run_devstate.py $(BUILD) --markdown

# Continuous checkpoints: a 2 GiB minivm (writer asked for 50 MB/s; the nested guest
# reaches about 30) protected by a standby,
# a checkpoint every 200 ms for 55 s: pause, ack and commit times against the
# downtime of a plain live migration of the same VM (bench/run_colo.py).
bench-colo: build
	./bench/run_colo.py $(BUILD)

# deflate-page's IAA hardware path (src/codec/deflate_qpl.c and the codec's
# use of it), compiled syntax-only against the declarations-only stub of Intel
# QPL in tests/stub/ (Debian has no QPL), so that it keeps compiling without
# the library. Needs no configured build: the -D flags stand in for vmig_config.h.
QPL_CHECK_CFLAGS = -std=c11 -D_GNU_SOURCE -fno-strict-aliasing -Wall -Wextra -Werror \
    -Wno-missing-field-initializers -fsyntax-only -DVMIG_HAVE_QPL_STUB_CHECK \
    -DVMIG_HAVE_ISAL=1 -DVMIG_HAVE_ZLIB=1 -I tests/stub -I include -I src

qpl-check:
	$(CC) $(QPL_CHECK_CFLAGS) src/codec/deflate_qpl.c src/codec/codec_deflate_page.c

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
