/* CPL 3 for the network bench's loops (Intel SDM vol. 3 §5.8.8 SYSCALL/SYSRET, §7.7 the TSS). */
#include "ring3.h"
#include "interrupts.h"
#include "io.h"
#include "layout.h"
#include "lib.h"

#define VECTOR_UD 6
#define CR4_SMEP (1ul << 20)
#define CR4_SMAP (1ul << 21)
#define PAGE_USER 0x4ul
#define PAGE_PRESENT 0x1ul
#define PAGE_ADDRESS 0x000FFFFFFFFFF000ul
/* A copy of boot.S's GDT, then: 0x20 unused, 0x28 user data, 0x30 user code,
 * 0x38 the TSS (two slots). The user selectors are Linux's (__USER_DS 0x2b, __USER_CS 0x33). */
#define TSS_SELECTOR 0x38
#define RING3_STACK 16384

struct tss {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3, iomap_base;
} __attribute__((packed));

extern uint64_t gdt[GDT_ENTRIES];
static uint64_t gdt3[GDT_ENTRIES + 5] __attribute__((aligned(16)));
static struct tss tss __attribute__((aligned(16)));
static uint8_t kernel_stack[RING3_STACK] __attribute__((aligned(16))); /* exceptions from CPL 3 */
static uint8_t user_stack[RING3_STACK] __attribute__((aligned(16)));
uint64_t ring3_kernel_rsp; /* ring3_call's stack, for the way back (read by the assembly) */

void ring3_call(void (*fn)(void *), void *arg, void *stack_top);
void ring3_return(void) __attribute__((noreturn));

__asm__(".text\n"
	".globl ring3_call\n"
	"ring3_call:\n" /* rdi = fn, rsi = arg, rdx = stack top */
	"	pushq %rbx\n	pushq %rbp\n	pushq %r12\n	pushq %r13\n	pushq %r14\n	"
	"pushq %r15\n"
	"	movq %rsp, ring3_kernel_rsp(%rip)\n"
	"	pushq $0x2b\n" /* SS */
	"	pushq %rdx\n" /* RSP */
	"	pushq $0x2\n" /* RFLAGS: interrupts off, IOPL 0 */
	"	pushq $0x33\n" /* CS */
	"	leaq 1f(%rip), %rax\n"
	"	pushq %rax\n"
	"	iretq\n"
	"1:	movq %rdi, %rax\n"
	"	movq %rsi, %rdi\n"
	"	call *%rax\n"
	"	ud2\n" /* #UD: ring3_undefined at CPL 0 */
	".globl ring3_return\n"
	"ring3_return:\n"
	"	movq ring3_kernel_rsp(%rip), %rsp\n"
	"	popq %r15\n	popq %r14\n	popq %r13\n	popq %r12\n	popq %rbp\n	"
	"popq %rbx\n"
	"	ret\n");

/* The way back: the ud2 after the function, taken as #UD at CPL 0 on the TSS's stack. The
 * exception frame is left there; ring3_return goes on on ring3_call's stack. (SYSCALL would be
 * the usual way, but kvm-pvm keeps a non-PVM guest at CPL 3 after it.) */
static void ring3_undefined(const struct interrupt_frame *frame)
{
	(void)frame;
	ring3_return();
}

/* The U bit on every level of the first 4 GiB's identity map (2 MiB pages, pagetables.S). */
static void identity_map_user(void)
{
	uint64_t cr3, cr4;

	__asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
	uint64_t *pml4 = (uint64_t *)(cr3 & PAGE_ADDRESS);
	pml4[0] |= PAGE_USER;
	uint64_t *pdpt = (uint64_t *)(pml4[0] & PAGE_ADDRESS);
	for (unsigned i = 0; i < 4; i++) {
		if (!(pdpt[i] & PAGE_PRESENT))
			continue;
		pdpt[i] |= PAGE_USER;
		uint64_t *pd = (uint64_t *)(pdpt[i] & PAGE_ADDRESS);
		for (unsigned j = 0; j < 512; j++)
			if (pd[j] & PAGE_PRESENT)
				pd[j] |= PAGE_USER;
	}
	__asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
	if (cr4 & (CR4_SMEP | CR4_SMAP)) /* we never set them; a loader might have */
		__asm__ volatile("mov %0, %%cr4" : : "r"(cr4 & ~(CR4_SMEP | CR4_SMAP)));
	__asm__ volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
}

void ring3_setup(void)
{
	static bool done; /* a second LTR of our (now busy) TSS would fault */

	if (done)
		return;
	done = true;
	memcpy(gdt3, gdt, sizeof(gdt));
	gdt3[4] = 0;
	gdt3[5] = 0x00CFF3000000FFFFul; /* data, DPL 3, accessed */
	gdt3[6] = 0x00AFFB000000FFFFul; /* 64-bit code, DPL 3, accessed */
	uint64_t base = (uint64_t)&tss, limit = sizeof(tss) - 1;
	memset(&tss, 0, sizeof(tss));
	tss.rsp[0] = (uint64_t)kernel_stack + sizeof(kernel_stack);
	tss.iomap_base = sizeof(tss); /* no I/O bitmap: port I/O faults at CPL 3 */
	gdt3[7] = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | 0x89ul << 40 |
		  ((limit >> 16) & 0xF) << 48 | ((base >> 24) & 0xFF) << 56;
	gdt3[8] = base >> 32;
	struct __attribute__((packed)) {
		uint16_t limit;
		uint64_t base;
	} descriptor = { sizeof(gdt3) - 1, (uint64_t)gdt3 };
	__asm__ volatile("lgdt %0" : : "m"(descriptor));
	__asm__ volatile("ltr %w0" : : "r"(TSS_SELECTOR));
	identity_map_user();
}

void ring3_run(void (*fn)(void *arg), void *arg)
{
	interrupts_set_handler(VECTOR_UD, ring3_undefined);
	ring3_call(fn, arg, user_stack + sizeof(user_stack));
	interrupts_set_handler(VECTOR_UD, 0);
}
