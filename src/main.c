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

#include "config.h"
#include "console.h"
#include "devices/devices.h"
#include "vm.h"

/* Defined only when the software CPU is built in (src/cpu/emu/). */
extern const struct cpu_backend cpu_backend_emu __attribute__((weak));

static const char usage_text[] =
	"usage: vmm [run] [OPTIONS] KERNEL [KERNEL-ARGS...]\n"
	"Boot KERNEL (a bzImage, or an ELF vmlinux with a PVH entry) as a virtual machine.\n"
	"\n"
	"  -m, --memory SIZE    guest RAM, e.g. 512M or 2G (default 256M, at least 64M)\n"
	"  -c, --cpus N         number of vCPUs (default 1, or maxcpus=N from KERNEL-ARGS)\n"
	"  -i, --initrd FILE    initial ramdisk\n"
	"      --accel WHICH    kvm, emu (software CPU) or auto (default: kvm where the host\n"
	"                       has VMX/SVM, otherwise emu)\n"
	"      --reboot ACTION  exit (default, status 3) or restart when the guest reboots\n"
	"  -k, --keep           keep what the monitor creates on the host at exit\n"
	"  -h, --help           this help\n"
	"      --version        print the version\n"
	"\n"
	"The console is COM1 on stdin/stdout; Ctrl-A x quits, Ctrl-A h shows the keys.\n"
	"Exit status: 0 guest powered off, 1 error, 2 bad usage, 3 guest rebooted,\n"
	"4 guest panicked, 5 triple fault, 6 internal error, 7 quit from the console,\n"
	"128+N killed by signal N.\n";

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

