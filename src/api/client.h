/* Client subcommands of vmm that talk to running monitors over their control sockets. */
#ifndef VMM_API_CLIENT_H
#define VMM_API_CLIENT_H

#include <stdbool.h>

/* ls, status, stop, kill, pause, resume, console */
bool client_is_command(const char *word);
/* argv[0] is the subcommand. Returns the process exit status (0 ok, 1 failed, 2 bad usage). */
int client_main(int argc, char **argv);

#endif
