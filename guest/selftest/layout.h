/* Constants shared by the assembly entry stubs and the C code. */
#ifndef SELFTEST_LAYOUT_H
#define SELFTEST_LAYOUT_H

/* Where both images run: the bzImage protected-mode part and the ELF PT_LOAD segment. */
#define KERNEL_BASE 0x100000

/* Selectors of our own GDT (boot.S). */
#define KERNEL_CS 0x08   /* 64-bit code */
#define KERNEL_DS 0x10   /* flat data */
#define KERNEL_CS32 0x18 /* 32-bit code, used before long mode is on */
#define GDT_ENTRIES 4

/* How we were entered; passed from the stubs to boot_main(). */
#define BOOT_KIND_PVH 1     /* PVH: 32-bit, EBX = hvm_start_info */
#define BOOT_KIND_LINUX32 2 /* Linux 32-bit protocol at code32_start: ESI = boot_params */
#define BOOT_KIND_LINUX64 3 /* Linux 64-bit protocol at code32_start + 0x200: RSI = boot_params */

#define BOOT_STACK_SIZE 16384
#define MAX_CPUS 64
#define AP_STACK_SHIFT 10 /* 1 KiB per AP: ap_main() is a leaf that only stores its APIC id */

/* Control-register and MSR bits used to enter long mode. */
#define CR0_PE 0x00000001
#define CR0_PG 0x80000000
#define CR4_PAE 0x00000020
#define MSR_EFER 0xC0000080
#define EFER_LME 0x00000100

/* Interrupt vectors: 0-31 exceptions, then ours; the stubs cover 0 .. IDT_VECTORS-1. */
#define IDT_VECTORS 64
#define VECTOR_TIMER 0x30
#define VECTOR_UART 0x31
#define VECTOR_VIRTIO_BASE 0x34 /* two per virtio device (queue, configuration), up to 4 devices */
#define VECTOR_SPURIOUS 0x3F

/* Virtual address of the 2 MiB mapping windows for memory above 4 GiB (PML4 slot 1). */
#define HIGHMEM_WINDOW 0x8000000000

#endif
