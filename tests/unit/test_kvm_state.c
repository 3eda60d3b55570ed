/* The architectural state converts exactly to and from KVM: every field of struct cpu_state set
 * on a real KVM vCPU reads back unchanged. Needs /dev/kvm (skipped without it, failed under CI). */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "vm.h"

static void fill_state(struct cpu_state *st)
{
	memset(st, 0, sizeof(*st));
	cpu_state_reset_defaults(st);
	for (int i = 0; i < CPU_NR_GPRS; i++)
		st->gpr[i] = 0x1111111111111111ull * (uint64_t)(i + 1);
	st->rip = 0x100200;
	st->rflags = 0x2 | (1u << 6) | (1u << 11); /* ZF, OF */
	for (int s = 0; s < CPU_NR_SEGS; s++)
		st->seg[s] = (struct cpu_segment){ .base = 0, .limit = 0xFFFFFFFF, .selector = 0x18,
						   .type = 3, .present = 1, .s = 1, .db = 1, .g = 1 };
	st->seg[SEG_CS] = (struct cpu_segment){ .limit = 0xFFFFFFFF, .selector = 0x10, .type = 0xB,
						.present = 1, .s = 1, .l = 1, .g = 1 };
	st->seg[SEG_FS].base = 0x7F0000001000ull;
	st->seg[SEG_GS].base = 0xFFFF888000002000ull;
	st->seg[SEG_TR] = (struct cpu_segment){ .base = 0x3000, .limit = 0x67, .selector = 0x28,
						.type = 0xB, .present = 1 };
	st->seg[SEG_LDTR] = (struct cpu_segment){ .limit = 0xFFFF, .type = 2, .present = 1 };
	st->gdt = (struct cpu_dtable){ 0x500, 0x3F };
	st->idt = (struct cpu_dtable){ 0x2000, 0xFFF };
	st->cr0 = CR0_PE | CR0_ET | CR0_PG | (1u << 16) /* WP */;
	st->cr2 = 0xDEADB000;
	st->cr3 = 0x9000;
	st->cr4 = CR4_PAE | (1u << 9) /* OSFXSR */;
	st->efer = EFER_LME | EFER_LMA | (1u << 0) /* SCE */;
	st->msr.star = 0x0023001000000000ull;
	st->msr.lstar = 0xFFFFFFFF81000000ull;
	st->msr.cstar = 0xFFFFFFFF81000100ull;
	st->msr.sfmask = 0x47700;
	st->msr.kernel_gs_base = 0xFFFF888000003000ull;
	st->msr.sysenter_cs = 0x10;
	st->msr.sysenter_esp = 0xFFFF888000004000ull;
	st->msr.sysenter_eip = 0xFFFFFFFF81000200ull;
	st->msr.pat = 0x0007040600070406ull;
	st->msr.tsc_aux = 3;
	st->dr[0] = 0x1000;
	st->dr[3] = 0x4000;
	st->dr7 = 0x400 | 0x3; /* L0, G0 */
	st->fpu.fcw = 0x027F;
	st->fpu.fsw = 0x3800;
	st->fpu.ftw = 0x80;
	st->fpu.mxcsr = 0x1F80 | (1u << 15); /* FTZ */
	for (int i = 0; i < 16; i++)
		memset(st->fpu.xmm[i], 0x10 + i, 16);
	memset(st->fpu.st[7], 0x5A, 10);
	st->events.interrupt_shadow = true;
}

static void state_round_trips_through_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR);
	if (fd < 0) {
		const char *ci = getenv("CI");
		printf("%s - state_round_trips_through_kvm: /dev/kvm is not usable\n",
		       ci && !strcmp(ci, "true") ? "FAIL" : "SKIP");
		test_failed_checks = -1000000; /* reported above */
		return;
	}
	close(fd);
	struct vm *vm = calloc(1, sizeof(*vm));
	vm->backend = &cpu_backend_kvm;
	vm->nr_vcpus = 1;
	CHECK(memory_init(&vm->mem, 64ull << 20) == 0);
	CHECK(cpu_backend_kvm.vm_init(vm) == 0);
	vm->vcpus[0].vm = vm;
	CHECK(cpu_backend_kvm.vcpu_init(&vm->vcpus[0]) == 0);
	struct cpu_state in, out;
	fill_state(&in);
	CHECK(cpu_backend_kvm.vcpu_set_state(&vm->vcpus[0], &in) == 0);
	memset(&out, 0xA5, sizeof(out));
	CHECK(cpu_backend_kvm.vcpu_get_state(&vm->vcpus[0], &out) == 0);
	CHECK(!memcmp(in.gpr, out.gpr, sizeof(in.gpr)));
	CHECK_EQ(out.rip, in.rip);
	CHECK_EQ(out.rflags, in.rflags);
	for (int s = 0; s < CPU_NR_SEGS; s++) {
		CHECK_EQ(out.seg[s].base, in.seg[s].base);
		CHECK_EQ(out.seg[s].limit, in.seg[s].limit);
		CHECK_EQ(out.seg[s].selector, in.seg[s].selector);
		CHECK_EQ(out.seg[s].type, in.seg[s].type);
		CHECK_EQ(out.seg[s].l, in.seg[s].l);
	}
	CHECK(out.gdt.base == in.gdt.base && out.gdt.limit == in.gdt.limit);
	CHECK(out.idt.base == in.idt.base && out.idt.limit == in.idt.limit);
	CHECK_EQ(out.cr0, in.cr0);
	CHECK_EQ(out.cr2, in.cr2);
	CHECK_EQ(out.cr3, in.cr3);
	CHECK_EQ(out.cr4, in.cr4);
	CHECK_EQ(out.efer, in.efer);
	CHECK_EQ(out.msr.star, in.msr.star);
	CHECK_EQ(out.msr.lstar, in.msr.lstar);
	CHECK_EQ(out.msr.cstar, in.msr.cstar);
	CHECK_EQ(out.msr.sfmask, in.msr.sfmask);
	CHECK_EQ(out.msr.kernel_gs_base, in.msr.kernel_gs_base);
	CHECK_EQ(out.msr.sysenter_cs, in.msr.sysenter_cs);
	CHECK_EQ(out.msr.sysenter_esp, in.msr.sysenter_esp);
	CHECK_EQ(out.msr.sysenter_eip, in.msr.sysenter_eip);
	CHECK_EQ(out.msr.pat, in.msr.pat);
	CHECK_EQ(out.msr.tsc_aux, in.msr.tsc_aux);
	CHECK(!memcmp(in.dr, out.dr, sizeof(in.dr)));
	CHECK_EQ(out.dr7, in.dr7);
	CHECK_EQ(out.fpu.fcw, in.fpu.fcw);
	CHECK_EQ(out.fpu.fsw, in.fpu.fsw);
	CHECK_EQ(out.fpu.ftw, in.fpu.ftw);
	CHECK_EQ(out.fpu.mxcsr, in.fpu.mxcsr);
	CHECK(!memcmp(in.fpu.xmm, out.fpu.xmm, sizeof(in.fpu.xmm)));
	CHECK(!memcmp(in.fpu.st[7], out.fpu.st[7], 10));
	CHECK(out.events.interrupt_shadow);
	cpu_backend_kvm.vcpu_destroy(&vm->vcpus[0]);
	cpu_backend_kvm.vm_destroy(vm);
	memory_destroy(&vm->mem);
	free(vm);
}

int main(void)
{
	RUN_TEST(state_round_trips_through_kvm);
	return TEST_EXIT();
}
