/* Signal names: one table for every program of the probe (the helper's crashed rows and
 * vsyscall read, the correctness checks' error paths, syscount's result). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>

#include "signal_names.h"

const char *signal_name(int sig)
{
	static const struct { int sig; const char *name; } names[] = {
		{SIGHUP, "SIGHUP"}, {SIGINT, "SIGINT"}, {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},
		{SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"}, {SIGFPE, "SIGFPE"},
		{SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
		{SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"},
#ifdef SIGSTKFLT
		{SIGSTKFLT, "SIGSTKFLT"},
#endif
		{SIGCHLD, "SIGCHLD"}, {SIGCONT, "SIGCONT"}, {SIGSTOP, "SIGSTOP"}, {SIGTSTP, "SIGTSTP"},
		{SIGTTIN, "SIGTTIN"}, {SIGTTOU, "SIGTTOU"}, {SIGURG, "SIGURG"}, {SIGXCPU, "SIGXCPU"},
		{SIGXFSZ, "SIGXFSZ"}, {SIGVTALRM, "SIGVTALRM"}, {SIGPROF, "SIGPROF"},
		{SIGWINCH, "SIGWINCH"}, {SIGIO, "SIGIO"},
#ifdef SIGPWR
		{SIGPWR, "SIGPWR"},
#endif
		{SIGSYS, "SIGSYS"},
	};
	static char unnamed[24];
	size_t i;
	for (i = 0; i < sizeof names / sizeof names[0]; i++)
		if (names[i].sig == sig)
			return names[i].name;
	if (sig >= SIGRTMIN && sig <= SIGRTMAX)
		snprintf(unnamed, sizeof unnamed, "SIGRTMIN+%d", sig - SIGRTMIN);
	else
		snprintf(unnamed, sizeof unnamed, "SIG%d", sig);
	return unnamed;
}
