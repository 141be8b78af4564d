/*
 * The tracer (see tracer.h). Kernel ABI is declared here under our own names: musl-gcc sees no
 * kernel headers, and glibc declares some of these as enum members that #ifndef cannot see.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>

#include "tracer.h"

#ifndef __WALL
#define __WALL 0x40000000
#endif
#ifndef PR_SET_NO_NEW_PRIVS
#define PR_SET_NO_NEW_PRIVS 38
#endif
#ifndef PR_SET_SECCOMP
#define PR_SET_SECCOMP 22
#endif
#define TR_PTRACE_GET_SYSCALL_INFO 0x420e /* Linux 5.3 */
#define TR_SYSCALL_INFO_ENTRY 1
#define TR_SYSCALL_INFO_SECCOMP 3
#define TR_PTRACE_O_TRACESECCOMP 0x80
#define TR_PTRACE_O_EXITKILL 0x100000
#define TR_PTRACE_EVENT_SECCOMP 7
#define TR_SECCOMP_MODE_FILTER 2
#define TR_SECCOMP_RET_TRACE 0x7ff00000U

struct tr_syscall_info { /* the head of struct ptrace_syscall_info */
	uint8_t op, pad[3];
	uint32_t arch;
	uint64_t instruction_pointer, stack_pointer;
	uint64_t nr; /* entry.nr and seccomp.nr share this offset */
	uint64_t args[6];
	uint32_t ret_data;
	uint32_t pad2;
};
struct tr_sock_filter { uint16_t code; uint8_t jt, jf; uint32_t k; };
struct tr_sock_fprog { unsigned short len; struct tr_sock_filter *filter; };

/* The native system call table (AUDIT_ARCH_*): the one whose numbers are reported as such. */
#if defined(__x86_64__) && !defined(__ILP32__)
#define NATIVE_AUDIT_ARCH 0xc000003eU /* AUDIT_ARCH_X86_64 */
#elif defined(__i386__)
#define NATIVE_AUDIT_ARCH 0x40000003U /* AUDIT_ARCH_I386 */
#elif defined(__aarch64__)
#define NATIVE_AUDIT_ARCH 0xc00000b7U /* AUDIT_ARCH_AARCH64 */
#else
#error "tracer: port me (NATIVE_AUDIT_ARCH and entry_from_regs)"
#endif

/* ------------------------------------------------------------ the tracees --------------- */

struct tracee {
	pid_t tid;
	unsigned char fresh;      /* auto-attached, its initial SIGSTOP not seen yet */
	unsigned char in_syscall; /* ptrace-syscall method: between entry and exit stop */
};

/* Read by a signal handler (to kill every traced tid): it changes only with guard_set blocked. */
static struct tracee *tab;
static volatile sig_atomic_t ntab;
static int cap_tab, last_hit;
static sigset_t guard_set;
static volatile sig_atomic_t group_to_kill;
static volatile sig_atomic_t killing;

static int have_syscall_info = 1;

void trace_guard_signals(const sigset_t *set) { guard_set = *set; }

void trace_without_syscall_info(void) { have_syscall_info = 0; }

void trace_kill_all(void)
{
	int i;
	killing = 1;
	if (group_to_kill > 0)
		kill(-(pid_t)group_to_kill, SIGKILL);
	/* Members that left the group (setsid, setpgid) are still in the table. */
	for (i = 0; i < ntab; i++)
		kill(tab[i].tid, SIGKILL);
}

static struct tracee *tab_find(pid_t tid)
{
	int i;
	if (last_hit < ntab && tab[last_hit].tid == tid)
		return &tab[last_hit];
	for (i = 0; i < ntab; i++)
		if (tab[i].tid == tid) {
			last_hit = i;
			return &tab[i];
		}
	return NULL;
}

static struct tracee *tab_add(pid_t tid, int fresh)
{
	sigset_t old;
	struct tracee *t = NULL;
	if (ntab >= TRACE_MAX_TRACEES)
		return NULL;
	sigprocmask(SIG_BLOCK, &guard_set, &old);
	if (ntab == cap_tab) {
		int cap = cap_tab ? cap_tab * 2 : 64;
		struct tracee *grown = realloc(tab, (size_t)cap * sizeof *grown);
		if (!grown)
			goto out;
		tab = grown;
		cap_tab = cap;
	}
	t = &tab[ntab];
	t->tid = tid;
	t->fresh = fresh;
	t->in_syscall = 0;
	ntab = ntab + 1;
out:
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (t && killing)
		kill(tid, SIGKILL); /* born while the tree is being killed */
	return t;
}

