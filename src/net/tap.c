/* TAP backend: /dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (and IFF_MULTI_QUEUE for
 * queues=N), so frames carry the virtio-net header and checksum/segmentation offloads pass
 * through the host kernel untouched (Documentation/networking/tuntap.rst).
 *
 * A TAP the monitor creates is not persistent: the kernel deletes it when the last fd closes, so
 * it disappears at exit whatever the exit path (SIGKILL included). With -k it is made persistent
 * at once and stays. A TAP that existed before is attached as it is and never brought up, down or
 * deleted by the monitor. */
#include <errno.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/net.h"

#define TAP_VNET_HDR_SIZE 12 /* struct virtio_net_hdr_v1 (virtio 1.2 §5.1.6) */

struct tap {
	struct net_backend be; /* first */
	char ifname[IFNAMSIZ];
	bool created;
	bool multi_queue;
	bool attached[CONFIG_MAX_NET_QUEUES];
};

/* What kind of interface is `name` in this network namespace? 1 TAP, 0 no such interface,
 * -ENOTTY something else (ethernet, veth, bridge, a TUN in layer-3 mode). */
static int tap_probe_existing(const char *name, char *driver, size_t driver_len)
{
	if (if_nametoindex(name) == 0)
		return 0;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	struct ethtool_drvinfo info = { .cmd = ETHTOOL_GDRVINFO };
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_data = (void *)&info;
	int ret = ioctl(s, SIOCETHTOOL, &ifr);
	close(s);
	snprintf(driver, driver_len, "%s", ret == 0 ? info.driver : "a device of another kind");
	/* tun's get_drvinfo: driver "tun", bus_info "tap" or "tun" (drivers/net/tun.c). */
	if (ret == 0 && !strcmp(info.driver, "tun") && !strcmp(info.bus_info, "tap"))
		return 1;
	if (ret == 0 && !strcmp(info.driver, "tun"))
		snprintf(driver, driver_len, "a TUN (layer 3) device");
	return -ENOTTY;
}

static int tap_set_up(const char *name)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	int ret = ioctl(s, SIOCGIFFLAGS, &ifr);
	if (ret == 0) {
		ifr.ifr_flags |= IFF_UP;
		ret = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	ret = ret < 0 ? -errno : 0;
	close(s);
	return ret;
}

static ssize_t tap_transmit(struct net_backend *be, unsigned queue, const struct iovec *iov,
			    unsigned cnt)
{
	ssize_t n = writev(be->fds[queue], iov, (int)cnt);
	return n < 0 ? -errno : n;
}

static int tap_set_offloads(struct net_backend *be, unsigned flags)
{
	flags &= be->offloads;
	/* One setting per device: any queue's fd sets it. */
	return ioctl(be->fds[0], TUNSETOFFLOAD, (unsigned long)flags) < 0 ? -errno : 0;
}

static int tap_set_active_queues(struct net_backend *be, unsigned active)
{
	struct tap *tap = (struct tap *)be;
	if (!tap->multi_queue)
		return 0;
	if (active < 1)
		active = 1;
	for (unsigned i = 0; i < be->nr_queues; i++) {
		bool want = i < active;
		if (tap->attached[i] == want)
			continue;
		/* Detached queues get no frames from the kernel (TUNSETQUEUE, tuntap.rst §3.4). */
		struct ifreq ifr = { .ifr_flags = want ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE };
		if (ioctl(be->fds[i], TUNSETQUEUE, &ifr) < 0)
			return -errno;
		tap->attached[i] = want;
	}
	return 0;
}

static void tap_destroy(struct net_backend *be)
{
	for (unsigned i = 0; i < be->nr_queues; i++)
		if (be->fds[i] >= 0)
			close(be->fds[i]);
	free(be);
}

static const struct net_backend_ops tap_ops = {
	.transmit = tap_transmit,
	.set_offloads = tap_set_offloads,
	.set_active_queues = tap_set_active_queues,
	.destroy = tap_destroy,
};

