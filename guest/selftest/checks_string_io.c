/* String port I/O (INS/OUTS, SDM Vol. 2): bytes through the UART's loopback (what REP OUTSB
 * writes to the transmitter comes back in the receive FIFO, in order, for REP INSB), forwards
 * and backwards (DF), with 32-bit addresses; words and dwords from the PCI configuration ports.
 * On KVM a REP INS/OUTS is one exit with several items, on the software CPU one per item: the
 * device must see the same accesses in the same order either way. */
#include "check.h"
#include "console.h"
#include "io.h"
#include "lib.h"

#define UART_MCR_LOOP 0x10
#define UART_FCR_ENABLE_CLEAR 0x07
#define PCI_CONFIG_ADDRESS 0xCF8
#define PCI_CONFIG_DATA 0xCFC
#define PCI_ENABLE 0x80000000u

struct string_io_regs {
	uint64_t rsi, rdi, rcx;
};

/* REP OUTSB/INSB with the direction flag `down`; the registers after it. */
static struct string_io_regs rep_outsb(uint16_t port, const void *src, uint64_t count, bool down)
{
	struct string_io_regs r = { (uint64_t)src, 0, count };

	if (down)
		__asm__ volatile("std; rep outsb; cld"
				 : "+S"(r.rsi), "+c"(r.rcx)
				 : "d"(port)
				 : "memory");
	else
		__asm__ volatile("rep outsb" : "+S"(r.rsi), "+c"(r.rcx) : "d"(port) : "memory");
	return r;
}

static struct string_io_regs rep_insb(uint16_t port, void *dst, uint64_t count, bool down)
{
	struct string_io_regs r = { 0, (uint64_t)dst, count };

	if (down)
		__asm__ volatile("std; rep insb; cld"
				 : "+D"(r.rdi), "+c"(r.rcx)
				 : "d"(port)
				 : "memory");
	else
		__asm__ volatile("rep insb" : "+D"(r.rdi), "+c"(r.rcx) : "d"(port) : "memory");
	return r;
}

/* The UART in loopback: nothing reaches the console meanwhile (no printing in between). */
static bool string_io_loopback(char *why, size_t why_size)
{
	static const char text[] = "rep outsb -> rep insb";
	char got[sizeof(text)];
	uint32_t n = sizeof(text) - 1;
	struct string_io_regs r;

	memset(got, 0, sizeof(got));
	outb(COM1 + UART_IIR, UART_FCR_ENABLE_CLEAR);
	outb(COM1 + UART_MCR, UART_MCR_LOOP | 0x03);
	r = rep_outsb(COM1, text, n, false);
	if (r.rcx || r.rsi != (uint64_t)text + n) {
		format(why, why_size, "rep outsb left rcx %lu, rsi +%ld", r.rcx,
		       r.rsi - (uint64_t)text);
		return false;
	}
	r = rep_insb(COM1, got, n, false);
	if (r.rcx || r.rdi != (uint64_t)got + n || memcmp(got, text, n)) {
		format(why, why_size, "rep insb read \"%s\", rcx %lu, rdi +%ld", got, r.rcx,
		       r.rdi - (uint64_t)got);
		return false;
	}
	/* Backwards: the last byte first, RSI/RDI end one below the buffers. */
	memset(got, 0, sizeof(got));
	r = rep_outsb(COM1, text + n - 1, n, true);
	if (r.rcx || r.rsi != (uint64_t)text - 1) {
		format(why, why_size, "std; rep outsb left rcx %lu, rsi %ld", r.rcx,
		       r.rsi - (uint64_t)text);
		return false;
	}
	r = rep_insb(COM1, got + n - 1, n, true);
	if (r.rcx || r.rdi != (uint64_t)got - 1 || memcmp(got, text, n)) {
		format(why, why_size, "std; rep insb read \"%s\", rcx %lu", got, r.rcx);
		return false;
	}
	/* 32-bit addresses (67h): EDI and ECX; one byte without REP. */
	uint64_t rdi = (uint64_t)got, rcx = 2;
	outb(COM1, 'x');
	outb(COM1, 'y');
	outb(COM1, 'z');
	__asm__ volatile("addr32 rep insb; insb" : "+D"(rdi), "+c"(rcx) : "d"(COM1) : "memory");
	if (rcx || rdi != (uint64_t)got + 3 || memcmp(got, "xyz", 3)) {
		format(why, why_size, "addr32 rep insb; insb read \"%.3s\", rcx %lu, rdi +%ld", got,
		       rcx, rdi - (uint64_t)got);
		return false;
	}
	return true;
}

/* INSL/INSW from the configuration data port give what IN gives; the last of a REP OUTSL to
 * the address port stays. */
static bool string_io_pci(char *why, size_t why_size)
{
	static const uint32_t addresses[2] = { PCI_ENABLE | 0x08, PCI_ENABLE };
	uint32_t ids[3] = { 0, 0, 0 };
	uint16_t vendor[2] = { 0, 0 };
	uint64_t rsi = (uint64_t)addresses, rdi = (uint64_t)ids, rcx = 2;

	__asm__ volatile("rep outsl" : "+S"(rsi), "+c"(rcx) : "d"(PCI_CONFIG_ADDRESS) : "memory");
	uint32_t address = inl(PCI_CONFIG_ADDRESS), id = inl(PCI_CONFIG_DATA);
	if (address != PCI_ENABLE || rsi != (uint64_t)(addresses + 2)) {
		format(why, why_size, "rep outsl: address register 0x%x", address);
		return false;
	}
	rcx = 3;
	__asm__ volatile("rep insl" : "+D"(rdi), "+c"(rcx) : "d"(PCI_CONFIG_DATA) : "memory");
	if (ids[0] != id || ids[1] != id || ids[2] != id || rdi != (uint64_t)(ids + 3)) {
		format(why, why_size, "rep insl: 0x%x 0x%x 0x%x, inl 0x%x", ids[0], ids[1], ids[2],
		       id);
		return false;
	}
	rdi = (uint64_t)vendor;
	rcx = 2;
	__asm__ volatile("rep insw" : "+D"(rdi), "+c"(rcx) : "d"(PCI_CONFIG_DATA) : "memory");
	if (vendor[0] != (uint16_t)id || vendor[1] != (uint16_t)id ||
	    rdi != (uint64_t)(vendor + 2)) {
		format(why, why_size, "rep insw: 0x%x 0x%x, inl 0x%x", vendor[0], vendor[1], id);
		return false;
	}
	return true;
}

void check_string_io(struct selftest *t)
{
	char why[120] = "";
	bool ok = string_io_loopback(why, sizeof(why));

	(void)t;
	outb(COM1 + UART_MCR, 0x03); /* the console again */
	outb(COM1 + UART_IIR, UART_FCR_ENABLE_CLEAR);
	if (ok)
		ok = string_io_pci(why, sizeof(why));
	if (ok)
		check_ok("string-io");
	else
		check_fail("string-io", "%s", why);
}