static void tab_remove(pid_t tid)
{
	sigset_t old;
	struct tracee *t = tab_find(tid);
	if (!t)
		return;
	sigprocmask(SIG_BLOCK, &guard_set, &old);
	*t = tab[ntab - 1];
	ntab = ntab - 1;
	sigprocmask(SIG_SETMASK, &old, NULL);
}

/* A new tracee; when the table is full, the new one and the tree are killed. */
static void adopt(struct trace *t, pid_t tid)
{
	if (tab_find(tid) || tab_add(tid, 1))
		return;
	if (!t->error[0])
		snprintf(t->error, sizeof t->error, "more than %d threads traced at once",
			 TRACE_MAX_TRACEES);
	kill(tid, SIGKILL);
	trace_kill_all();
}

/* ------------------------------------------------------- reading an entry --------------- */

/* From the tracee's registers, for kernels without PTRACE_GET_SYSCALL_INFO. 0: unreadable. */
static int entry_from_regs(pid_t tid, struct trace_entry *e)
{
	struct user_regs_struct regs;
	struct iovec iov;
	iov.iov_base = &regs;
	iov.iov_len = sizeof regs;
	if (ptrace(PTRACE_GETREGSET, tid, (void *)(long)NT_PRSTATUS, &iov) != 0)
		return 0;
#if defined(__x86_64__)
	if (iov.iov_len != sizeof regs) {
		e->nr = TRACE_NR_OTHER; /* a 32-bit tracee: the i386 table */
		e->arg0 = 0;
		return 1;
	}
	e->nr = (unsigned long)regs.orig_rax;
	e->arg0 = (long)regs.rdi;
	e->ip = regs.rip;
#elif defined(__i386__)
	e->nr = (unsigned long)regs.orig_eax;
	e->arg0 = regs.ebx;
	e->ip = (unsigned long)regs.eip;
#elif defined(__aarch64__)
	/* at a syscall-entry stop the number is in x8 and the first argument still in x0 */
	e->nr = (unsigned long)regs.regs[8];
	e->arg0 = (long)regs.regs[0];
	e->ip = regs.pc;
#endif
	e->have_ip = 1;
	return 1;
}

/*
 * A syscall-stop of the ptrace-syscall method: 1 with *e filled when it is an entry.
 * PTRACE_GET_SYSCALL_INFO says whether it is one and which table; without it the tracee's
 * in/out state toggles.
 */
static int syscall_stop_entry(pid_t tid, struct tracee *tr, struct trace_entry *e)
{
	if (have_syscall_info) {
		struct tr_syscall_info info;
		memset(&info, 0, sizeof info);
		if (ptrace(TR_PTRACE_GET_SYSCALL_INFO, tid, (void *)sizeof info, &info) > 0) {
			tr->in_syscall = info.op == TR_SYSCALL_INFO_ENTRY;
			if (!tr->in_syscall)
				return 0;
			e->nr = info.arch == NATIVE_AUDIT_ARCH ? (unsigned long)info.nr : TRACE_NR_OTHER;
			e->arg0 = (long)info.args[0];
			e->ip = info.instruction_pointer;
			e->have_ip = 1;
			return 1;
		}
		if (errno == ESRCH)
			return 0;
		have_syscall_info = 0; /* EIO: older kernel */
	}
	tr->in_syscall = !tr->in_syscall;
	return tr->in_syscall && entry_from_regs(tid, e);
}

/* ------------------------------------------------------------- following --------------- */

void trace_begin(struct trace *t)
{
	t->status = t->have_status = t->exec_seen = 0;
	t->error[0] = 0;
	killing = 0;
	ntab = 0;
	last_hit = 0;
	group_to_kill = t->group;
	tab_add(t->leader, 0);
}

