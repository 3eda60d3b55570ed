/* Locked read-modify-writes of the software CPU against each other: several host threads, each
 * running its own emulated vCPU over one guest RAM (as the emu backend does), increment shared
 * counters with LOCK XADD/INC/ADD (1, 2, 4 and 8 bytes, aligned, unaligned within a cache line,
 * split across a cache line and across a page), CMPXCHG, CMPXCHG8B and CMPXCHG16B loops, and
 * protect plain increments with an XCHG spinlock and a LOCK BTS/BTR spinlock. Every count must
 * be exact. Then the single-vCPU side: a locked instruction that faults changes nothing (#PF
 * with the W bit, before any write), and locked operands in MMIO. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/emu/emu.h"
#include "test.h"

#define MEM_SIZE (4u << 20)
#define PML4 0x1000
#define PDPT 0x2000
#define PD 0x3000
#define PT 0x4000 /* [0, 2 MiB) in 4 KiB pages, supervisor */
#define CODE 0x10000
#define DATA 0x20000 /* two pages of counters */
#define RO_PAGE 0x30000
#define NOT_PRESENT 0x31000
#define MMIO_PAGE 0x32000
#define MMIO_GPA 0xF0000000ull

#define P 1ull
#define W 2ull
#define PTE_D 0x40ull

#define THREADS 4
#define ITERATIONS 20000

/* The counters (offsets in DATA). */
#define C_XADD 0x00 /* LOCK XADD qword */
#define C_INC 0x08 /* LOCK INC qword */
#define C_CMPXCHG 0x10 /* LOCK CMPXCHG loop, qword */
#define C_XCHG_LOCK 0x18 /* XCHG spinlock (dword) ... */
#define C_XCHG_PROT 0x20 /* ... protecting a plain INC qword */
#define C_ADD32 0x28 /* LOCK ADD dword */
#define C_ADD16 0x2C /* LOCK ADD word (mod 2^16) */
#define C_ADD8 0x2E /* LOCK ADD byte (mod 2^8) */
#define C_BTS_LOCK 0x30 /* LOCK BTS/BTR spinlock (qword, bit 0) ... */
#define C_BTS_PROT 0x38 /* ... protecting a plain INC qword */
#define C_SPLIT_LINE 0x7E /* LOCK ADD dword across the cache line at 0x80 */
#define C_UNALIGNED 0x91 /* LOCK XADD dword, unaligned within a cache line */
#define C_CX16 0xC0 /* LOCK CMPXCHG16B loop, a 128-bit counter */
#define C_CX8 0xD0 /* LOCK CMPXCHG8B loop, a 64-bit counter in EDX:EAX */
#define C_SUB 0xD8 /* LOCK SUB qword: counts down */
#define C_SPLIT_PAGE 0xFFE /* LOCK ADD dword across the page boundary */

#define CX16_START 0xFFFFFFFFFFFFF000ull /* the low half carries into the high one */
#define CX8_START 0xFFFFF000u

/* The worker, 64-bit code: R8 iterations over the counters at RDI, then HLT. */
extern const uint8_t lock_worker[], lock_worker_end[];
__asm__(".pushsection .rodata\n"
	"lock_worker:\n"
	"1:	mov $1, %eax\n"
	"	lock xadd %rax, 0x00(%rdi)\n"
	"	lock incq 0x08(%rdi)\n"
	"2:	mov 0x10(%rdi), %rax\n"
	"	lea 1(%rax), %rdx\n"
	"	lock cmpxchg %rdx, 0x10(%rdi)\n"
	"	jne 2b\n"
	"3:	mov $1, %eax\n"
	"	xchg %eax, 0x18(%rdi)\n"
	"	test %eax, %eax\n"
	"	jnz 3b\n"
	"	incq 0x20(%rdi)\n"
	"	movl $0, 0x18(%rdi)\n"
	"	lock addl $1, 0x28(%rdi)\n"
	"	lock addw $1, 0x2c(%rdi)\n"
	"	lock addb $1, 0x2e(%rdi)\n"
	"4:	lock btsq $0, 0x30(%rdi)\n"
	"	jc 4b\n"
	"	incq 0x38(%rdi)\n"
	"	lock btrq $0, 0x30(%rdi)\n"
	"	lock addl $1, 0x7e(%rdi)\n"
	"	mov $1, %eax\n"
	"	lock xadd %eax, 0x91(%rdi)\n"
	"5:	mov 0xc0(%rdi), %rax\n"
	"	mov 0xc8(%rdi), %rdx\n"
	"	mov %rax, %rbx\n"
	"	mov %rdx, %rcx\n"
	"	add $1, %rbx\n"
	"	adc $0, %rcx\n"
	"	lock cmpxchg16b 0xc0(%rdi)\n"
	"	jne 5b\n"
	"6:	mov 0xd0(%rdi), %eax\n"
	"	mov 0xd4(%rdi), %edx\n"
	"	mov %eax, %ebx\n"
	"	mov %edx, %ecx\n"
	"	add $1, %ebx\n"
	"	adc $0, %ecx\n"
	"	lock cmpxchg8b 0xd0(%rdi)\n"
	"	jne 6b\n"
	"	lock subq $1, 0xd8(%rdi)\n"
	"	lock addl $1, 0xffe(%rdi)\n"
	"	dec %r8\n"
	"	jnz 1b\n"
	"	hlt\n"
	"lock_worker_end:\n"
	".popsection\n");

