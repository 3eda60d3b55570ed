/* 16550A UART (COM1). Transmit is synchronous to the output fd, so THR is always empty again by
 * the time the guest looks; receive has a FIFO filled by the console thread. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/devices.h"
#include "vm.h"

#define UART_RX_FIFO 4096

/* Register offsets and bits (PC16550D datasheet). */
enum { UART_RBR_THR = 0, UART_IER = 1, UART_IIR_FCR = 2, UART_LCR = 3, UART_MCR = 4,
       UART_LSR = 5, UART_MSR = 6, UART_SCR = 7 };
#define IER_RDI 0x01
#define IER_THRI 0x02
#define IER_RLSI 0x04
#define IER_MSI 0x08
#define IIR_NO_INT 0x01
#define IIR_MSI 0x00
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_FIFO 0xC0
#define LCR_DLAB 0x80
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MCR_LOOP 0x10
#define MSR_DCD 0x80
#define MSR_DSR 0x20
#define MSR_CTS 0x10

struct serial {
	struct vm *vm;
	pthread_mutex_t lock; /* guards every field below */
	unsigned irq;
	int out_fd, wait_fd;
	uint8_t ier, lcr, mcr, scr, fcr, dll, dlm, msr_delta;
	bool thri_pending, irq_level, waiting_for_space;
	uint8_t rx[UART_RX_FIFO];
	size_t rx_head, rx_count;
};

static uint8_t serial_iir(struct serial *s)
{
	uint8_t fifo = (s->fcr & 1) ? IIR_FIFO : 0;
	if ((s->ier & IER_RDI) && s->rx_count)
		return IIR_RDI | fifo;
	if ((s->ier & IER_THRI) && s->thri_pending)
		return IIR_THRI | fifo;
	if ((s->ier & IER_MSI) && s->msr_delta)
		return IIR_MSI | fifo;
	return IIR_NO_INT | fifo;
}

/* The UART's INTR pin is a level; the interrupt controller sees its edges. */
static void serial_update_irq(struct serial *s)
{
	bool level = !(serial_iir(s) & IIR_NO_INT);
	if (level != s->irq_level) {
		s->irq_level = level;
		vm_irq_line(s->vm, s->irq, level);
	}
}

static void serial_transmit(struct serial *s, uint8_t byte)
{
	if (s->mcr & MCR_LOOP) {
		if (s->rx_count < UART_RX_FIFO) {
			s->rx[(s->rx_head + s->rx_count) % UART_RX_FIFO] = byte;
			s->rx_count++;
		}
	} else {
		/* A console that has gone away (closed pipe) must not stop the guest. */
		while (write(s->out_fd, &byte, 1) < 0 && errno == EINTR)
			;
	}
	s->thri_pending = true;
}

static uint8_t serial_read_rbr(struct serial *s)
{
	if (!s->rx_count)
		return 0;
	uint8_t b = s->rx[s->rx_head];
	s->rx_head = (s->rx_head + 1) % UART_RX_FIFO;
	s->rx_count--;
	if (s->waiting_for_space) {
		s->waiting_for_space = false;
		uint64_t one = 1;
		if (write(s->wait_fd, &one, sizeof(one)) < 0) {
			/* eventfd overflow is impossible with one token in flight */
		}
	}
	return b;
}

static uint8_t serial_read(struct serial *s, unsigned reg)
{
	switch (reg) {
	case UART_RBR_THR:
		return (s->lcr & LCR_DLAB) ? s->dll : serial_read_rbr(s);
	case UART_IER:
		return (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
	case UART_IIR_FCR: {
		uint8_t iir = serial_iir(s);
		if ((iir & 0x0F) == IIR_THRI)
			s->thri_pending = false; /* reading IIR clears a THR-empty interrupt */
		return iir;
	}
	case UART_LCR:
		return s->lcr;
	case UART_MCR:
		return s->mcr;
	case UART_LSR:
		return LSR_THRE | LSR_TEMT | (s->rx_count ? LSR_DR : 0);
	case UART_MSR: {
		uint8_t msr = (s->mcr & MCR_LOOP) ? (uint8_t)((s->mcr & 0x0C) << 4 | (s->mcr & 0x3) << 4)
						  : MSR_DCD | MSR_DSR | MSR_CTS;
		msr |= s->msr_delta;
		s->msr_delta = 0;
		return msr;
	}
	default:
		return s->scr;
	}
}

static void serial_write(struct serial *s, unsigned reg, uint8_t v)
{
	switch (reg) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB)
			s->dll = v;
		else
			serial_transmit(s, v);
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
		} else {
			/* Enabling THRI while THR is empty raises it at once, as the 16550 does. */
			if ((v & IER_THRI) && !(s->ier & IER_THRI))
				s->thri_pending = true;
			s->ier = v & 0x0F;
		}
		break;
	case UART_IIR_FCR:
		s->fcr = v & 0xC9;
		if (v & 0x02) /* clear receive FIFO */
			s->rx_head = s->rx_count = 0;
		break;
	case UART_LCR:
		s->lcr = v;
		break;
	case UART_MCR:
		s->mcr = v & 0x1F;
		break;
	case UART_SCR:
		s->scr = v;
		break;
	default:
		break; /* LSR and MSR are read-only */
	}
}

static void serial_io(void *owner, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct serial *s = owner;
	uint8_t *bytes = data;
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < size; i++) { /* wider accesses touch consecutive registers */
		unsigned reg = (unsigned)(offset + i) & 7;
		if (is_write)
			serial_write(s, reg, bytes[i]);
		else
			bytes[i] = serial_read(s, reg);
	}
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

size_t serial_rx_space(struct serial *s)
{
	pthread_mutex_lock(&s->lock);
	size_t space = UART_RX_FIFO - s->rx_count;
	pthread_mutex_unlock(&s->lock);
	return space;
}

size_t serial_receive(struct serial *s, const uint8_t *data, size_t len)
{
	pthread_mutex_lock(&s->lock);
	size_t n = 0;
	for (; n < len && s->rx_count < UART_RX_FIFO; n++) {
		s->rx[(s->rx_head + s->rx_count) % UART_RX_FIFO] = data[n];
		s->rx_count++;
	}
	if (n < len)
		s->waiting_for_space = true;
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return n;
}

bool serial_wait_for_space(struct serial *s, size_t need)
{
	pthread_mutex_lock(&s->lock);
	bool ready = UART_RX_FIFO - s->rx_count >= need;
	if (!ready)
		s->waiting_for_space = true;
	pthread_mutex_unlock(&s->lock);
	return ready;
}

int serial_rx_wait_fd(struct serial *s)
{
	return s->wait_fd;
}

struct serial *serial_create(struct vm *vm, uint16_t port, unsigned irq, int out_fd)
{
	struct serial *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->vm = vm;
	s->irq = irq;
	s->out_fd = out_fd;
	s->wait_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&s->lock, NULL);
	if (s->wait_fd < 0 || bus_register(&vm->pio, port, 8, s, serial_io, "serial") < 0) {
		serial_destroy(s);
		return NULL;
	}
	return s;
}

void serial_destroy(struct serial *s)
{
	if (!s)
		return;
	if (s->wait_fd >= 0)
		close(s->wait_fd);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
