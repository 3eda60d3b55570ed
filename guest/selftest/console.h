/* COM1 output (polled) and the UART register map shared with the uart and ioapic checks. */
#ifndef SELFTEST_CONSOLE_H
#define SELFTEST_CONSOLE_H

#include <stdint.h>

#define COM1 0x3F8
#define UART_THR 0 /* transmit holding (write) */
#define UART_IER 1 /* interrupt enable */
#define UART_IIR 2 /* interrupt identification (read) / FIFO control (write) */
#define UART_LCR 3 /* line control */
#define UART_MCR 4 /* modem control */
#define UART_LSR 5 /* line status */
#define UART_SCR 7 /* scratch */

#define UART_IER_THRE 0x02
#define UART_MCR_OUT2 0x08 /* gates the IRQ line on PC-compatible boards */
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40

void console_init(void);
void console_write(const char *s);
void console_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
