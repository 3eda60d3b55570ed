/* IDT, interrupt dispatch and the deliberate triple fault. */
#ifndef SELFTEST_INTERRUPTS_H
#define SELFTEST_INTERRUPTS_H

#include <stdint.h>

/* Pushed by isr.S: saved registers, then the vector and error code, then the CPU's frame. */
struct interrupt_frame {
	uint64_t r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
	uint64_t vector, error_code;
	uint64_t rip, cs, rflags, rsp, ss;
};

typedef void (*interrupt_handler)(const struct interrupt_frame *frame);

/* Loads the IDT and masks both 8259 PICs, whose vectors would collide with exceptions. */
void interrupts_init(void);
void interrupts_set_handler(uint8_t vector, interrupt_handler handler);
void interrupts_triple_fault(void) __attribute__((noreturn));

#endif
