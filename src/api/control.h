/* What the main thread owns for controlling the VM from outside: the VM's name, the control
 * socket with its API state, and the console relay (pty, log). Lives in main.c's main_loop. */
#ifndef VMM_API_CONTROL_H
#define VMM_API_CONTROL_H

#include <stdbool.h>

#include "api/api.h"
#include "api/console_relay.h"
#include "api/server.h"
#include "config.h"

struct vm;

struct control {
	char name[65];
	bool serving; /* the control socket is open */
	struct api api;
	struct api_server server;
	struct console_relay relay;
	bool keep;

	struct vm *vm; /* the VM running now (set by main.c), or NULL */
	bool started; /* InstanceStart, or a kernel on the command line */
	bool quit; /* stop before any VM ran (signal, PUT /vmm/stop or kill) */
	int quit_status;

	/* main.c: read the images and create (not start) the VM for cfg; sets vm. 0, or -1 with
	 * one line in err. */
	int (*create)(void *opaque, char *err, size_t err_len);
	void *opaque;
	struct vm_config *cfg; /* main.c's; InstanceStart fills it from the API's machine */
	char net_ids[CONFIG_MAX_NICS][API_MAX_ID]; /* PUT /network-interfaces/{id}: cfg->nets[i] */
};

/* Name the VM (--name, or vmm-PID), open the control socket (--api-sock, or the default path;
 * "none" for none) and the console relay. 0, or -1 with one line in err; a default socket that
 * cannot be created is only a warning. */
int control_open(struct control *c, struct vm_config *cfg, struct event_loop *loop,
		 int (*create)(void *opaque, char *err, size_t err_len), void *opaque, char *err,
		 size_t err_len);
/* Remove the socket (unless -k) and close the relay. */
void control_close(struct control *c);

/* Status for the API's kill (PUT /vmm/kill, `vmm kill`). */
#define CONTROL_STATUS_KILLED 8

#endif
