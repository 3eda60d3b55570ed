/* Decoder of the software CPU: lengths and fields of tricky encodings in 64-, 32- and 16-bit
 * modes, #UD and #GP (too long) results, running out of bytes. */
#include <string.h>

#include "cpu/emu/decode.h"
#include "test.h"

struct length_case {
	enum emu_mode mode;
	int result; /* enum emu_decode_result */
	unsigned len; /* expected length when result is OK */
	unsigned nr;
	uint8_t bytes[16];
};

#define B(...) sizeof((uint8_t[]){ __VA_ARGS__ }), { __VA_ARGS__ }

static const struct length_case length_cases[] = {
	/* 64-bit mode */
	{ EMU_MODE_64, 0, 10, B(0x48, 0xB8, 1, 2, 3, 4, 5, 6, 7, 8) }, /* mov rax, imm64 */
	{ EMU_MODE_64, 0, 5, B(0xB8, 1, 2, 3, 4) },
	{ EMU_MODE_64, 0, 4, B(0x66, 0xB8, 1, 2) },
	{ EMU_MODE_64, 0, 9, B(0xA0, 1, 2, 3, 4, 5, 6, 7, 8) }, /* moffs64 */
	{ EMU_MODE_64, 0, 6, B(0x67, 0xA1, 1, 2, 3, 4) }, /* moffs32 */
	{ EMU_MODE_64, 0, 7, B(0xC7, 0x04, 0x24, 1, 2, 3, 4) }, /* mov dword [rsp], imm32 */
	{ EMU_MODE_64, 0, 10, B(0xC7, 0x05, 1, 2, 3, 4, 5, 6, 7, 8) }, /* [rip+d32], imm32 */
	{ EMU_MODE_64, 0, 9, B(0x66, 0xC7, 0x05, 1, 2, 3, 4, 5, 6) },
	{ EMU_MODE_64, 0, 11, B(0x48, 0xC7, 0x05, 1, 2, 3, 4, 5, 6, 7, 8) }, /* imm32, not 64 */
	{ EMU_MODE_64, 0, 7, B(0xF6, 0x05, 1, 2, 3, 4, 9) }, /* test byte [rip], imm8 */
	{ EMU_MODE_64, 0, 6, B(0xF6, 0x15, 1, 2, 3, 4) }, /* not byte [rip]: no imm */
	{ EMU_MODE_64, 0, 6, B(0xF7, 0xC0, 1, 2, 3, 4) },
	{ EMU_MODE_64, 0, 5, B(0x66, 0xF7, 0xC0, 1, 2) },
	{ EMU_MODE_64, 0, 2, B(0xF7, 0xD8) }, /* neg eax */
	{ EMU_MODE_64, 0, 8, B(0x0F, 0x1F, 0x84, 0, 0, 0, 0, 0) }, /* nopl 0(%rax,%rax,1) */
	{ EMU_MODE_64, 0, 10, B(0x66, 0x2E, 0x0F, 0x1F, 0x84, 0, 0, 0, 0, 0) },
	{ EMU_MODE_64, 0, 4, B(0xF3, 0x0F, 0x1E, 0xFA) }, /* endbr64 */
	{ EMU_MODE_64, 0, 4, B(0xC8, 0x10, 0x00, 0x01) }, /* enter 16, 1 */
	{ EMU_MODE_64, 0, 5, B(0xE8, 1, 2, 3, 4) },
	{ EMU_MODE_64, 0, 6, B(0x66, 0xE8, 1, 2, 3, 4) }, /* Intel: 66 ignored on near branches */
	{ EMU_MODE_64, 0, 2, B(0x75, 0xFE) },
	{ EMU_MODE_64, 0, 6, B(0x0F, 0x85, 1, 2, 3, 4) },
	{ EMU_MODE_64, 0, 3, B(0xC2, 8, 0) }, /* ret imm16 */
	{ EMU_MODE_64, 0, 5, B(0x0F, 0x3A, 0x0F, 0xC1, 0x08) }, /* palignr */
	{ EMU_MODE_64, 0, 4, B(0x0F, 0x38, 0x00, 0xC1) }, /* pshufb */
	{ EMU_MODE_64, 0, 5, B(0xF0, 0x48, 0x0F, 0xC7, 0x0E) }, /* lock cmpxchg16b [rsi] */
	{ EMU_MODE_64, 0, 4, B(0x41, 0x8B, 0x04, 0x24) }, /* mov eax, [r12] */
	{ EMU_MODE_64, 0, 4, B(0x41, 0x8B, 0x45, 0x00) }, /* mov eax, [r13+0] */
	{ EMU_MODE_64, 0, 7, B(0x8B, 0x04, 0x25, 1, 2, 3, 4) }, /* mov eax, [disp32] */
	{ EMU_MODE_64, 0, 7, B(0x8B, 0x04, 0x05, 1, 2, 3, 4) }, /* [rax*1+disp32] */
	{ EMU_MODE_64, 0, 3, B(0x0F, 0x20, 0xC0) }, /* mov rax, cr0 */
	{ EMU_MODE_64, 0, 3, B(0x0F, 0x22, 0x05) }, /* mod ignored: no disp32 */
	{ EMU_MODE_64, 0, 5, B(0x48, 0x66, 0xB8, 1, 2) }, /* REX before 66 is ignored */
	{ EMU_MODE_64, 0, 3, B(0x66, 0x48, 0x98) }, /* cdqe */
	{ EMU_MODE_64, 0, 4, B(0x0F, 0xBA, 0xE0, 3) }, /* bt eax, 3 */
	{ EMU_MODE_64, 0, 6, B(0x69, 0xC0, 1, 2, 3, 4) },
	{ EMU_MODE_64, 0, 3, B(0x6B, 0xC0, 1) },
	{ EMU_MODE_64, 0, 4, B(0xC1, 0x24, 0x24, 3) }, /* shl dword [rsp], 3 */
#define P66x7 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66
	{ EMU_MODE_64, 0, 15, B(P66x7, P66x7, 0x90) }, /* 14 prefixes: 15 bytes */
	{ EMU_MODE_64, EMU_DECODE_TOO_LONG, 0, B(P66x7, P66x7, 0x66, 0x90) },
	{ EMU_MODE_64, EMU_DECODE_UD, 0, B(0xC4, 0xE2, 0x79, 0x18, 0x00) }, /* VEX */
	{ EMU_MODE_64, EMU_DECODE_UD, 0, B(0xC5, 0xF8, 0x77) }, /* vzeroupper */
	{ EMU_MODE_64, EMU_DECODE_UD, 0, B(0x62, 0xF1, 0x7C, 0x48, 0x10, 0x00) }, /* EVEX */
	{ EMU_MODE_64, EMU_DECODE_UD, 0, B(0x06) }, /* push es */
	{ EMU_MODE_64, EMU_DECODE_UD, 0, B(0x0F, 0x04) }, /* reserved */
	{ EMU_MODE_64, EMU_DECODE_SHORT, 0, B(0xB8, 1, 2) },
	{ EMU_MODE_64, EMU_DECODE_SHORT, 0, B(0x0F) },
	{ EMU_MODE_64, EMU_DECODE_SHORT, 0, B(0x8B, 0x04) },
	/* 32-bit mode */
	{ EMU_MODE_32, 0, 5, B(0xB8, 1, 2, 3, 4) },
	{ EMU_MODE_32, 0, 4, B(0x66, 0xB8, 1, 2) },
	{ EMU_MODE_32, 0, 1, B(0x40) }, /* inc eax */
	{ EMU_MODE_32, 0, 6, B(0x8B, 0x05, 1, 2, 3, 4) }, /* absolute, not RIP-relative */
	{ EMU_MODE_32, 0, 5, B(0x67, 0x8B, 0x06, 0x34, 0x12) }, /* 16-bit addressing */
	{ EMU_MODE_32, 0, 4, B(0x67, 0x8B, 0x40, 0x12) }, /* [bx+si+disp8] */
	{ EMU_MODE_32, 0, 2, B(0xC4, 0x00) }, /* LES */
	{ EMU_MODE_32, EMU_DECODE_UD, 0, B(0xC4, 0xE2, 0x79, 0x18, 0x00) }, /* VEX */
	{ EMU_MODE_32, 0, 7, B(0xEA, 1, 2, 3, 4, 5, 6) }, /* jmp far ptr16:32 */
	{ EMU_MODE_32, 0, 1, B(0x06) },
	{ EMU_MODE_32, 0, 5, B(0xA1, 1, 2, 3, 4) },
	/* 16-bit mode */
	{ EMU_MODE_16, 0, 3, B(0xB8, 1, 2) },
	{ EMU_MODE_16, 0, 6, B(0x66, 0xB8, 1, 2, 3, 4) },
	{ EMU_MODE_16, 0, 3, B(0x8B, 0x46, 0x02) }, /* [bp+2] */
	{ EMU_MODE_16, 0, 4, B(0x8B, 0x06, 0x34, 0x12) }, /* [disp16] */
	{ EMU_MODE_16, 0, 8, B(0x67, 0x8B, 0x84, 0x88, 1, 2, 3, 4) }, /* 32-bit SIB */
	{ EMU_MODE_16, 0, 3, B(0xE8, 1, 2) },
	{ EMU_MODE_16, 0, 5, B(0xEA, 1, 2, 3, 4) }, /* jmp far ptr16:16 */
	{ EMU_MODE_16, 0, 8, B(0x66, 0xEA, 1, 2, 3, 4, 5, 6) }, /* ptr16:32 */
	{ EMU_MODE_16, 0, 3, B(0xA1, 1, 2) },
};

