/* vmm: parse the command line, read the images, pick a backend, then create, run and destroy
 * the VM (again after a guest reboot with --reboot=restart). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/client.h"
#include "api/control.h"
#include "config.h"
#include "console.h"
#include "devices/devices.h"
#include "stats.h"
#include "trace.h"
#include "vm.h"

/* Defined only when the software CPU is built in (src/cpu/emu/). */
extern const struct cpu_backend cpu_backend_emu __attribute__((weak));

static const char usage_text[] =
	"usage: vmm [run] [OPTIONS] KERNEL [KERNEL-ARGS...]\n"
	"       vmm [OPTIONS] --api-sock PATH | --name NAME   (configured through the socket)\n"
	"       vmm ls|status|stop|kill|pause|resume|console ...   (vmm ls --help)\n"
	"Boot KERNEL (a bzImage, or an ELF vmlinux with a PVH entry) as a virtual machine.\n"
	"\n"
	"  -m, --memory SIZE    guest RAM, e.g. 512M or 2G (default 256M, at least 64M)\n"
	"  -c, --cpus N         number of vCPUs (default 1, or maxcpus=N from KERNEL-ARGS)\n"
	"  -i, --initrd FILE    initial ramdisk\n"
	"  -d, --disk FILE[,ro][,serial=ID][,cache=none|writeback]\n"
	"                       a raw disk image as a virtio block device (repeatable: the\n"
	"                       guest sees /dev/vda, /dev/vdb, ... in this order); ro opens it\n"
	"                       read-only, cache=none bypasses the host page cache (O_DIRECT).\n"
	"                       The kernel argument simscsi=PREFIX attaches PREFIXa, PREFIXb...\n"
	"      --accel WHICH    kvm, emu (software CPU) or auto (default: kvm where the host\n"
	"                       has VMX/SVM, otherwise emu)\n"
	"      --reboot ACTION  exit (default, status 3) or restart when the guest reboots\n"
	"      --kernel-decompress host|guest\n"
	"                       where a bzImage's kernel is decompressed: host (default:\n"
	"                       by vmm when the payload is LZ4, else by the kernel) or guest\n"
	"                       (always by the kernel's own decompressor)\n"
	"      --poll-max-us N[,always]\n"
	"                       busy-poll at most N us (adaptive, e.g. 200; default 0: off) in a\n"
	"                       halted software-CPU vCPU after a device notify and in the\n"
	"                       event loop after frames were sent, before sleeping: less\n"
	"                       latency, more host CPU; not while the host is busy, unless\n"
	"                       ,always\n"
	"      --name NAME      the VM's name; its control socket is RUNTIME_DIR/NAME.sock\n"
	"      --api-sock PATH  serve the control API (HTTP, Firecracker's subset) on PATH\n"
	"                       instead (none: no socket)\n"
	"      --console-pty    put the console on a new pty (vmm console NAME attaches)\n"
	"      --console-log F  append everything the console prints to F\n"
	"  -k, --keep           keep what the monitor creates on the host at exit\n"
	"  -t, --trace LIST     trace events, one line each: a comma list of boot, exit, pio,\n"
	"                       mmio, pci, virtio, irq, net, blk, control, or all\n"
	"      --trace-file F   write the trace to F instead of stderr\n"
	"      --stats          print exit, I/O, interrupt, device and boot-mark counts at exit\n"
	"  -g, --gdb [HOST:]PORT  serve the GDB remote protocol for the guest (default host\n"
	"                       127.0.0.1; all vCPUs are threads)\n"
	"      --gdb-wait       hold the guest at its first instruction until gdb attaches\n"
	"  -h, --help           this help\n"
	"      --version        print the version\n"
	"\n"
	"The console is COM1 on stdin/stdout; Ctrl-A x quits, Ctrl-A h shows the keys.\n"
	"Exit status: 0 guest powered off, 1 error, 2 bad usage, 3 guest rebooted,\n"
	"4 guest panicked, 5 triple fault, 6 internal error, 7 quit from the console,\n"
	"8 killed through the API (vmm kill), 128+N killed by signal N.\n";

