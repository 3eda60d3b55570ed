# Linux-on-Linux: plain Makefile. `make`, `make check`, `make install`, `make asan`, `make fuzz`.
CC ?= cc
CFLAGS ?= -O2 -g
override CFLAGS += -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -Isrc -MMD -MP
LDFLAGS ?=
LDLIBS += -lpthread
PREFIX ?= /usr/local
BUILD ?= build
VERSION := 0.1.0

# Optional libraries, each used only when its -dev package is installed (README lists why).
HAVE_LIBURING := $(shell pkg-config --exists liburing 2>/dev/null && echo 1)
ifeq ($(HAVE_LIBURING),1)
override CFLAGS += -DHAVE_LIBURING
LDLIBS += -luring
endif
HAVE_LIBSLIRP := $(shell pkg-config --exists slirp 2>/dev/null && echo 1)
ifeq ($(HAVE_LIBSLIRP),1)
override CFLAGS += -DHAVE_LIBSLIRP $(shell pkg-config --cflags slirp)
LDLIBS += $(shell pkg-config --libs slirp)
else ifneq ($(wildcard /usr/include/slirp/libslirp.h),)
# Debian's slirp.pc requires glib-2.0.pc, which only libglib2.0-dev brings; libslirp.h itself
# needs no glib, so the header and the library are enough.
HAVE_LIBSLIRP := 1
override CFLAGS += -DHAVE_LIBSLIRP -I/usr/include/slirp
LDLIBS += -lslirp
endif
override CFLAGS += -DVMM_VERSION='"$(VERSION)"'

SRCS := $(wildcard src/*.c src/*/*.c src/*/*/*.c)
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
OBJS := $(SRCS:%.c=$(BUILD)/%.o)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:%.c=$(BUILD)/%)

# Tiny guests for the integration tests, laid out byte for byte in assembly.
FIXTURES := $(BUILD)/tests/fixtures/echo.bzImage $(BUILD)/tests/fixtures/count.bzImage

all: $(BUILD)/vmm selftest $(FIXTURES)

# Nothing but main.c's weak reference names the software CPU, so pull its object out of the
# archive explicitly once it exists.
comma := ,
EMU_LINK := $(if $(wildcard src/cpu/emu/backend.c),-Wl$(comma)-u$(comma)cpu_backend_emu)
$(BUILD)/vmm: $(BUILD)/src/main.o $(BUILD)/libvmm.a
	$(CC) $(LDFLAGS) $(EMU_LINK) -o $@ $^ $(LDLIBS)
	$(if $(filter build,$(BUILD)),ln -sf $(BUILD)/vmm vmm) # the sanitizer build does not take over ./vmm

$(BUILD)/libvmm.a: $(LIB_OBJS)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/unit/%: tests/unit/%.c $(BUILD)/libvmm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libvmm.a $(LDLIBS)

# The self-test guest: a freestanding kernel built with the host compiler (guest/selftest/Makefile).
selftest:
	$(MAKE) -C guest/selftest

unit: $(UNIT_BINS)

$(BUILD)/tests/fixtures/%.bzImage: tests/fixtures/%_kernel.S
	@mkdir -p $(dir $@)
	$(CC) -c -o $(@:.bzImage=.o) $<
	objcopy -O binary -j .text $(@:.bzImage=.o) $@

check: all unit $(FIXTURES) asan
	tests/run

# The default Linux guest, from Debian's packages only (guest/linux/build).
guest:
	guest/linux/build

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
		LDFLAGS="-fsanitize=address,undefined" build-asan/vmm $(UNIT_SRCS:%.c=build-asan/%)

# The software CPU's differential test against the host with many more cases than `make check`
# runs (EMU_DIFF_ITERS per form, default 2000: ~7M cases) and a new seed each time, printed
# first so that a failure can be replayed with EMU_DIFF_SEED.
# The house style's checks (style.md) on what changed since .clang-format was adopted, or since
# LINT_BASE=REV: clang-format on changed lines, cppcheck and clang-tidy on changed files.
lint:
	tools/lint $(LINT_BASE)