static uint8_t *ram;
static struct memory_code_pages code_pages; /* ram's code versions (memory.h) */
static uint64_t mmio_value;
static unsigned mmio_reads, mmio_writes;

static uint8_t *phys_ram_page(void *opaque, uint64_t gpa)
{
	(void)opaque;
	return gpa < MEM_SIZE ? ram + gpa : NULL;
}

static int phys_mmio(struct emu_cpu *c, uint64_t gpa, void *data, unsigned len, bool is_write)
{
	(void)c;
	(void)gpa;
	if (is_write) {
		mmio_writes++;
		mmio_value = 0;
		memcpy(&mmio_value, data, len);
	} else {
		mmio_reads++;
		memcpy(data, &mmio_value, len);
	}
	return EMU_OK;
}

static int phys_pio(struct emu_cpu *c, uint16_t port, void *data, unsigned len, bool is_write)
{
	(void)c;
	(void)port;
	(void)is_write;
	memset(data, 0, len);
	return EMU_OK;
}

static const struct emu_phys_ops phys_ops = {
	.ram_page = phys_ram_page, .mmio = phys_mmio, .pio = phys_pio
};

static void put64(uint64_t gpa, uint64_t v)
{
	memcpy(ram + gpa, &v, 8);
}

static uint64_t get(uint64_t gpa, unsigned len)
{
	uint64_t v = 0;

	memcpy(&v, ram + gpa, len);
	return v;
}

static void machine_reset(void)
{
	memset(ram, 0, MEM_SIZE);
	put64(PML4, PDPT | P | W);
	put64(PDPT, PD | P | W);
	put64(PD, PT | P | W);
	for (unsigned i = 0; i < 512; i++)
		put64(PT + 8 * i, ((uint64_t)i << 12) | P | W);
	put64(PT + 8 * (RO_PAGE >> 12), RO_PAGE | P);
	put64(PT + 8 * (NOT_PRESENT >> 12), 0);
	put64(PT + 8 * (MMIO_PAGE >> 12), MMIO_GPA | P | W);
	/* cppcheck-suppress comparePointers ; both labels delimit one asm function */
	memcpy(ram + CODE, lock_worker, (size_t)(lock_worker_end - lock_worker));
	put64(DATA + C_CX16, CX16_START);
	put64(DATA + C_CX8, CX8_START);
	mmio_reads = mmio_writes = 0;
}

static void cpu_setup(struct emu_cpu *cpu, const struct emu_memory_ops *mem, void *mem_opaque)
{
	struct cpu_state s;
	struct cpu_segment code = { .selector = 0x10, .limit = 0xffffffff, .type = 0xB, .s = 1,
				    .present = 1, .l = 1, .g = 1 };
	struct cpu_segment data = { .selector = 0x18, .limit = 0xffffffff, .type = 0x3, .s = 1,
				    .present = 1, .db = 1, .g = 1 };

	memset(&s, 0, sizeof(s));
	s.cr0 = CR0_PE | CR0_PG | (1ull << 16) /* WP */ | CR0_ET;
	s.cr3 = PML4;
	s.cr4 = CR4_PAE;
	s.efer = EFER_LME | EFER_LMA;
	s.seg[SEG_CS] = code;
	for (unsigned i = 0; i < CPU_NR_SEGS; i++)
		if (i != SEG_CS)
			s.seg[i] = data;
	s.seg[SEG_TR] = (struct cpu_segment){ .type = 0xB, .present = 1 };
	s.seg[SEG_LDTR].unusable = 1;
	s.rip = CODE;
	s.rflags = EMU_FLAG_FIXED1;
	s.gpr[CPU_RSP] = 0x8000;
	memset(cpu, 0, sizeof(*cpu));
	cpu->mem = mem;
	cpu->mem_opaque = mem_opaque;
	cpu->phys = &phys_ops;
	cpu->code = &code_pages;
	emu_cpu_init(cpu, &s);
}