/* Hardware virtualisation, as the host kernel reports it. */
static bool host_has_vmx_svm(void)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return false;
	char line[4096];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f))
		if (!strncmp(line, "flags", 5))
			found = strstr(line, " vmx") || strstr(line, " svm");
	fclose(f);
	return found;
}

static const struct cpu_backend *choose_backend(enum accel_kind accel)
{
	bool have_emu = &cpu_backend_emu != NULL;
	if (accel == ACCEL_KVM)
		return &cpu_backend_kvm;
	if (accel == ACCEL_EMU) {
		if (!have_emu)
			fprintf(stderr, "vmm: --accel emu: the software CPU is not built into this vmm yet (use --accel kvm)\n");
		return have_emu ? &cpu_backend_emu : NULL;
	}
	if (host_has_vmx_svm()) {
		fprintf(stderr, "vmm: accel: kvm (the host has hardware virtualisation)\n");
		return &cpu_backend_kvm;
	}
	if (have_emu) {
		fprintf(stderr, "vmm: accel: emu (no VMX/SVM on this host: using the software CPU)\n");
		return &cpu_backend_emu;
	}
	fprintf(stderr, "vmm: accel: kvm; warning: no VMX/SVM on this host, so its /dev/kvm cannot run stock Linux kernels (small guests only)\n");
	return &cpu_backend_kvm;
}

/* Read a whole file; one line naming the file and the fix in err on failure. */
static uint8_t *read_image(const char *path, const char *what, size_t *size, char *err,
			   size_t err_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, err_len, "%s %s: %s (give the path of a readable file)", what, path,
			 strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	const char *why = S_ISDIR(st.st_mode) ? "is a directory" : !S_ISREG(st.st_mode) ? "is not a regular file"
			  : st.st_size == 0 ? "is empty" : NULL;
	if (why) {
		snprintf(err, err_len, "%s %s: %s (give the path of a %s file)", what, path, why, what);
		close(fd);
		return NULL;
	}
	uint8_t *buf = malloc((size_t)st.st_size);
	size_t done = 0;
	while (buf && done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
		if (n <= 0) {
			snprintf(err, err_len, "%s %s: %s", what, path, n < 0 ? strerror(errno) : "short read");
			free(buf);
			buf = NULL;
		} else {
			done += (size_t)n;
		}
	}
	close(fd);
	*size = done;
	return buf;
}

static int check_memory_size(const struct vm_config *cfg, char *err, size_t err_len)
{
	uint64_t host = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
	if (cfg->mem_size < MEMORY_MIN_SIZE) {
		snprintf(err, err_len, "--memory: %llu MiB is too small (use at least 64M)",
			 (unsigned long long)(cfg->mem_size >> 20));
		return -1;
	}
	if (cfg->mem_size > host) {
		snprintf(err, err_len, "--memory: %llu MiB is more than the host's %llu MiB (use a smaller -m)",
			 (unsigned long long)(cfg->mem_size >> 20), (unsigned long long)(host >> 20));
		return -1;
	}
	return 0;
}

/* What the main thread watches besides the devices' own fds. */
struct main_loop {
	struct event_loop events;
	int signal_fd;
	struct console console;
	struct vm *vm; /* the VM running now */
	bool file_input; /* stdin is a regular file: epoll cannot watch it, read it on a timer */
	/* The control socket, the console relay and the API's view of the VM (src/api/). */
	struct control control;
	struct vm_config *cfg;
	struct vm_images *img;
	const struct cpu_backend *backend;
};

static void on_signal(void *opaque, int fd, uint32_t events)
{
	struct main_loop *m = opaque;
	struct signalfd_siginfo si;
	(void)events;
	if (read(fd, &si, sizeof(si)) == sizeof(si)) {
		fprintf(stderr, "\r\nvmm: %s: stopping the VM\n", strsignal((int)si.ssi_signo));
		if (m->control.vm) {
			vm_request_stop(m->control.vm, (enum vm_status)(128 + si.ssi_signo));
		} else { /* waiting for InstanceStart */
			m->control.quit = true;
			m->control.quit_status = 128 + (int)si.ssi_signo;
		}
	}
}

