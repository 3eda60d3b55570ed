/* SPDX-License-Identifier: MIT */
/*
 * firstbyte: run a command with its standard output on a pipe and report, on one line,
 * how long it took from exec to the first byte of output and to its exit, and its peak RSS.
 *
 *   firstbyte [-t SECONDS] [-o FILE] [-e FILE] -- COMMAND [ARG...]
 *
 *   -t SECONDS  kill the command (SIGKILL) after this long; default 60
 *   -o FILE     copy the command's standard output to FILE (default: discard it)
 *   -e FILE     send the command's standard error to FILE (default: /dev/null)
 *
 * Output (standard output, one line, times in microseconds from just before execve):
 *   first_byte_us=N last_byte_us=N exit_us=N maxrss_kb=N status=N bytes=N timed_out=0|1
 * first_byte_us and last_byte_us are -1 when the command printed nothing; status is the exit
 * status, or 128 + the signal number that ended it. firstbyte exits 0 when it could run the
 * command, 2 otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void usage(void)
{
	fprintf(stderr, "usage: firstbyte [-t SECONDS] [-o FILE] [-e FILE] -- COMMAND [ARG...]\n");
	exit(2);
}

/* Write all of buf to fd; output copying is best effort, so errors only stop the copying. */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	double timeout_s = 60;
	const char *out_path = NULL, *err_path = "/dev/null";
	int opt;

	while ((opt = getopt(argc, argv, "+t:o:e:")) != -1) {
		switch (opt) {
		case 't':
			timeout_s = atof(optarg);
			break;
		case 'o':
			out_path = optarg;
			break;
		case 'e':
			err_path = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind >= argc || timeout_s <= 0)
		usage();

	int copy_fd = -1;
	if (out_path) {
		copy_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (copy_fd < 0) {
			fprintf(stderr, "firstbyte: %s: %s\n", out_path, strerror(errno));
			return 2;
		}
	}
	int err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (err_fd < 0) {
		fprintf(stderr, "firstbyte: %s: %s\n", err_path, strerror(errno));
		return 2;
	}

	/* The child stores the time right before execve here, so fork's cost is not counted. */
	int64_t *exec_time = mmap(NULL, sizeof(*exec_time), PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int out_pipe[2], status_pipe[2];
	if (exec_time == MAP_FAILED || pipe2(out_pipe, O_CLOEXEC) < 0 ||
	    pipe2(status_pipe, O_CLOEXEC) < 0) {
		perror("firstbyte: setup");
		return 2;
	}

	pid_t pid = fork();
	if (pid < 0) {
		perror("firstbyte: fork");
		return 2;
	}
	if (pid == 0) {
		int null_fd = open("/dev/null", O_RDONLY);

		if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out_pipe[1], 1) < 0 ||
		    dup2(err_fd, 2) < 0)
			_exit(127);
		*exec_time = monotonic_us();
		execvp(argv[optind], argv + optind);
		/* The status pipe is close-on-exec: bytes on it mean execvp failed. */
		int err = errno;
		(void)!write(status_pipe[1], &err, sizeof(err));
		_exit(127);
	}
	close(out_pipe[1]);
	close(status_pipe[1]);
	close(err_fd);

	int exec_errno = 0;
	if (read(status_pipe[0], &exec_errno, sizeof(exec_errno)) == sizeof(exec_errno)) {
		fprintf(stderr, "firstbyte: %s: %s\n", argv[optind], strerror(exec_errno));
		waitpid(pid, NULL, 0);
		return 2;
	}
	close(status_pipe[0]);

	int64_t start = *exec_time;
	int64_t deadline = start + (int64_t)(timeout_s * 1e6);
	int64_t first_byte = -1, last_byte = -1;
	long long bytes = 0;
	int timed_out = 0;
	char buf[65536];

	for (;;) {
		int64_t now = monotonic_us();
		if (now >= deadline) {
			timed_out = 1;
			kill(pid, SIGKILL);
			break;
		}
		struct pollfd pfd = { .fd = out_pipe[0], .events = POLLIN };
		int wait_ms = (int)((deadline - now + 999) / 1000);
		int ready = poll(&pfd, 1, wait_ms);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready < 0) {
			perror("firstbyte: poll");
			kill(pid, SIGKILL);
			break;
		}
		if (ready == 0)
			continue;
		ssize_t n = read(out_pipe[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* end of output: the command exited or closed its stdout */
		last_byte = monotonic_us();
		if (first_byte < 0)
			first_byte = last_byte;
		bytes += n;
		if (copy_fd >= 0 && write_all(copy_fd, buf, (size_t)n) < 0) {
			close(copy_fd);
			copy_fd = -1;
		}
	}

	/* A command that closed its stdout early is still given until the deadline to exit. */
	int wstatus = 0;
	struct rusage usage;
	for (;;) {
		pid_t done = wait4(pid, &wstatus, timed_out ? 0 : WNOHANG, &usage);
		if (done == pid)
			break;
		if (done < 0 && errno != EINTR) {
			perror("firstbyte: wait4");
			return 2;
		}
		if (done == 0) {
			if (monotonic_us() >= deadline) {
				timed_out = 1;
				kill(pid, SIGKILL);
			} else {
				usleep(1000);
			}
		}
	}
	int64_t exited = monotonic_us();
	int status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);

	printf("first_byte_us=%lld last_byte_us=%lld exit_us=%lld maxrss_kb=%ld status=%d bytes=%lld "
	       "timed_out=%d\n",
	       first_byte < 0 ? -1LL : (long long)(first_byte - start),
	       last_byte < 0 ? -1LL : (long long)(last_byte - start), (long long)(exited - start),
	       usage.ru_maxrss, status, bytes, timed_out);
	return 0;
}
