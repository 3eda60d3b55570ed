/* The software CPU's JIT code memory (jit.c): blocks compiled until the buffer is full, then
 * everything dropped at once and compiled again from the start; a block's code is used only in
 * the generation it was compiled in; a block larger than the whole buffer stays interpreted;
 * the code pages are never writable and executable at once. What the compiled code computes
 * is checked against the host by test_emu_diff (every case also runs compiled) and through
 * emu_run() by test_emu_system's test_blocks_compiled. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/emu/decode.h"
#include "cpu/emu/emu.h"
#include "cpu/emu/fast.h"
#include "cpu/emu/jit.h"
#include "test.h"

#define CODE_LA 0x10000

static struct emu_flat_memory mem;
static uint8_t code_page[4096];
static struct emu_cpu cpu;

static void cpu_reset(void)
{
	struct cpu_state s;

	memset(&s, 0, sizeof(s));
	s.rip = CODE_LA;
	s.rflags = 2;
	s.cr0 = CR0_PE | CR0_PG;
	s.cr4 = CR4_PAE;
	s.efer = EFER_LME | EFER_LMA;
	s.seg[SEG_CS] = (struct cpu_segment){ .selector = 0x10,
					      .type = 11,
					      .present = 1,
					      .s = 1,
					      .l = 1,
					      .g = 1,
					      .limit = 0xffffffff };
	s.seg[SEG_SS] = (struct cpu_segment){ .selector = 0x18,
					      .type = 3,
					      .present = 1,
					      .s = 1,
					      .db = 1,
					      .g = 1,
					      .limit = 0xffffffff };
	memset(&mem, 0, sizeof(mem));
	emu_flat_add(&mem, CODE_LA, code_page, sizeof(code_page), false);
	cpu.mem = &emu_flat_memory_ops;
	cpu.mem_opaque = &mem;
	emu_cpu_init(&cpu, &s);
}

/* Decode `n` instructions of `bytes` as a block does. */
static void block_decode(const uint8_t *bytes, unsigned len, struct emu_insn *insn, unsigned n)
{
	unsigned pos = 0;

	for (unsigned i = 0; i < n; i++) {
		CHECK_EQ(emu_decode(bytes + pos, len - pos, EMU_MODE_64, &insn[i]), EMU_DECODE_OK);
		emu_fast_select(&insn[i], EMU_MODE_64);
		if (!insn[i].fast)
			insn[i].fast = emu_block_generic;
		pos += insn[i].len;
	}
}

/* add eax, 5; imul ecx, eax; mov edx, ecx: eax = 7 + 5 = 12, ecx = 12 * 3, edx = ecx */
static const uint8_t prog[] = { 0x83, 0xC0, 0x05, 0x0F, 0xAF, 0xC8, 0x89, 0xCA };

static int run_prog(emu_jit_fn fn)
{
	cpu_reset();
	memcpy(code_page, prog, sizeof(prog));
	cpu.s.gpr[CPU_RAX] = 7;
	cpu.s.gpr[CPU_RCX] = 3;
	cpu.block_exit = false;
	return emu_jit_run(fn, &cpu);
}

static void check_prog_result(void)
{
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 12);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 36);
	CHECK_EQ(cpu.s.gpr[CPU_RDX], 36);
	CHECK_EQ(cpu.s.rip, CODE_LA + sizeof(prog));
	CHECK_EQ(cpu.instructions, 3);
}