static void test_decode_lengths(void)
{
	for (unsigned i = 0; i < sizeof(length_cases) / sizeof(length_cases[0]); i++) {
		const struct length_case *t = &length_cases[i];
		struct emu_insn insn;
		int rc;

		rc = emu_decode(t->bytes, t->nr, t->mode, &insn);
		if (rc != t->result || (rc == 0 && insn.len != t->len)) {
			printf("  case %u (mode %d, first byte %02x): result %d len %d, "
			       "expected %d len %u\n",
			       i, t->mode, t->bytes[0], rc, rc ? 0 : (int)insn.len, t->result,
			       t->len);
			test_failed_checks++;
		}
	}
}

static struct emu_insn decode64(const uint8_t *bytes, unsigned n)
{
	struct emu_insn insn;

	CHECK_EQ(emu_decode(bytes, n, EMU_MODE_64, &insn), 0);
	return insn;
}

static void test_decode_fields(void)
{
	struct emu_insn insn;

	/* mov r9, [r12 + r13*4 + 0x10]: REX.WRXB */
	insn = decode64((const uint8_t[]){ 0x4F, 0x8B, 0x4C, 0xAC, 0x10 }, 5);
	CHECK_EQ(insn.opsize, 8);
	CHECK_EQ(insn.reg, 9);
	CHECK_EQ(insn.base, 12);
	CHECK_EQ(insn.index, 13);
	CHECK_EQ(insn.scale, 4);
	CHECK_EQ(insn.disp, 0x10);
	CHECK_EQ(insn.seg, SEG_DS);
	/* REX.X makes index 100 mean r12, not "none" */
	insn = decode64((const uint8_t[]){ 0x4A, 0x8B, 0x04, 0x20 }, 4);
	CHECK_EQ(insn.index, 12);
	CHECK_EQ(insn.base, CPU_RAX);
	insn = decode64((const uint8_t[]){ 0x8B, 0x04, 0x24 }, 3);
	CHECK_EQ(insn.index, EMU_REG_NONE);
	CHECK_EQ(insn.base, CPU_RSP);
	CHECK_EQ(insn.seg, SEG_SS);
	/* [rbp+8] defaults to SS, [r13+8] does not */
	insn = decode64((const uint8_t[]){ 0x8B, 0x45, 0x08 }, 3);
	CHECK_EQ(insn.seg, SEG_SS);
	insn = decode64((const uint8_t[]){ 0x41, 0x8B, 0x45, 0x08 }, 4);
	CHECK_EQ(insn.seg, SEG_DS);
	/* fs: override, RIP-relative */
	insn = decode64((const uint8_t[]){ 0x64, 0x48, 0x8B, 0x05, 0xF0, 0xFF, 0xFF, 0xFF }, 8);
	CHECK_EQ(insn.seg, SEG_FS);
	CHECK_EQ(insn.base, EMU_REG_RIP);
	CHECK_EQ(insn.disp, -16);
	/* push/pop default to 64 bits, 66 makes them 16 */
	insn = decode64((const uint8_t[]){ 0x50 }, 1);
	CHECK_EQ(insn.opsize, 8);
	insn = decode64((const uint8_t[]){ 0x66, 0x50 }, 2);
	CHECK_EQ(insn.opsize, 2);
	/* REX.W wins over 66 */
	insn = decode64((const uint8_t[]){ 0x66, 0x48, 0x01, 0xC0 }, 4);
	CHECK_EQ(insn.opsize, 8);
	/* the last of F2/F3 is the mandatory prefix */
	insn = decode64((const uint8_t[]){ 0xF2, 0xF3, 0x0F, 0xB8, 0xC0 }, 5);
	CHECK_EQ(insn.last_rep, 0xF3);
	CHECK(insn.prefix & EMU_PFX_REPNE);
	/* immediates: sign-extended Ib, zero-extended Iw */
	insn = decode64((const uint8_t[]){ 0x83, 0xC0, 0xFF }, 3);
	CHECK_EQ(insn.imm, ~0ull);
	insn = decode64((const uint8_t[]){ 0xC2, 0xFF, 0xFF }, 3);
	CHECK_EQ(insn.imm, 0xffff);
	/* 67 in 64-bit mode: 32-bit addresses */
	insn = decode64((const uint8_t[]){ 0x67, 0x8B, 0x00 }, 3);
	CHECK_EQ(insn.adsize, 4);
	/* 16-bit addressing: [bp+di] defaults to SS */
	CHECK_EQ(emu_decode((const uint8_t[]){ 0x8B, 0x03 }, 2, EMU_MODE_16, &insn), 0);
	CHECK_EQ(insn.base, CPU_RBP);
	CHECK_EQ(insn.index, CPU_RDI);
	CHECK_EQ(insn.seg, SEG_SS);
}

