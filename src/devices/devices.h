/* Legacy platform devices (docs/platform.md). Each registers its ports on vm->pio. */
#ifndef VMM_DEVICES_H
#define VMM_DEVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct vm;
struct serial;
struct acpi_pm;
struct debug_port;

struct devices {
	struct serial *com1;
	struct acpi_pm *pm;
	void *rtc, *i8042, *pvpanic, *post;
	struct debug_port *debug_port;
};

/* Create and register every platform device; 0 or a negative errno. */
int devices_init(struct vm *vm, int console_out_fd);
void devices_destroy(struct vm *vm);

/* 16550A UART. Output goes to out_fd; input arrives through serial_receive(). */
struct serial *serial_create(struct vm *vm, uint16_t port, unsigned irq, int out_fd);
void serial_destroy(struct serial *s);
/* Queue input bytes for the guest; returns how many were taken (the rest must be retried after
 * the guest drains the FIFO: serial_rx_wait_fd() becomes readable then). */
size_t serial_receive(struct serial *s, const uint8_t *data, size_t len);
size_t serial_rx_space(struct serial *s);
int serial_rx_wait_fd(struct serial *s);
/* True when the receive FIFO has room for `need` bytes; otherwise false, and
 * serial_rx_wait_fd() becomes readable once the guest reads from the FIFO. */
bool serial_wait_for_space(struct serial *s, size_t need);

struct acpi_pm *acpi_pm_create(struct vm *vm);
void acpi_pm_destroy(struct acpi_pm *pm);
/* Press the ACPI power button: the guest sees a fixed-feature power-button event (SCI). */
void acpi_pm_power_button(struct acpi_pm *pm);

void *rtc_create(struct vm *vm);
void *i8042_create(struct vm *vm);
void *pvpanic_create(struct vm *vm);
void *post_create(struct vm *vm);

/* The boot-profiling debug port (debug_port.c, docs/platform.md). */
#define DEBUG_PORT 0x402
#define DEBUG_PORT_LINE_MAX 80
#define DEBUG_PORT_MAX_MARKS 256
struct debug_port *debug_port_create(struct vm *vm);
void debug_port_destroy(struct debug_port *d);
/* Print the recorded marks (any thread). */
void debug_port_format(struct debug_port *d, FILE *out);

#endif