static void on_stop(void *opaque, int fd, uint32_t events)
{
	uint64_t v;
	(void)opaque;
	(void)events;
	if (read(fd, &v, sizeof(v)) < 0) {
		/* the stop flag, not the counter, is what the loop checks */
	}
}

static void on_console_input(void *opaque, int fd, uint32_t events)
{
	struct main_loop *m = opaque;
	(void)events;
	if (!console_handle_input(&m->console, m->vm))
		event_loop_modify(&m->events, fd, 0); /* the UART is full: wait for on_uart_space */
	if (m->console.eof)
		event_loop_remove(&m->events, fd);
}

static void on_uart_space(void *opaque, int fd, uint32_t events)
{
	struct main_loop *m = opaque;
	uint64_t v;
	(void)events;
	if (read(fd, &v, sizeof(v)) > 0 && !m->console.eof && !m->file_input)
		event_loop_modify(&m->events, m->console.in_fd, EPOLLIN);
}

/* The main thread's part of one run of the VM: events until a stop is requested. */
static void main_loop_run(struct main_loop *m, struct vm *vm)
{
	int space_fd = serial_rx_wait_fd(vm->devices->com1);
	m->vm = vm;
	event_loop_add(&m->events, vm->stop_fd, EPOLLIN, on_stop, m);
	event_loop_add(&m->events, space_fd, EPOLLIN, on_uart_space, m);
	if (!m->console.eof) {
		int ret = event_loop_add(&m->events, m->console.in_fd, EPOLLIN, on_console_input, m);
		m->file_input = ret == -EPERM;
		if (ret < 0 && !m->file_input)
			m->console.eof = true;
	}
	while (!atomic_load(&vm->stopping)) {
		bool poll_file = m->file_input && !m->console.eof;
		event_loop_run_once(&m->events, poll_file ? 10 : -1);
		if (poll_file)
			console_handle_input(&m->console, vm);
	}
	event_loop_remove(&m->events, vm->stop_fd);
	event_loop_remove(&m->events, space_fd);
	event_loop_remove(&m->events, m->console.in_fd);
}

static void noop_signal(int sig)
{
	(void)sig;
}

/* Signals: INT/TERM/HUP arrive through a signalfd in the main loop; SIGUSR1 kicks vCPUs out of
 * the guest (its handler does nothing, the interruption is the point). Blocked here, before any
 * thread exists, so every thread inherits the mask. */
