/* The control API: Firecracker's endpoints where Firecracker has one (same paths, methods, field
 * names and error shape), and vmm's own under /vmm/. Pure request → response logic; what it
 * does to the VM goes through struct api_ops, implemented by main.c. */
#ifndef VMM_API_API_H
#define VMM_API_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/http.h"
#include "api/json.h"
#include "config.h"

#define API_MAX_RESPONSE 32768 /* room for the text statistics of a large VM */
#define API_MAX_ID 64

enum api_state { API_STATE_NOT_STARTED, API_STATE_RUNNING, API_STATE_PAUSED };

struct api_drive {
	char id[API_MAX_ID];
	char path[CONFIG_MAX_PATH];
	bool root, ro;
};

/* The machine as configured through the API before InstanceStart (or from the command line). */
struct api_machine {
	char kernel[CONFIG_MAX_PATH], initrd[CONFIG_MAX_PATH];
	char boot_args[CONFIG_MAX_CMDLINE];
	unsigned vcpus;
	uint64_t mem_mib;
	struct api_drive drives[CONFIG_MAX_DISKS];
	unsigned nr_drives;
};

struct api_ops {
	enum api_state (*state)(void *opaque);
	/* Boot the configured machine. 0, or -1 with one line in err. */
	int (*start)(void *opaque, char *err, size_t err_len);
	int (*pause)(void *opaque, bool pause);
	void (*power_button)(void *opaque);
	void (*kill)(void *opaque);
	/* vmm's own objects, written as JSON object members. */
	void (*info)(void *opaque, struct json_writer *w);
	void (*stats)(void *opaque, struct json_writer *w);
	/* The full statistics as text (what --stats prints), for GET /vmm/stats/text; returns the
	 * length written (NUL-terminated, cut to fit). NULL: not available. */
	size_t (*report)(void *opaque, char *buf, size_t len);
	/* NULL while the tree has no network devices: PUT /network-interfaces is refused. */
	int (*add_network)(void *opaque, const char *id, const char *host_dev, const char *mac,
			   char *err, size_t err_len);
};

struct api {
	struct api_machine machine;
	const char *id; /* the VM's name */
	const struct api_ops *ops;
	void *opaque;
};

struct api_response {
	int status;
	size_t len;
	char body[API_MAX_RESPONSE];
};

void api_handle(struct api *api, const struct http_request *req, struct api_response *resp);
/* Fill resp with a Firecracker-style error: {"fault_message": "..."}. */
void api_error(struct api_response *resp, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The machine's vm_config: cfg's other fields are kept; strings point into m. The kernel
 * command line gets root=/dev/vdX when a drive is the root device (as Firecracker does). */
int api_machine_to_config(const struct api_machine *m, struct vm_config *cfg, char *err,
			  size_t err_len);

#endif