struct worker {
	pthread_t thread;
	struct emu_cpu cpu;
	int rc;
	uint64_t steps;
};

static pthread_barrier_t start;
static bool give_up; /* atomic: the workers ran out of time (a lost unlock spins forever) */

#define TIME_LIMIT_S 60

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int rc;

	pthread_barrier_wait(&start);
	while ((rc = emu_step(&w->cpu)) == EMU_OK) {
		if (!(++w->steps & 1023) && __atomic_load_n(&give_up, __ATOMIC_RELAXED))
			break;
	}
	w->rc = rc;
	return NULL;
}

/* Run THREADS vCPUs over the worker and check every counter. */
static void run_workers(const struct emu_memory_ops *mem, void *mem_opaque)
{
	static struct worker workers[THREADS];
	const uint64_t total = (uint64_t)THREADS * ITERATIONS;

	machine_reset();
	give_up = false;
	pthread_barrier_init(&start, NULL, THREADS);
	for (unsigned i = 0; i < THREADS; i++) {
		struct worker *w = &workers[i];

		cpu_setup(&w->cpu, mem, mem_opaque);
		w->cpu.s.gpr[CPU_RDI] = DATA;
		w->cpu.s.gpr[8] = ITERATIONS;
		w->steps = 0;
		CHECK_EQ(pthread_create(&w->thread, NULL, worker_main, w), 0);
	}
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += TIME_LIMIT_S;
	for (unsigned i = 0; i < THREADS; i++) {
		if (pthread_timedjoin_np(workers[i].thread, NULL, &deadline)) {
			printf("  vCPU %u still running after %d s: a lock word was lost?\n", i,
			       TIME_LIMIT_S);
			__atomic_store_n(&give_up, true, __ATOMIC_RELAXED);
			pthread_join(workers[i].thread, NULL);
		}
		CHECK_EQ(workers[i].rc, EMU_HALT);
		if (workers[i].rc == EMU_EXCEPTION)
			printf("  vCPU %u: exception %u at rip 0x%llx\n", i,
			       workers[i].cpu.exc.vector,
			       (unsigned long long)workers[i].cpu.s.rip);
		emu_cpu_destroy(&workers[i].cpu);
	}
	pthread_barrier_destroy(&start);
	CHECK_EQ(get(DATA + C_XADD, 8), total);
	CHECK_EQ(get(DATA + C_INC, 8), total);
	CHECK_EQ(get(DATA + C_CMPXCHG, 8), total);
	CHECK_EQ(get(DATA + C_XCHG_LOCK, 4), 0);
	CHECK_EQ(get(DATA + C_XCHG_PROT, 8), total);
	CHECK_EQ(get(DATA + C_ADD32, 4), total);
	CHECK_EQ(get(DATA + C_ADD16, 2), total & 0xffff);
	CHECK_EQ(get(DATA + C_ADD8, 1), total & 0xff);
	CHECK_EQ(get(DATA + C_BTS_LOCK, 8), 0);
	CHECK_EQ(get(DATA + C_BTS_PROT, 8), total);
	CHECK_EQ(get(DATA + C_SPLIT_LINE, 4), total);
	CHECK_EQ(get(DATA + C_UNALIGNED, 4), total);
	CHECK_EQ(get(DATA + C_CX16, 8), CX16_START + total);
	CHECK_EQ(get(DATA + C_CX16 + 8, 8), 1); /* the carry */
	CHECK_EQ(get(DATA + C_CX8, 8), CX8_START + total);
	CHECK_EQ(get(DATA + C_SUB, 8), -total);
	CHECK_EQ(get(DATA + C_SPLIT_PAGE, 4), total);
}

