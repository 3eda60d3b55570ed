/* Architectural state of one x86-64 vCPU, independent of the backend.
 *
 * The layout mirrors what KVM exposes (kvm_regs, kvm_sregs, MSRs, FPU) so that the state converts
 * exactly in both directions: the KVM backend copies field by field, the software CPU keeps this
 * struct as its own register file. */
#ifndef VMM_CPU_STATE_H
#define VMM_CPU_STATE_H

#include <stdbool.h>
#include <stdint.h>

enum cpu_reg {
	CPU_RAX, CPU_RCX, CPU_RDX, CPU_RBX, CPU_RSP, CPU_RBP, CPU_RSI, CPU_RDI,
	CPU_R8, CPU_R9, CPU_R10, CPU_R11, CPU_R12, CPU_R13, CPU_R14, CPU_R15,
	CPU_NR_GPRS
};

struct cpu_segment {
	uint64_t base;
	uint32_t limit;
	uint16_t selector;
	uint8_t type; /* 4-bit descriptor type */
	uint8_t present, dpl, db, s, l, g, avl;
	uint8_t unusable;
};

struct cpu_dtable {
	uint64_t base;
	uint16_t limit;
};

enum cpu_seg { SEG_ES, SEG_CS, SEG_SS, SEG_DS, SEG_FS, SEG_GS, SEG_TR, SEG_LDTR, CPU_NR_SEGS };

/* The x87/SSE state in the FXSAVE image layout (64-bit form; SDM Vol. 1 §10.5.1), which is what
 * FXSAVE writes and what KVM's struct kvm_fpu holds field by field. */
struct cpu_fxsave {
	uint16_t fcw, fsw;
	uint8_t ftw, reserved0; /* abridged tag word: one bit per register, 1 = valid */
	uint16_t fop;
	uint64_t fip, fdp;
	uint32_t mxcsr, mxcsr_mask;
	uint8_t st[8][16]; /* ST0..ST7 (80 bits each) */
	uint8_t xmm[16][16];
	uint8_t reserved1[96];
} __attribute__((aligned(16)));
_Static_assert(sizeof(struct cpu_fxsave) == 512, "FXSAVE image");

/* MSRs that belong to the architectural state (what KVM_GET_MSRS is asked for). */
struct cpu_msrs {
	uint64_t star, lstar, cstar, sfmask, kernel_gs_base;
	uint64_t sysenter_cs, sysenter_esp, sysenter_eip;
	uint64_t pat, tsc_aux, misc_enable;
};

/* Events in flight between two instructions (KVM's struct kvm_vcpu_events). */
struct cpu_events {
	bool exception_pending, exception_has_error;
	uint8_t exception_vector;
	uint32_t exception_error;
	bool interrupt_pending; /* an external interrupt being injected */
	uint8_t interrupt_vector;
	bool interrupt_shadow; /* after STI or MOV SS: no interrupt before the next instruction */
	bool nmi_pending, nmi_masked;
};

struct cpu_state {
	uint64_t gpr[CPU_NR_GPRS];
	uint64_t rip, rflags;
	struct cpu_segment seg[CPU_NR_SEGS];
	struct cpu_dtable gdt, idt;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer;
	uint64_t apic_base;
	struct cpu_msrs msr;
	uint64_t dr[4], dr6, dr7;
	struct cpu_events events;
	struct cpu_fxsave fpu;
};

/* IA32_MISC_ENABLE (MSR 0x1a0) as firmware leaves it: fast strings enabled (bit 0; Linux takes
 * a clear bit as firmware having turned REP MOVS/STOS off, and drops REP_GOOD and ERMS), no
 * branch trace store (bit 11) and no PEBS (bit 12) -- KVM's own value plus fast strings, as
 * QEMU sets it. */
#define CPU_MISC_ENABLE_RESET ((1ull << 0) | (1ull << 11) | (1ull << 12))

/* Power-on values of the parts a boot state must not leave at zero (SDM Vol. 3 §9.1.1):
 * FNINIT's control word, MXCSR with every exception masked, the default PAT, DR6/DR7, and
 * IA32_MISC_ENABLE as firmware leaves it (CPU_MISC_ENABLE_RESET). */
static inline void cpu_state_reset_defaults(struct cpu_state *st)
{
	st->fpu.fcw = 0x037F;
	st->fpu.mxcsr = 0x1F80;
	st->fpu.mxcsr_mask = 0xFFFF;
	st->msr.pat = 0x0007040600070406ull;
	st->msr.misc_enable = CPU_MISC_ENABLE_RESET;
	st->dr6 = 0xFFFF0FF0;
	st->dr7 = 0x400;
}

/* CR0 / CR4 / EFER bits used when building the boot state. */
#define CR0_PE (1ull << 0)
#define CR0_ET (1ull << 4)
#define CR0_PG (1ull << 31)
#define CR4_PAE (1ull << 5)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

#endif