fuzz-emu: $(BUILD)/tests/unit/test_emu_diff
	@seed=$${EMU_DIFF_SEED:-$$(date +%s)}; echo "EMU_DIFF_SEED=$$seed"; \
		EMU_DIFF_SEED=$$seed EMU_DIFF_ITERS=$${EMU_DIFF_ITERS:-2000} $< >$(BUILD)/fuzz-emu.log; \
		rc=$$?; grep -v '^ok - ' $(BUILD)/fuzz-emu.log; exit $$rc

# libFuzzer target for the virtqueue code under ASan/UBSan (needs clang). Run it with e.g.
# build-fuzz/fuzz_virtq -max_total_time=60
FUZZ_SRCS := tests/fuzz/fuzz_virtq.c src/virtio/virtq.c src/memory.c
fuzz: build-fuzz/fuzz_virtq build-fuzz/fuzz_api build-fuzz/fuzz_gdb build-fuzz/fuzz_boot fuzz-emu
build-fuzz/fuzz_virtq: $(FUZZ_SRCS) src/virtio/virtq.h src/memory.h
	@mkdir -p build-fuzz
	clang -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-std=gnu11 -Wall -Wextra -D_GNU_SOURCE -Isrc -o $@ $(FUZZ_SRCS)

# A bzImage's LZ4 payload through the direct start (build-fuzz/fuzz_boot -max_total_time=60).
FUZZ_BOOT_SRCS := tests/fuzz/fuzz_boot.c $(wildcard src/boot/*.c) src/memory.c
build-fuzz/fuzz_boot: $(FUZZ_BOOT_SRCS) src/boot/boot.h src/boot/lz4.h src/memory.h
	@mkdir -p build-fuzz
	clang -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-std=gnu11 -Wall -Wextra -D_GNU_SOURCE -Isrc -o $@ $(FUZZ_BOOT_SRCS)

# The gdb stub's packet framing and command interpreter (build-fuzz/fuzz_gdb -max_total_time=60).
FUZZ_GDB_SRCS := tests/fuzz/fuzz_gdb.c src/gdb/packet.c src/gdb/protocol.c src/gdb/x86.c
build-fuzz/fuzz_gdb: $(FUZZ_GDB_SRCS) src/gdb/packet.h src/gdb/protocol.h src/gdb/x86.h
	@mkdir -p build-fuzz
	clang -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-std=gnu11 -Wall -Wextra -D_GNU_SOURCE -Isrc -o $@ $(FUZZ_GDB_SRCS)

# The control socket's HTTP/JSON parsers and routes (build-fuzz/fuzz_api -max_total_time=60).
FUZZ_API_SRCS := tests/fuzz/fuzz_api.c src/api/http.c src/api/json.c src/api/api.c
build-fuzz/fuzz_api: $(FUZZ_API_SRCS) src/api/api.h src/api/http.h src/api/json.h
	@mkdir -p build-fuzz
	clang -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-std=gnu11 -Wall -Wextra -D_GNU_SOURCE -DVMM_VERSION='"$(VERSION)"' -Isrc -o $@ $(FUZZ_API_SRCS)

install: $(BUILD)/vmm
	install -D -m 0755 $(BUILD)/vmm $(DESTDIR)$(PREFIX)/bin/vmm
	install -D -m 0644 docs/vmm.1 $(DESTDIR)$(PREFIX)/share/man/man1/vmm.1
	install -D -m 0755 tools/runvmm $(DESTDIR)$(PREFIX)/bin/runvmm
	install -D -m 0644 docs/runvmm.1 $(DESTDIR)$(PREFIX)/share/man/man1/runvmm.1
	install -D -m 0644 docs/vmmrc.5 $(DESTDIR)$(PREFIX)/share/man/man5/vmmrc.5

clean:
	rm -rf $(BUILD) build-asan build-fuzz vmm
	$(MAKE) -C guest/selftest clean

.PHONY: all selftest unit check guest asan fuzz fuzz-emu lint install clean
-include $(OBJS:.o=.d) $(UNIT_BINS:=.d)