static void test_buffer_reused_after_flush(void)
{
	struct emu_jit *jit = emu_jit_create(4096, 0, true);
	struct emu_insn insn[3];
	struct emu_jit_ref refs[64];
	emu_jit_fn first;
	unsigned i;

	CHECK(jit != NULL);
	if (!jit)
		return;
	block_decode(prog, sizeof(prog), insn, 3);
	memset(refs, 0, sizeof(refs));
	first = emu_jit_block(jit, &refs[0], insn, 3);
	CHECK(first != NULL);
	if (!first) {
		emu_jit_destroy(jit);
		return;
	}
	CHECK(emu_jit_block(jit, &refs[0], insn, 3) == first); /* compiled once */
	CHECK_EQ(run_prog(first), EMU_OK);
	check_prog_result();
	/* Fill the buffer: the block after the last that fits starts a new generation at the
	 * beginning of the buffer, where `first` was. */
	for (i = 1; i < 64 && emu_jit_flushes(jit) == 0; i++)
		CHECK(emu_jit_block(jit, &refs[i], insn, 3) != NULL);
	CHECK_EQ(emu_jit_flushes(jit), 1);
	CHECK(i > 4 && i < 64);
	CHECK(refs[i - 1].code == first); /* the same address, new code */
	/* refs[0]'s code is of the old generation: compiled again, not reused as it was. */
	CHECK(emu_jit_block(jit, &refs[0], insn, 3) != NULL);
	CHECK(refs[0].code != first);
	if (refs[0].code && refs[i - 1].code) {
		CHECK_EQ(run_prog(refs[0].code), EMU_OK);
		check_prog_result();
		CHECK_EQ(run_prog(refs[i - 1].code), EMU_OK);
		check_prog_result();
	}
	emu_jit_destroy(jit);
}

static void test_threshold_and_generation(void)
{
	struct emu_jit *jit = emu_jit_create(4096, 3, true);
	struct emu_insn insn[3];
	struct emu_jit_ref ref = { 0 }, other = { 0 };
	emu_jit_fn code;

	CHECK(jit != NULL);
	if (!jit)
		return;
	block_decode(prog, sizeof(prog), insn, 3);
	for (unsigned i = 0; i < 3; i++)
		CHECK(emu_jit_block(jit, &ref, insn, 3) == NULL); /* counted, interpreted */
	code = emu_jit_block(jit, &ref, insn, 3);
	CHECK(code != NULL);
	if (!code) {
		emu_jit_destroy(jit);
		return;
	}
	CHECK_EQ(run_prog(code), EMU_OK);
	check_prog_result();
	/* A block rebuilt by the block cache has its ref cleared: it counts from 0 again. */
	memset(&ref, 0, sizeof(ref));
	CHECK(emu_jit_block(jit, &ref, insn, 3) == NULL);
	/* Another block fills the buffer until a flush: ref's old code is of no use after it. */
	while (emu_jit_flushes(jit) == 0) {
		memset(&other, 0, sizeof(other));
		for (unsigned i = 0; i < 4; i++)
			emu_jit_block(jit, &other, insn, 3);
	}
	ref.code = code; /* as if it had kept its pointer: the generation check refuses it */
	CHECK(emu_jit_block(jit, &ref, insn, 3) == NULL);
	emu_jit_destroy(jit);
}

static void test_block_larger_than_buffer(void)
{
	static uint8_t many[64 * 3];
	struct emu_jit *jit = emu_jit_create(1024, 0, true);
	struct emu_insn insn[64];
	struct emu_jit_ref ref = { 0 };

	CHECK(jit != NULL);
	if (!jit)
		return;
	for (unsigned i = 0; i < 64; i++)
		memcpy(many + 3 * i, prog, 3); /* add eax, 5 */
	block_decode(many, sizeof(many), insn, 64);
	CHECK(emu_jit_block(jit, &ref, insn, 64) == NULL);
	CHECK(emu_jit_block(jit, &ref, insn, 3) != NULL); /* a small one still fits */
	emu_jit_destroy(jit);
}

/* No mapping of the process is writable and executable at once (W^X). */
static void test_no_writable_executable_pages(void)
{
	struct emu_jit *jit = emu_jit_create(1 << 16, 0, true);
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned wx = 0;

	CHECK(jit != NULL);
	CHECK(f != NULL);
	if (!f || !jit) {
		emu_jit_destroy(jit);
		if (f)
			fclose(f);
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		char perms[5] = "";

		if (sscanf(line, "%*s %4s", perms) == 1 && perms[1] == 'w' && perms[2] == 'x')
			wx++;
	}
	fclose(f);
	CHECK_EQ(wx, 0);
	emu_jit_destroy(jit);
}