/* Every one-byte and 0F opcode decodes to OK, #UD or SHORT: never anything else, and a
 * decoded length never exceeds the bytes given. */
static void test_decode_all_opcodes(void)
{
	static const enum emu_mode modes[3] = { EMU_MODE_16, EMU_MODE_32, EMU_MODE_64 };

	for (unsigned m = 0; m < 3; m++) {
		for (unsigned map = 0; map < 2; map++) {
			for (unsigned op = 0; op < 256; op++) {
				uint8_t bytes[15] = { 0 };
				struct emu_insn insn;
				unsigned n = 0;
				int rc;

				if (map)
					bytes[n++] = 0x0F;
				bytes[n++] = (uint8_t)op;
				for (unsigned modrm = 0; modrm < 256; modrm += 0x41) {
					bytes[n] = (uint8_t)modrm;
					rc = emu_decode(bytes, 15, modes[m], &insn);
					CHECK(rc == 0 || rc == EMU_DECODE_UD);
					if (rc == 0)
						CHECK(insn.len <= 15 && insn.len >= n);
				}
			}
		}
	}
}

int main(void)
{
	RUN_TEST(test_decode_lengths);
	RUN_TEST(test_decode_fields);
	RUN_TEST(test_decode_all_opcodes);
	return TEST_EXIT();
}
