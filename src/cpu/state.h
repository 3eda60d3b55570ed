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

struct cpu_state {
	uint64_t gpr[CPU_NR_GPRS];
	uint64_t rip, rflags;
	struct cpu_segment seg[CPU_NR_SEGS];
	struct cpu_dtable gdt, idt;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer;
	uint64_t apic_base;
};

/* CR0 / CR4 / EFER bits used when building the boot state. */
#define CR0_PE (1ull << 0)
#define CR0_ET (1ull << 4)
#define CR0_PG (1ull << 31)
#define CR4_PAE (1ull << 5)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

#endif