int trace_setup(struct trace *t)
{
	int status = 0;
	long opts = PTRACE_O_TRACESYSGOOD | TR_PTRACE_O_EXITKILL;
	while (waitpid(t->leader, &status, __WALL) < 0 && errno == EINTR)
		;
	if (!WIFSTOPPED(status)) {
		t->status = status;
		t->have_status = 1;
		tab_remove(t->leader);
		return -1;
	}
	if (t->follow)
		opts |= PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK |
			PTRACE_O_TRACEEXEC;
	if (t->method == TRACE_SECCOMP &&
	    ptrace(PTRACE_SETOPTIONS, t->leader, NULL, (void *)(opts | TR_PTRACE_O_TRACESECCOMP)) == 0)
		return 0;
	t->method = TRACE_PTRACE_SYSCALL;
	if (ptrace(PTRACE_SETOPTIONS, t->leader, NULL, (void *)opts) == 0)
		return 0;
	snprintf(t->error, sizeof t->error,
		 "ptrace refused (is ptrace forbidden here?): PTRACE_SETOPTIONS: %s", strerror(errno));
	return -1;
}

/*
 * A seccomp stop read with one PTRACE_GET_SYSCALL_INFO: the filter's data (the number, as
 * PTRACE_GETEVENTMSG gives it) and the instruction pointer, at the cost of the one call the
 * number alone costs. 0: not available (before Linux 5.3).
 */
static int seccomp_entry_with_ip(pid_t tid, struct trace_entry *e)
{
	struct tr_syscall_info info;
	if (!have_syscall_info)
		return 0;
	memset(&info, 0, sizeof info);
	if (ptrace(TR_PTRACE_GET_SYSCALL_INFO, tid, (void *)sizeof info, &info) <= 0 ||
	    info.op != TR_SYSCALL_INFO_SECCOMP)
		return 0;
	e->nr = info.ret_data & 0xffff;
	e->ip = info.instruction_pointer;
	e->have_ip = 1;
	return 1;
}

/* A PTRACE_EVENT stop: a seccomp trap (an entry), a new thread or child, or an exec. */
static void on_event(struct trace *t, pid_t tid, int event)
{
	unsigned long msg = 0;
	struct tracee *tr;
	if (event == TR_PTRACE_EVENT_SECCOMP) {
		struct trace_entry e = {0, 0, 0, 0};
		if (t->want_ip && seccomp_entry_with_ip(tid, &e))
			t->on_entry(t->ctx, &e);
		else if (ptrace(PTRACE_GETEVENTMSG, tid, NULL, &msg) == 0) {
			e.nr = msg & 0xffff;
			if (t->want_ip)
				e.have_ip = trace_read_ip(tid, &e.ip) == 0;
			t->on_entry(t->ctx, &e);
		}
	} else if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK ||
		   event == PTRACE_EVENT_VFORK) {
		if (event == PTRACE_EVENT_CLONE)
			t->clones++;
		else
			t->forks++;
		if (ptrace(PTRACE_GETEVENTMSG, tid, NULL, &msg) == 0)
			adopt(t, (pid_t)msg);
	} else if (event == PTRACE_EVENT_EXEC) {
		/* A thread other than the leader exec'd: it now has the leader's tid. */
		if (ptrace(PTRACE_GETEVENTMSG, tid, NULL, &msg) == 0 && (pid_t)msg != tid)
			tab_remove((pid_t)msg);
		tr = tab_find(tid); /* tab_remove moved entries */
		if (tr)
			tr->in_syscall = 1; /* the execve's exit stop comes next */
		if (tid == t->leader)
			t->exec_seen = 1;
	}
}

/* One stop of a live tracee; returns the signal to deliver when resuming it (0: none). */
static int on_stop(struct trace *t, pid_t tid, struct tracee *tr, int status)
{
	int fresh = tr->fresh, sig = WSTOPSIG(status);
	siginfo_t si;
	tr->fresh = 0;
	if (status >> 16) {
		on_event(t, tid, status >> 16);
		return 0;
	}
	if (sig == (SIGTRAP | 0x80)) {
		struct trace_entry e;
		if (syscall_stop_entry(tid, tr, &e))
			t->on_entry(t->ctx, &e);
		return 0;
	}
	if (fresh && sig == SIGSTOP)
		return 0; /* the SIGSTOP every auto-attached tracee starts with */
	if (tid == t->leader && sig == SIGSTOP && t->on_leader_stop && t->on_leader_stop(t->ctx, t))
		return 0;
	/* A group-stop has no siginfo: resume it without turning it into a signal. */
	if ((sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) &&
	    ptrace(PTRACE_GETSIGINFO, tid, NULL, &si) != 0)
		return 0;
	if (t->on_signal)
		t->on_signal(t->ctx, t, tid, sig);
	return sig; /* a real signal (SIGSEGV, SIGALRM...): passed on */
}