/* Read a whole file; one line naming the file and the fix on failure. */
static uint8_t *read_image(const char *path, const char *what, size_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "vmm: %s %s: %s (give the path of a readable file)\n", what, path,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	const char *why = S_ISDIR(st.st_mode) ? "is a directory" : !S_ISREG(st.st_mode) ? "is not a regular file"
			  : st.st_size == 0 ? "is empty" : NULL;
	if (why) {
		fprintf(stderr, "vmm: %s %s: %s (give the path of a %s file)\n", what, path, why, what);
		close(fd);
		return NULL;
	}
	uint8_t *buf = malloc((size_t)st.st_size);
	size_t done = 0;
	while (buf && done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
		if (n <= 0) {
			fprintf(stderr, "vmm: %s %s: %s\n", what, path, n < 0 ? strerror(errno) : "short read");
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

static int check_memory_size(const struct vm_config *cfg)
{
	uint64_t host = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
	if (cfg->mem_size < MEMORY_MIN_SIZE) {
		fprintf(stderr, "vmm: --memory: %llu MiB is too small (use at least 64M)\n",
			(unsigned long long)(cfg->mem_size >> 20));
		return -1;
	}
	if (cfg->mem_size > host) {
		fprintf(stderr, "vmm: --memory: %llu MiB is more than the host's %llu MiB (use a smaller -m)\n",
			(unsigned long long)(cfg->mem_size >> 20), (unsigned long long)(host >> 20));
		return -1;
	}
	return 0;
}

struct event_loop {
	int epoll_fd, signal_fd;
	struct console console;
	bool input_polled;
};

static int event_loop_add(struct event_loop *l, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };
	return epoll_ctl(l->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
}

static void event_loop_poll_input(struct event_loop *l, bool on)
{
	if (l->console.eof || on == l->input_polled)
		return;
	struct epoll_event ev = { .events = on ? EPOLLIN : 0, .data.fd = l->console.in_fd };
	epoll_ctl(l->epoll_fd, EPOLL_CTL_MOD, l->console.in_fd, &ev);
	l->input_polled = on;
}

static void event_loop_signal(struct event_loop *l, struct vm *vm)
{
	struct signalfd_siginfo si;
	if (read(l->signal_fd, &si, sizeof(si)) == sizeof(si)) {
		fprintf(stderr, "\r\nvmm: %s: stopping the VM\n", strsignal((int)si.ssi_signo));
		vm_request_stop(vm, (enum vm_status)(128 + si.ssi_signo));
	}
}

/* The main thread's loop: console input, signals, and the stop request. */
static void event_loop_run(struct event_loop *l, struct vm *vm)
{
	int wait_fd = serial_rx_wait_fd(vm->devices->com1);
	event_loop_add(l, vm->stop_fd, EPOLLIN);
	event_loop_add(l, wait_fd, EPOLLIN);
	event_loop_add(l, l->signal_fd, EPOLLIN);
	/* Regular files cannot be polled (EPERM): they are read in the loop until EOF. */
	bool file_input = false;
	if (!l->console.eof) {
		if (event_loop_add(l, l->console.in_fd, EPOLLIN) == 0)
			l->input_polled = true;
		else if (errno == EPERM)
			file_input = true;
		else
			l->console.eof = true;
	}
	while (!atomic_load(&vm->stopping)) {
		struct epoll_event ev[8];
		int n = epoll_wait(l->epoll_fd, ev, 8, file_input && !l->console.eof ? 10 : -1);
		if (file_input && !l->console.eof)
			console_handle_input(&l->console, vm);
		for (int i = 0; i < n; i++) {
			int fd = ev[i].data.fd;
			uint64_t v;
			if (fd == l->signal_fd) {
				event_loop_signal(l, vm);
			} else if (fd == wait_fd) {
				if (read(wait_fd, &v, sizeof(v)) > 0)
					event_loop_poll_input(l, true);
			} else if (fd == l->console.in_fd) {
				if (!console_handle_input(&l->console, vm))
					event_loop_poll_input(l, false);
				if (l->console.eof)
					epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
			}
		}
	}
	epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, vm->stop_fd, NULL);
	epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, wait_fd, NULL);
	epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, l->signal_fd, NULL);
	if (l->input_polled)
		epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, l->console.in_fd, NULL);
	l->input_polled = false;
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
		       const struct vm_images *img, struct event_loop *loop)
{
	for (;;) {
		struct vm *vm = vm_create(cfg, backend, img, STDOUT_FILENO);
		if (!vm)
			return VM_STATUS_ERROR;
		if (vm_start_vcpus(vm) == 0)
			event_loop_run(loop, vm);
		vm_stop_vcpus(vm);
		int status = atomic_load(&vm->status);
		vm_destroy(vm);
		if (status != VM_STATUS_REBOOT || cfg->reboot != REBOOT_RESTART)
			return status;
		fprintf(stderr, "\r\nvmm: guest rebooted: restarting it\n");
	}
}

int main(int argc, char **argv)
{
	struct vm_config cfg;
	char err[512];
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
		printf("vmm %s\n", VMM_VERSION);
		return 0;
	}
	if (check_memory_size(&cfg) < 0)
		return VM_STATUS_ERROR;
	cfg.mem_size = (cfg.mem_size + (1u << 20) - 1) & ~((1ull << 20) - 1);
	struct vm_images img = { 0 };
	img.kernel = read_image(cfg.kernel_path, "kernel", &img.kernel_size);
	if (!img.kernel)
		return VM_STATUS_ERROR;
	if (cfg.initrd_path) {
		img.initrd = read_image(cfg.initrd_path, "initrd", &img.initrd_size);
		if (!img.initrd)
			return VM_STATUS_ERROR;
	}
	const struct cpu_backend *backend = choose_backend(cfg.accel);
	if (!backend)
		return VM_STATUS_ERROR;

	struct event_loop loop = { .signal_fd = setup_signals() };
	loop.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (loop.signal_fd < 0 || loop.epoll_fd < 0) {
		fprintf(stderr, "vmm: event loop: %s\n", strerror(errno));
		return VM_STATUS_ERROR;
	}
	console_init(&loop.console, STDIN_FILENO);
	int status = run_machine(&cfg, backend, &img, &loop);
	console_restore();
	free(img.kernel);
	free(img.initrd);
	return status;
}
