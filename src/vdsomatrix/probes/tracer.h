/*
 * Following a traced process with ptrace and reporting every system-call entry it makes: the one
 * tracer of the probe, used by the helper's count_syscalls (one process, between two marker
 * calls) and by syscount (a whole process tree, every call).
 *
 * The tracee starts the trace itself: PTRACE_TRACEME, then a SIGSTOP to itself (its first stop).
 * The tracer then calls trace_begin (at once, after fork), trace_setup (which waits for that
 * stop) and trace_run (until every tracee has gone).
 */
#ifndef VDSOMATRIX_TRACER_H
#define VDSOMATRIX_TRACER_H

#include <signal.h>
#include <sys/types.h>

#define TRACE_NR_MAX 1024     /* the seccomp filter reports numbers 0..TRACE_NR_MAX-1 as such */
#define TRACE_NR_OTHER 0xffff /* any other number, or another ABI's table (int $0x80, x32) */
#define TRACE_MAX_TRACEES 65536 /* threads traced at once */

struct trace_entry {
	unsigned long nr; /* the native table's number, or TRACE_NR_OTHER */
	long arg0;        /* the first argument (0 when the method does not read it: seccomp) */
	unsigned long long ip; /* the instruction pointer at the entry, when have_ip */
	int have_ip;      /* always with PTRACE_SYSCALL; with seccomp only when t->want_ip */
};

enum trace_method {
	TRACE_PTRACE_SYSCALL, /* PTRACE_SYSCALL: an entry and an exit stop per call */
	TRACE_SECCOMP,        /* the tracee's SECCOMP_RET_TRACE filter: one stop per call */
};

struct trace {
	/* Set by the caller before trace_begin. */
	pid_t leader;
	pid_t group;        /* > 0: the tree's process group, killed with it */
	int follow;         /* every thread, fork, vfork, clone and exec; else the leader alone */
	enum trace_method method; /* seccomp falls back to ptrace-syscall in trace_setup */
	void *ctx;          /* the callbacks' own */
	void (*on_entry)(void *ctx, const struct trace_entry *e);
	/* A SIGSTOP stop of the leader: nonzero swallows it (the caller's own handshake). May
	 * change t->method (the tracee could not install its filter). */
	int (*on_leader_stop)(void *ctx, struct trace *t);
	/* Results. */
	int status, have_status; /* the leader's wait status, once it has ended */
	int exec_seen;           /* the leader exec'd (follow only) */
	char error[160];         /* why the trace failed or was cut short; "" if it did not */
	/* Added for the launcher; zero (memset) keeps the behaviour above unchanged. */
	int want_ip;             /* seccomp method: read each entry's instruction pointer too */
	/* A signal-delivery-stop of any tracee, before the signal is passed on. */
	void (*on_signal)(void *ctx, struct trace *t, pid_t tid, int sig);
	unsigned long forks;     /* fork and vfork events seen (new processes) */
	unsigned long clones;    /* clone events seen (threads, mostly) */
};

/* Starts a trace of t->leader: the table of tracees holds the leader alone. */
void trace_begin(struct trace *t);

/* Waits for the leader's first stop and sets the ptrace options. 0, else -1: the leader ended
 * first (t->have_status) or ptrace was refused (t->error). */
int trace_setup(struct trace *t);

/* Resumes the leader and follows it (and with t->follow its tree) until every tracee has gone;
 * when the leader ends, what is left of its tree is killed. */
void trace_run(struct trace *t);

/* Kills every tracee and the group; safe in a signal handler. */
void trace_kill_all(void);

/* The signals whose handlers call trace_kill_all: blocked while the table of tracees changes. */
void trace_guard_signals(const sigset_t *set);

/* Read each entry from the registers, not with PTRACE_GET_SYSCALL_INFO (as before Linux 5.3). */
void trace_without_syscall_info(void);

/* The instruction pointer of a stopped tracee (a 32-bit tracee of a 64-bit tracer too).
 * 0, else -1. */
int trace_read_ip(pid_t tid, unsigned long long *ip);

/* In the tracee, before exec: a filter that traps every system call to the tracer with its
 * number (TRACE_NR_OTHER for others). 0, else -1 with errno. */
int trace_install_seccomp_filter(void);

#endif
