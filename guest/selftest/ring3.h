/*
 * Running a function at CPL 3. On kvm-pvm hosts the host emulates every CPL 0 instruction of a
 * guest that is not a PVM kernel (~2 M instructions/s) but runs CPL 3 code natively: the
 * network bench's loops run at CPL 3 so that they measure the monitor, not the emulator.
 *
 * ring3_setup() adds user code and data segments and a TSS to a copy of our GDT, makes the
 * identity map of the first 4 GiB user-accessible, and makes #UD the way back. The
 * function runs with interrupts off and IOPL 0: no port I/O (it must not print), MMIO and
 * memory as at CPL 0. An exception there ends the run like any other (the TSS gives it a stack).
 */
#ifndef SELFTEST_RING3_H
#define SELFTEST_RING3_H

void ring3_setup(void);
/* Runs fn(arg) at CPL 3 on its own stack and returns when it returns. */
void ring3_run(void (*fn)(void *arg), void *arg);

#endif