/* The end of a tracee; the leader's ends the trace, and what is left of its tree is killed. */
static void on_end(struct trace *t, pid_t tid, int status)
{
	tab_remove(tid);
	if (tid != t->leader)
		return;
	t->status = status;
	t->have_status = 1;
	if (ntab > 0)
		trace_kill_all();
}

void trace_run(struct trace *t)
{
	int status;
	ptrace(t->method == TRACE_SECCOMP ? PTRACE_CONT : PTRACE_SYSCALL, t->leader, NULL, NULL);
	for (;;) {
		struct tracee *tr;
		int sig;
		pid_t tid = waitpid(t->follow ? -1 : t->leader, &status, __WALL);
		if (tid < 0) {
			if (errno == EINTR)
				continue;
			break; /* ECHILD: every tracee is gone, even those not yet in the table */
		}
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			on_end(t, tid, status);
			continue;
		}
		if (!WIFSTOPPED(status))
			continue;
		tr = tab_find(tid);
		if (!tr) {
			/* A new thread or child whose first stop came before its parent's event. */
			adopt(t, tid);
			if (!(tr = tab_find(tid)))
				continue;
		}
		sig = on_stop(t, tid, tr, status);
		/* ESRCH: the tracee was killed meanwhile; its death is reported by waitpid. */
		ptrace(t->method == TRACE_SECCOMP ? PTRACE_CONT : PTRACE_SYSCALL, tid, NULL,
		       (void *)(long)sig);
	}
}

int trace_read_ip(pid_t tid, unsigned long long *ip)
{
	struct user_regs_struct regs;
	struct iovec iov;
	iov.iov_base = &regs;
	iov.iov_len = sizeof regs;
	if (ptrace(PTRACE_GETREGSET, tid, (void *)(long)NT_PRSTATUS, &iov) != 0)
		return -1;
#if defined(__x86_64__)
	if (iov.iov_len != sizeof regs) {
		uint32_t eip; /* a 32-bit tracee: struct user_regs_struct of i386, eip its 13th word */
		if (iov.iov_len < 13 * sizeof eip)
			return -1;
		memcpy(&eip, (const char *)&regs + 12 * sizeof eip, sizeof eip);
		*ip = eip;
		return 0;
	}
	*ip = regs.rip;
#elif defined(__i386__)
	*ip = (unsigned long)regs.eip;
#elif defined(__aarch64__)
	*ip = regs.pc;
#endif
	return 0;
}

/* ------------------------------------------------------------ the tracee ---------------- */

/*
 * Every call traps to the tracer, with the number in SECCOMP_RET_DATA (TRACE_NR_OTHER for a
 * number >= TRACE_NR_MAX or another table), so one PTRACE_GETEVENTMSG reads it without knowing
 * any register.
 */
int trace_install_seccomp_filter(void)
{
	static struct tr_sock_filter code[] = {
		{0x20, 0, 0, 4},                                      /* A = seccomp_data.arch */
		{0x15, 0, 4, NATIVE_AUDIT_ARCH},                      /* if A != native goto other */
		{0x20, 0, 0, 0},                                      /* A = seccomp_data.nr */
		{0x35, 2, 0, TRACE_NR_MAX},                           /* if A >= NR_MAX goto other */
		{0x44, 0, 0, TR_SECCOMP_RET_TRACE},                   /* A |= SECCOMP_RET_TRACE */
		{0x16, 0, 0, 0},                                      /* return A */
		{0x06, 0, 0, TR_SECCOMP_RET_TRACE | TRACE_NR_OTHER}, /* other: TRACE | NR_OTHER */
	};
	struct tr_sock_fprog prog = {sizeof code / sizeof code[0], code};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return prctl(PR_SET_SECCOMP, TR_SECCOMP_MODE_FILTER, &prog, 0, 0);
}