static void test_smp_counters_paged(void)
{
	run_workers(&emu_paged_memory_ops, NULL);
}

static void test_smp_counters_flat(void)
{
	static struct emu_flat_memory mem;

	memset(&mem, 0, sizeof(mem));
	emu_flat_add(&mem, CODE, ram + CODE, 0x1000, false);
	emu_flat_add(&mem, DATA, ram + DATA, 0x2000, true);
	run_workers(&emu_flat_memory_ops, &mem);
}

/* One instruction at CODE on a fresh single vCPU. */
static struct emu_cpu one;

static void one_insn(const uint8_t *bytes, unsigned n)
{
	machine_reset();
	emu_cpu_destroy(&one);
	cpu_setup(&one, &emu_paged_memory_ops, NULL);
	memcpy(ram + CODE, bytes, n);
}

static void check_fault(uint64_t cr2, uint32_t error_code, uint64_t rflags)
{
	CHECK_EQ(emu_step(&one), EMU_EXCEPTION);
	CHECK_EQ(one.exc.vector, EMU_VEC_PF);
	CHECK_EQ(one.exc.error_code, error_code);
	CHECK_EQ(one.exc.cr2, cr2);
	CHECK_EQ(one.s.rip, CODE);
	emu_flags_sync(&one);
	CHECK_EQ(one.s.rflags, rflags);
}

static void test_locked_faults_change_nothing(void)
{
	/* lock add dword [rdi], 1 */
	static const uint8_t add[] = { 0xF0, 0x83, 0x07, 0x01 };
	/* lock cmpxchg [rdi], rdx (fails: memory is not RAX) */
	static const uint8_t cmpxchg[] = { 0xF0, 0x48, 0x0F, 0xB1, 0x17 };
	/* lock xadd [rdi], rax */
	static const uint8_t xadd[] = { 0xF0, 0x48, 0x0F, 0xC1, 0x07 };
	/* xchg [rdi], eax */
	static const uint8_t xchg[] = { 0x87, 0x07 };
	/* lock cmpxchg16b [rdi] */
	static const uint8_t cx16[] = { 0xF0, 0x48, 0x0F, 0xC7, 0x0F };
	uint64_t flags = EMU_FLAG_FIXED1 | EMU_FLAG_CF | EMU_FLAG_ZF;

	/* A read-only page: #PF with P|W before anything is written, flags untouched. */
	one_insn(add, sizeof(add));
	one.s.rflags = flags;
	one.s.gpr[CPU_RDI] = RO_PAGE + 0x10;
	put64(RO_PAGE + 0x10, 41);
	check_fault(RO_PAGE + 0x10, 3, flags);
	CHECK_EQ(get(RO_PAGE + 0x10, 8), 41);

	/* A failing CMPXCHG is a locked write too (SDM: CMPXCHG): it faults, RAX stays. */
	one_insn(cmpxchg, sizeof(cmpxchg));
	one.s.rflags = flags;
	one.s.gpr[CPU_RDI] = RO_PAGE;
	one.s.gpr[CPU_RAX] = 5;
	put64(RO_PAGE, 7);
	check_fault(RO_PAGE, 3, flags);
	CHECK_EQ(one.s.gpr[CPU_RAX], 5);
	CHECK_EQ(get(RO_PAGE, 8), 7);

	/* Not present: the error code says write. */
	one_insn(xadd, sizeof(xadd));
	one.s.rflags = flags;
	one.s.gpr[CPU_RDI] = NOT_PRESENT + 8;
	one.s.gpr[CPU_RAX] = 3;
	check_fault(NOT_PRESENT + 8, 2, flags);
	CHECK_EQ(one.s.gpr[CPU_RAX], 3);

	one_insn(xchg, sizeof(xchg));
	one.s.rflags = flags;
	one.s.gpr[CPU_RDI] = RO_PAGE + 4;
	one.s.gpr[CPU_RAX] = 0x1234;
	check_fault(RO_PAGE + 4, 3, flags);
	CHECK_EQ(one.s.gpr[CPU_RAX], 0x1234);

	/* Split across a writable and a read-only page: the second page faults, the first
	 * keeps its bytes. */
	one_insn(add, sizeof(add));
	one.s.rflags = flags;
	one.s.gpr[CPU_RDI] = RO_PAGE - 2;
	put64(RO_PAGE - 8, 0x1111111111111111ull);
	check_fault(RO_PAGE, 3, flags);
	CHECK_EQ(get(RO_PAGE - 8, 8), 0x1111111111111111ull);

	one_insn(cx16, sizeof(cx16));
	one.s.rflags = flags;
	one.s.gpr[CPU_RDI] = RO_PAGE + 0x20;
	check_fault(RO_PAGE + 0x20, 3, flags);
}