/* Which offloads this kernel's TAP takes: UFO only where it still exists. */
static unsigned tap_probe_offloads(int fd)
{
	static const unsigned tries[] = {
		NET_OFFLOAD_CSUM | NET_OFFLOAD_TSO4 | NET_OFFLOAD_TSO6 | NET_OFFLOAD_TSO_ECN |
			NET_OFFLOAD_UFO,
		NET_OFFLOAD_CSUM | NET_OFFLOAD_TSO4 | NET_OFFLOAD_TSO6 | NET_OFFLOAD_TSO_ECN,
		NET_OFFLOAD_CSUM,
	};
	unsigned got = 0;
	for (unsigned i = 0; i < sizeof(tries) / sizeof(tries[0]) && !got; i++)
		if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)tries[i]) == 0)
			got = tries[i];
	if (ioctl(fd, TUNSETOFFLOAD, 0ul) < 0) {
		/* offloads stay as probed: the device sets them again before use */
	}
	return got;
}

struct net_backend *net_tap_open(const struct net_config *nc, const char *default_name, bool keep,
				 char *err, size_t err_len)
{
	struct tap *tap = calloc(1, sizeof(*tap));
	if (!tap) {
		snprintf(err, err_len, "--net tap: out of memory");
		return NULL;
	}
	struct net_backend *be = &tap->be;
	be->ops = &tap_ops;
	be->nr_queues = nc->queues;
	be->vnet_hdr = true;
	for (unsigned i = 0; i < CONFIG_MAX_NET_QUEUES; i++)
		be->fds[i] = -1;
	snprintf(tap->ifname, sizeof(tap->ifname), "%s", nc->ifname[0] ? nc->ifname : default_name);
	const char *what = nc->ifname[0] ? nc->ifname : "";

	char driver[64];
	int kind = tap_probe_existing(tap->ifname, driver, sizeof(driver));
	if (kind < 0) {
		snprintf(err, err_len, "--net tap=%s: %s exists and is not a TAP device but %s (give the name of a TAP, or a new name for the monitor to create)",
			 tap->ifname, tap->ifname, driver);
		goto fail;
	}
	tap->created = kind == 0;
	tap->multi_queue = nc->queues > 1;
	for (unsigned i = 0; i < nc->queues; i++) {
		int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0) {
			int e = errno;
			snprintf(err, err_len, "--net tap%s%s: /dev/net/tun: %s (%s)", *what ? "=" : "",
				 what, strerror(e),
				 e == EACCES || e == EPERM
					 ? "run as root, or make the TAP beforehand with 'ip tuntap add NAME mode tap user USER' and give its name with rw access to /dev/net/tun"
					 : "load the tun module: modprobe tun");
			goto fail;
		}
		be->fds[i] = fd;
		struct ifreq ifr = { 0 };
		snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", tap->ifname);
		ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR |
				(tap->multi_queue ? IFF_MULTI_QUEUE : 0);
		if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
			int e = errno;
			const char *fix =
				e == EPERM ? "the TAP belongs to another user: give it to this one with 'ip tuntap add NAME mode tap user USER', or run as root"
				: e == EBUSY ? "another process has it open: stop it or use another TAP"
				: e == EINVAL && !tap->created
					? "its multi_queue setting differs from queues=: recreate it with or without 'multi_queue'"
					: "check the name and the host's tun driver";
			snprintf(err, err_len, "--net tap=%s: cannot attach: %s (%s)", tap->ifname,
				 strerror(e), fix);
			goto fail;
		}
		tap->attached[i] = true;
		int hdr = TAP_VNET_HDR_SIZE;
		if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
			snprintf(err, err_len, "--net tap=%s: setting the virtio-net header size: %s (use a host kernel with IFF_VNET_HDR)",
				 tap->ifname, strerror(errno));
			goto fail;
		}
	}
	be->offloads = tap_probe_offloads(be->fds[0]);
	if (tap->created && keep && ioctl(be->fds[0], TUNSETPERSIST, 1ul) < 0) {
		snprintf(err, err_len, "--net tap=%s: making it persistent for -k: %s", tap->ifname,
			 strerror(errno));
		goto fail;
	}
	if (tap->created) {
		int ret = tap_set_up(tap->ifname);
		if (ret < 0) {
			snprintf(err, err_len, "--net tap=%s: bringing it up: %s (run as root or with CAP_NET_ADMIN)",
				 tap->ifname, strerror(-ret));
			goto fail;
		}
	}
	snprintf(be->name, sizeof(be->name), "tap %s", tap->ifname);
	return be;
fail:
	if (tap->created && keep && be->fds[0] >= 0 && ioctl(be->fds[0], TUNSETPERSIST, 0ul) < 0) {
		/* best effort: it was made persistent just above */
	}
	tap_destroy(be);
	return NULL;
}