static int setup_signals(void)
{
	struct sigaction sa = { .sa_handler = noop_signal };
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sigdelset(&set, SIGUSR1);
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static int run_machine(const struct vm_config *cfg, const struct cpu_backend *backend,
		       const struct vm_images *img, struct main_loop *m)
{
	for (;;) {
		/* The first VM was created by main_create_vm (for InstanceStart, or the command line). */
		struct vm *vm = m->control.vm ? m->control.vm
			: vm_create(cfg, backend, img, &m->events, console_relay_uart_fd(&m->control.relay));
		if (!vm)
			return VM_STATUS_ERROR;
		m->control.vm = vm;
		if (vm_start_vcpus(vm) == 0)
			main_loop_run(m, vm);
		vm_stop_vcpus(vm);
		console_relay_drain(&m->control.relay);
		if (cfg->stats)
			stats_format(vm, stderr);
		int status = atomic_load(&vm->status);
		vm_destroy(vm);
		m->control.vm = NULL;
		if (status != VM_STATUS_REBOOT || cfg->reboot != REBOOT_RESTART)
			return status;
		fprintf(stderr, "\r\nvmm: guest rebooted: restarting it\n");
	}
}

static int run_with_images(struct vm_config *cfg, struct vm_images *img);

int main(int argc, char **argv)
{
	uint64_t start_ns = trace_now_ns(); /* "process start" for traces and boot marks */
	struct vm_config cfg;
	char err[512];
	if (argc > 1 && client_is_command(argv[1]))
		return client_main(argc - 1, argv + 1);
	int first = argc > 1 && !strcmp(argv[1], "run") ? 2 : 1;
	if (config_parse_args(&cfg, argc - first, argv + first, err, sizeof(err)) < 0) {
		fprintf(stderr, "vmm: %s\n", err);
		return VM_STATUS_USAGE;
	}
	if (cfg.show_help) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (cfg.show_version) {
		printf("vmm %s (backends: kvm%s)\n", VMM_VERSION, &cpu_backend_emu ? ", emu" : "");
		return 0;
	}
	if (cfg.kernel_path && check_memory_size(&cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "vmm: %s\n", err);
		return VM_STATUS_ERROR;
	}
	cfg.start_ns = start_ns;
	if (cfg.trace_path) {
		cfg.trace_fd = open(cfg.trace_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC,
				    0644);
		if (cfg.trace_fd < 0) {
			fprintf(stderr, "vmm: --trace-file %s: %s (give a writable path)\n",
				cfg.trace_path, strerror(errno));
			return VM_STATUS_ERROR;
		}
	}
	cfg.mem_size = (cfg.mem_size + (1u << 20) - 1) & ~((1ull << 20) - 1);
	struct vm_images img = { 0 };
	int status = run_with_images(&cfg, &img);
	free(img.kernel);
	free(img.initrd);
	return status;
}

/* Read the images, pick the backend and create (not start) the VM for m->cfg: for a kernel on
 * the command line, or for InstanceStart. 0, or -1 with one line in err ("" when the reason is
 * already on stderr). */
static int main_create_vm(void *opaque, char *err, size_t err_len)
{
	struct main_loop *m = opaque;
	struct vm_config *cfg = m->cfg;
	struct vm_images *img = m->img;
	err[0] = '\0';
	if (check_memory_size(cfg, err, err_len) < 0)
		return -1;
	free(img->kernel);
	free(img->initrd);
	*img = (struct vm_images){ 0 };
	img->kernel = read_image(cfg->kernel_path, "kernel", &img->kernel_size, err, err_len);
	if (!img->kernel)
		return -1;
	if (cfg->initrd_path) {
		img->initrd = read_image(cfg->initrd_path, "initrd", &img->initrd_size, err, err_len);
		if (!img->initrd)
			return -1;
	}
	m->backend = m->backend ? m->backend : choose_backend(cfg->accel);
	if (!m->backend)
		return -1;
	m->control.vm = vm_create(cfg, m->backend, img, &m->events,
				  console_relay_uart_fd(&m->control.relay));
	return m->control.vm ? 0 : -1; /* vm_create said why on stderr */
}

/* Without a kernel on the command line, serve the API until InstanceStart (or a stop). Returns
 * -1 when a VM is ready to run, else the exit status. */
static int main_wait_for_start(struct main_loop *m)
{
	char err[512];
	if (m->cfg->kernel_path) {
		if (main_create_vm(m, err, sizeof(err)) == 0)
			return -1;
		if (err[0])
			fprintf(stderr, "vmm: %s\n", err);
		return VM_STATUS_ERROR;
	}
	while (!m->control.started && !m->control.quit)
		event_loop_run_once(&m->events, -1);
	return m->control.started ? -1 : m->control.quit_status;
}

/* Everything after the command line: the event loop, the control socket and console, the VM. */
static int run_with_images(struct vm_config *cfg, struct vm_images *img)
{
	struct main_loop m = { .signal_fd = setup_signals(), .cfg = cfg, .img = img };
	if (m.signal_fd < 0 || event_loop_init(&m.events) < 0) {
		fprintf(stderr, "vmm: event loop: %s\n", strerror(errno));
		return VM_STATUS_ERROR;
	}
	char err[512];
	int status = VM_STATUS_ERROR;
	if (control_open(&m.control, cfg, &m.events, main_create_vm, &m, err, sizeof(err)) < 0) {
		fprintf(stderr, "vmm: %s\n", err);
	} else {
		event_loop_add(&m.events, m.signal_fd, EPOLLIN, on_signal, &m);
		event_loop_set_poll_max(&m.events, cfg->poll_max_ns, !cfg->poll_always);
		console_init(&m.console, console_relay_input_fd(&m.control.relay));
		status = main_wait_for_start(&m);
		if (status < 0)
			status = run_machine(cfg, m.backend, img, &m);
		console_restore();
		control_close(&m.control);
	}
	event_loop_destroy(&m.events);
	close(m.signal_fd);
	return status;
}