static void test_locked_sets_dirty_and_works(void)
{
	/* lock cmpxchg [rdi], rdx; lock xadd [rdi+8], rax; lock cmpxchg16b [rdi+16] */
	static const uint8_t prog[] = { 0xF0, 0x48, 0x0F, 0xB1, 0x17,
					0xF0, 0x48, 0x0F, 0xC1, 0x47, 0x08,
					0xF0, 0x48, 0x0F, 0xC7, 0x4F, 0x10 };
	uint64_t pte = PT + 8 * (DATA >> 12);

	one_insn(prog, sizeof(prog));
	one.s.gpr[CPU_RDI] = DATA;
	one.s.gpr[CPU_RAX] = 1;
	one.s.gpr[CPU_RDX] = 99;
	put64(DATA, 2);
	CHECK(!(get(pte, 8) & PTE_D));
	/* A failing CMPXCHG: RAX gets memory, ZF clear, the page is dirty (it was written). */
	CHECK_EQ(emu_step(&one), EMU_OK);
	CHECK_EQ(one.s.gpr[CPU_RAX], 2);
	CHECK_EQ(get(DATA, 8), 2);
	CHECK(!emu_condition(&one, 4));
	CHECK(get(pte, 8) & PTE_D);
	put64(DATA + 8, 40);
	CHECK_EQ(emu_step(&one), EMU_OK);
	CHECK_EQ(one.s.gpr[CPU_RAX], 40);
	CHECK_EQ(get(DATA + 8, 8), 42);
	/* CMPXCHG16B: RDX:RAX = 99:40 against 0:0 fails and loads it. */
	CHECK_EQ(emu_step(&one), EMU_OK);
	CHECK(!emu_condition(&one, 4));
	CHECK_EQ(one.s.gpr[CPU_RAX], 0);
	CHECK_EQ(one.s.gpr[CPU_RDX], 0);
}

static void test_locked_mmio(void)
{
	/* lock add dword [rdi], 5; lock xadd [rdi], rax; xchg [rdi], ebx */
	static const uint8_t prog[] = { 0xF0, 0x83, 0x07, 0x05, 0xF0, 0x48, 0x0F, 0xC1, 0x07,
					0x87, 0x1F };

	one_insn(prog, sizeof(prog));
	one.s.gpr[CPU_RDI] = MMIO_PAGE + 0x40;
	mmio_value = 10;
	CHECK_EQ(emu_step(&one), EMU_OK);
	CHECK_EQ(mmio_value, 15);
	CHECK_EQ(mmio_reads, 1);
	CHECK_EQ(mmio_writes, 1);
	one.s.gpr[CPU_RAX] = 100;
	CHECK_EQ(emu_step(&one), EMU_OK);
	CHECK_EQ(mmio_value, 115);
	CHECK_EQ(one.s.gpr[CPU_RAX], 15);
	one.s.gpr[CPU_RBX] = 7;
	CHECK_EQ(emu_step(&one), EMU_OK);
	CHECK_EQ(mmio_value, 7);
	CHECK_EQ(one.s.gpr[CPU_RBX], 115);
	CHECK_EQ(mmio_reads, 3);
	CHECK_EQ(mmio_writes, 3);
}

int main(void)
{
	ram = aligned_alloc(4096, MEM_SIZE);
	if (!ram || memory_code_init(&code_pages, ram, MEM_SIZE) < 0)
		return 1;
	RUN_TEST(test_smp_counters_paged);
	RUN_TEST(test_smp_counters_flat);
	RUN_TEST(test_locked_faults_change_nothing);
	RUN_TEST(test_locked_sets_dirty_and_works);
	RUN_TEST(test_locked_mmio);
	emu_cpu_destroy(&one);
	memory_code_destroy(&code_pages);
	free(ram);
	return TEST_EXIT();
}
