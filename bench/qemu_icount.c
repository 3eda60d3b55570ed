/* qemu_icount: a QEMU TCG plugin that counts the guest's instructions, so that bench/disk can
 * put QEMU's guest work per request next to vmm's (`vmm stat`'s instruction counter).
 *
 *   qemu-system-x86_64 ... -plugin bench/build/disk/qemu_icount.so,out=FILE
 *
 * Every translated block adds its instruction count to one counter when it runs (an inline add
 * the TCG code does itself, no call); a thread writes the total to FILE every 20 ms (written to
 * FILE.tmp, then renamed: a reader never sees half a number). Blocks left early by an exception
 * count in full: the total is an upper bound, close for kernel and user code that rarely faults.
 * The add is not atomic: exact with one vCPU (bench/disk's guest), not with several.
 *
 * Debian ships QEMU's plugin support but not its header (qemu-plugin.h): the few declarations
 * used are written out here, as Debian 12's QEMU (7.2, plugin API version 1) has them. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;
enum qemu_plugin_op {
	QEMU_PLUGIN_INLINE_ADD_U64
};
typedef void (*qemu_plugin_tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_tb_trans_cb cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
					      void *ptr, uint64_t imm);

#define EXPORT __attribute__((visibility("default")))
#define WRITE_INTERVAL_US 20000

EXPORT int qemu_plugin_version = 1;

static uint64_t instructions;
static char out_path[4096], tmp_path[4100];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	(void)id;
	qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &instructions,
						 qemu_plugin_tb_n_insns(tb));
}

static void *writer(void *arg)
{
	(void)arg;
	for (;;) {
		usleep(WRITE_INTERVAL_US);
		FILE *f = fopen(tmp_path, "w");
		if (!f)
			continue;
		fprintf(f, "%llu\n",
			(unsigned long long)__atomic_load_n(&instructions, __ATOMIC_RELAXED));
		if (fclose(f) == 0)
			rename(tmp_path, out_path);
	}
	return NULL;
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info, int argc,
			       char **argv)
{
	(void)info;
	for (int i = 0; i < argc; i++)
		if (!strncmp(argv[i], "out=", 4))
			snprintf(out_path, sizeof(out_path), "%s", argv[i] + 4);
	if (!out_path[0]) {
		fprintf(stderr,
			"qemu_icount: give the output file: -plugin qemu_icount.so,out=FILE\n");
		return -1;
	}
	snprintf(tmp_path, sizeof(tmp_path), "%s.tmp", out_path);
	qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
	pthread_t t;
	if (pthread_create(&t, NULL, writer, NULL) != 0)
		return -1;
	pthread_detach(t);
	return 0;
}