/* The hot code of an inlined load (`mov rax, [rbx]`, n of them per block): address, TLB lookup,
 * load and register store. A lookup (on the kernel's disk path, ~3800 per 4 KiB QD32 write
 * request, 27 % of the hot code's bytes) names the TLB arrays and the index mask in registers
 * (R14, R15, EBP: 36 bytes) rather than as [rbx + rdx + disp32] (47 bytes). */
static void test_inlined_load_code_size(void)
{
	static uint8_t loads[9 * 3];
	struct emu_jit *jit = emu_jit_create(1 << 16, 0, true);
	struct emu_insn insn[9];
	struct emu_jit_ref ref[3];
	emu_jit_fn code[3];
	ptrdiff_t one, nine;

	CHECK(jit != NULL);
	if (!jit)
		return;
	for (unsigned i = 0; i < 9; i++)
		memcpy(loads + 3 * i, (const uint8_t[]){ 0x48, 0x8B, 0x03 }, 3);
	block_decode(loads, sizeof(loads), insn, 9);
	CHECK_EQ(emu_jit_inlines(&insn[0]), 1);
	memset(ref, 0, sizeof(ref));
	/* Blocks follow each other in the hot code (16-byte aligned): a block's size is the
	 * distance to the next one's. */
	code[0] = emu_jit_block(jit, &ref[0], insn, 1);
	code[1] = emu_jit_block(jit, &ref[1], insn, 9);
	code[2] = emu_jit_block(jit, &ref[2], insn, 1);
	CHECK(code[0] && code[1] && code[2]);
	if (code[0] && code[1] && code[2]) {
		one = (const uint8_t *)(uintptr_t)code[1] - (const uint8_t *)(uintptr_t)code[0];
		nine = (const uint8_t *)(uintptr_t)code[2] - (const uint8_t *)(uintptr_t)code[1];
		printf("# hot code per inlined load: %td bytes\n", (nine - one) / 8);
		CHECK(nine - one <= 8 * 50 && nine - one >= 8 * 30);
	}
	emu_jit_destroy(jit);
}

/* The fields that compiled code uses in most blocks (emu.h: the lazy flags to jit_scratch) are
 * addressed from R13 with a one-byte displacement: a block's end adds to the instruction count
 * with `add qword [r13 + d8], n` (5 bytes), not `add qword [rbx + d32], n` (8). */
static void test_hot_fields_short_displacements(void)
{
	struct emu_jit *jit = emu_jit_create(1 << 16, 0, true);
	struct emu_insn insn[3];
	struct emu_jit_ref ref[2];
	emu_jit_fn code[2];
	unsigned short_form = 0, long_form = 0;

	CHECK(jit != NULL);
	if (!jit)
		return;
	block_decode(prog, sizeof(prog), insn, 3);
	memset(ref, 0, sizeof(ref));
	code[0] = emu_jit_block(jit, &ref[0], insn, 3);
	code[1] = emu_jit_block(jit, &ref[1], insn, 3); /* where the first one's hot code ends */
	CHECK(code[0] && code[1]);
	if (code[0] && code[1]) {
		const uint8_t *p = (const uint8_t *)(uintptr_t)code[0],
			      *end = (const uint8_t *)(uintptr_t)code[1];

		for (; p + 5 <= end; p++) {
			short_form += p[0] == 0x49 && p[1] == 0x83 && p[2] == 0x45 && p[4] == 3;
			long_form += p[0] == 0x48 && p[1] == 0x83 && p[2] == 0x83 && p + 7 <= end &&
				     p[7] == 3;
		}
		CHECK_EQ(short_form, 1); /* add qword [r13 + instructions], 3 */
		CHECK_EQ(long_form, 0);
		CHECK_EQ(run_prog(code[0]), EMU_OK);
		check_prog_result();
	}
	emu_jit_destroy(jit);
}

int main(void)
{
	RUN_TEST(test_buffer_reused_after_flush);
	RUN_TEST(test_threshold_and_generation);
	RUN_TEST(test_block_larger_than_buffer);
	RUN_TEST(test_no_writable_executable_pages);
	RUN_TEST(test_inlined_load_code_size);
	RUN_TEST(test_hot_fields_short_displacements);
	emu_cpu_destroy(&cpu);
	return TEST_EXIT();
}
