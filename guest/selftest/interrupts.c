/* IDT with one stub per vector (isr.S); exceptions end the run with a FAIL line. */
#include "interrupts.h"
#include "check.h"
#include "io.h"
#include "layout.h"
#include "lib.h"

#define GATE_INTERRUPT 0x8E /* present, DPL 0, 64-bit interrupt gate */
#define PIC1_DATA 0x21
#define PIC2_DATA 0xA1
#define EXCEPTION_VECTORS 32

struct idt_gate {
	uint16_t offset_low;
	uint16_t selector;
	uint8_t ist;
	uint8_t type;
	uint16_t offset_middle;
	uint32_t offset_high;
	uint32_t reserved;
} __attribute__((packed));

struct idt_descriptor {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

extern const uint8_t isr_stubs[];
static struct idt_gate idt[IDT_VECTORS];
static interrupt_handler handlers[IDT_VECTORS];

void interrupts_init(void)
{
	for (unsigned v = 0; v < IDT_VECTORS; v++) {
		uint64_t stub = (uint64_t)(isr_stubs + 16 * v);

		idt[v] = (struct idt_gate){
			.offset_low = (uint16_t)stub,
			.selector = KERNEL_CS,
			.type = GATE_INTERRUPT,
			.offset_middle = (uint16_t)(stub >> 16),
			.offset_high = (uint32_t)(stub >> 32),
		};
	}
	struct idt_descriptor descriptor = { sizeof(idt) - 1, (uint64_t)idt };
	__asm__ volatile("lidt %0" : : "m"(descriptor));
	outb(PIC1_DATA, 0xFF);
	outb(PIC2_DATA, 0xFF);
}

void interrupts_set_handler(uint8_t vector, interrupt_handler handler)
{
	if (vector < IDT_VECTORS)
		handlers[vector] = handler;
}

void interrupt_dispatch(const struct interrupt_frame *frame);
void interrupt_dispatch(const struct interrupt_frame *frame)
{
	if (frame->vector < IDT_VECTORS && handlers[frame->vector]) {
		handlers[frame->vector](frame);
		return;
	}
	if (frame->vector < EXCEPTION_VECTORS) {
		selftest_abort("exception %lu (error 0x%lx) at rip 0x%lx", frame->vector,
			       frame->error_code, frame->rip);
	}
	/* A stray interrupt (e.g. spurious): nothing to acknowledge for a spurious vector. */
}

/* With an empty IDT every exception escalates: #UD -> #GP -> #DF -> shutdown. */
void interrupts_triple_fault(void)
{
	struct idt_descriptor empty = { 0, 0 };

	__asm__ volatile("cli; lidt %0; ud2" : : "m"(empty));
	__builtin_unreachable();
}
