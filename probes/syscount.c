/*
 * syscount: count every system call a program makes, in all its threads and children.
 *
 *   syscount [--timeout SECONDS] -- PROGRAM ARGS...
 *
 * Runs PROGRAM traced, following every thread, fork, vfork and clone, counts every system call
 * ENTRY by number over the whole process tree, and prints one JSON object on stdout:
 *   {"counts": {"228": 5, ...}, "total": N, "exit_code": int|null, "signal": "SIGSEGV"|null,
 *    "timed_out": bool, "error": text|null, "method": "seccomp-trace"|"ptrace-syscall"}
 * Numbers 0..1023 of the native system call table are counted by number; anything else (another
 * ABI's table: int $0x80 from 64-bit code, x32) is counted under "other".
 *
 * Method. Preferred: the child installs a seccomp filter that returns SECCOMP_RET_TRACE, with the
 * system call number in the return value's data, for every call, so that each call causes exactly
 * one PTRACE_EVENT_SECCOMP stop and the tracer reads the number with one PTRACE_GETEVENTMSG (half
 * the stops of PTRACE_SYSCALL, which matters for a JVM under QEMU's TCG). Where the filter cannot
 * be installed, PTRACE_SYSCALL, counting entry stops only.
 *
 * PROGRAM's stdout goes to /dev/null (only our JSON is on stdout); its stderr is left alone. The
 * tree runs in a process group of its own; --timeout (default 120 s), SIGTERM, SIGINT and SIGHUP
 * kill it, and what was counted so far is still printed. When PROGRAM's main process has exited,
 * descendants still running are killed: nothing is ever left behind.
 *
 * Exit status: 0 when a document was printed (even one that carries an "error"), 2 on usage errors.
 * Written for the oldest userland of the matrix: C99, glibc >= 2.31 or musl (no kernel headers).
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json_string.h"

#ifndef __WALL
#define __WALL 0x40000000
#endif
#ifndef PR_SET_NO_NEW_PRIVS
#define PR_SET_NO_NEW_PRIVS 38
#endif
#ifndef PR_SET_SECCOMP
#define PR_SET_SECCOMP 22
#endif
#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/*
 * Kernel ABI, declared here under our own names: musl-gcc sees no kernel headers, and glibc
 * declares some of these as enum members that #ifndef cannot see.
 */
#define SC_PTRACE_GET_SYSCALL_INFO 0x420e /* Linux 5.3 */
#define SC_SYSCALL_INFO_ENTRY 1
#define SC_SYSCALL_INFO_EXIT 2
#define SC_PTRACE_O_TRACESECCOMP 0x80
#define SC_PTRACE_O_EXITKILL 0x100000
#define SC_PTRACE_EVENT_SECCOMP 7
#define SC_SECCOMP_MODE_FILTER 2
#define SC_SECCOMP_RET_TRACE 0x7ff00000U
#define SC_NT_ARM_SYSTEM_CALL 0x404

struct sc_syscall_info { /* the head of struct ptrace_syscall_info */
	uint8_t op, pad[3];
	uint32_t arch;
	uint64_t instruction_pointer, stack_pointer;
	uint64_t nr; /* entry.nr and seccomp.nr share this offset */
	uint64_t args[6];
	uint32_t ret_data;
	uint32_t pad2;
};
struct sc_sock_filter { uint16_t code; uint8_t jt, jf; uint32_t k; };
struct sc_sock_fprog { unsigned short len; struct sc_sock_filter *filter; };

/*
 * The one architecture-specific part: which system call table is native (AUDIT_ARCH_*), and
 * where a stopped tracee's system call number lives when PTRACE_GET_SYSCALL_INFO is missing.
 */
#if defined(__x86_64__) && !defined(__ILP32__)
#define NATIVE_AUDIT_ARCH 0xc000003eU /* AUDIT_ARCH_X86_64 */
#elif defined(__i386__)
#define NATIVE_AUDIT_ARCH 0x40000003U /* AUDIT_ARCH_I386 */
#elif defined(__aarch64__)
#define NATIVE_AUDIT_ARCH 0xc00000b7U /* AUDIT_ARCH_AARCH64 */
#else
#error "syscount: port me (NATIVE_AUDIT_ARCH and regs_syscall_nr)"
#endif

#define NR_MAX 1024          /* numbers 0..NR_MAX-1 are counted by number */
#define NR_OTHER 0xffff      /* the filter's data for any other number or table */
#define MAX_TRACEES 65536    /* threads traced at once */

/* ------------------------------------------------------------------ state ---------------- */

struct tracee {
	pid_t tid;
	unsigned char fresh;      /* auto-attached, its initial SIGSTOP not seen yet */
	unsigned char in_syscall; /* ptrace-syscall method: between entry and exit stop */
};

/*
 * The table is read by the signal handler (to kill every traced tid), so it changes only with
 * the stopping signals blocked.
 */
static struct tracee *tab;
static volatile sig_atomic_t ntab;
static int cap_tab, last_hit;
static sigset_t guard_set;

static volatile sig_atomic_t tree_pgid;
static volatile sig_atomic_t stop_sig; /* SIGALRM: the timeout; else SIGTERM, SIGINT, SIGHUP */
static volatile sig_atomic_t killing;

static unsigned long long counts[NR_MAX], count_other;

/* Child-to-parent messages on a close-on-exec pipe. */
struct msg { char kind; int err; };
#define MSG_SECCOMP 'S'   /* filter installed */
#define MSG_PTRACE 'P'    /* no filter: err says why (0: the tracer asked for none) */
#define MSG_TRACEME 'T'   /* PTRACE_TRACEME refused */
#define MSG_EXEC 'E'      /* exec failed */
#define MSG_DEVNULL 'N'   /* /dev/null could not be opened */

static void kill_tree(void)
{
	int i;
	killing = 1;
	if (tree_pgid > 0)
		kill(-(pid_t)tree_pgid, SIGKILL);
	/* Members that left the group (setsid, setpgid) are still in the table. */
	for (i = 0; i < ntab; i++)
		kill(tab[i].tid, SIGKILL);
}

static void on_stop_signal(int sig)
{
	int saved = errno;
	if (!stop_sig)
		stop_sig = sig;
	kill_tree();
	errno = saved;
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
	if (ntab >= MAX_TRACEES)
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

/* ------------------------------------------------------- reading the number --------------- */

static void count_nr(unsigned long nr)
{
	if (nr < NR_MAX)
		counts[nr]++;
	else
		count_other++;
}

/* From the tracee's registers, for kernels without PTRACE_GET_SYSCALL_INFO. -1: unreadable. */
static long regs_syscall_nr(pid_t tid)
{
	struct iovec iov;
#if defined(__x86_64__)
	struct user_regs_struct regs;
	iov.iov_base = &regs;
	iov.iov_len = sizeof regs;
	if (ptrace(PTRACE_GETREGSET, tid, (void *)(long)NT_PRSTATUS, &iov) != 0)
		return -1;
	if (iov.iov_len != sizeof regs)
		return NR_OTHER; /* a 32-bit tracee: the i386 table */
	return (long)regs.orig_rax;
#elif defined(__i386__)
	struct user_regs_struct regs;
	iov.iov_base = &regs;
	iov.iov_len = sizeof regs;
	if (ptrace(PTRACE_GETREGSET, tid, (void *)(long)NT_PRSTATUS, &iov) != 0)
		return -1;
	return (long)regs.orig_eax;
#elif defined(__aarch64__)
	int nr;
	iov.iov_base = &nr;
	iov.iov_len = sizeof nr;
	if (ptrace(PTRACE_GETREGSET, tid, (void *)(long)SC_NT_ARM_SYSTEM_CALL, &iov) != 0)
		return -1;
	return nr;
#endif
}

static int have_syscall_info = 1;

/*
 * A syscall-stop of the ptrace-syscall method. PTRACE_GET_SYSCALL_INFO says whether it is an
 * entry and which table; without it we toggle the tracee's in/out state.
 */
static void on_syscall_stop(pid_t tid, struct tracee *t)
{
	long nr;
	if (have_syscall_info) {
		struct sc_syscall_info info;
		memset(&info, 0, sizeof info);
		if (ptrace(SC_PTRACE_GET_SYSCALL_INFO, tid, (void *)sizeof info, &info) > 0) {
			t->in_syscall = info.op == SC_SYSCALL_INFO_ENTRY;
			if (info.op == SC_SYSCALL_INFO_ENTRY)
				count_nr(info.arch == NATIVE_AUDIT_ARCH ? info.nr : NR_OTHER);
			return;
		}
		if (errno == ESRCH)
			return;
		have_syscall_info = 0; /* EIO: older kernel */
	}
	t->in_syscall = !t->in_syscall;
	if (!t->in_syscall)
		return;
	nr = regs_syscall_nr(tid);
	if (nr >= 0)
		count_nr((unsigned long)nr);
}

/* ------------------------------------------------------------- the child ------------------- */

static int msg_fd = -1;

static void send_msg(char kind, int err)
{
	struct msg m;
	memset(&m, 0, sizeof m);
	m.kind = kind;
	m.err = err;
	if (write(msg_fd, &m, sizeof m) != (ssize_t)sizeof m)
		_exit(125);
}

/*
 * Every call traps to the tracer, with the number in SECCOMP_RET_DATA (NR_OTHER for a number
 * >= NR_MAX or another table), so one PTRACE_GETEVENTMSG reads it without knowing any register.
 */
static int install_trace_filter(void)
{
	static struct sc_sock_filter code[] = {
		{0x20, 0, 0, 4},                              /* A = seccomp_data.arch */
		{0x15, 0, 4, NATIVE_AUDIT_ARCH},              /* if A != native goto other */
		{0x20, 0, 0, 0},                              /* A = seccomp_data.nr */
		{0x35, 2, 0, NR_MAX},                         /* if A >= NR_MAX goto other */
		{0x44, 0, 0, SC_SECCOMP_RET_TRACE},           /* A |= SECCOMP_RET_TRACE */
		{0x16, 0, 0, 0},                              /* return A */
		{0x06, 0, 0, SC_SECCOMP_RET_TRACE | NR_OTHER}, /* other: return TRACE | NR_OTHER */
	};
	struct sc_sock_fprog prog = {sizeof code / sizeof code[0], code};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return prctl(PR_SET_SECCOMP, SC_SECCOMP_MODE_FILTER, &prog, 0, 0);
}

/* execvp's search, done before counting starts so that failed candidates are not counted. */
static int resolve(const char *name, char *out)
{
	const char *path = getenv("PATH"), *p, *end;
	int err = ENOENT;
	if (strchr(name, '/')) {
		if (strlen(name) >= PATH_MAX)
			return ENAMETOOLONG;
		strcpy(out, name);
		return 0;
	}
	if (!*name)
		return ENOENT;
	if (!path)
		path = "/bin:/usr/bin";
	for (p = path;; p = end + 1) {
		struct stat st;
		size_t len;
		end = strchr(p, ':');
		if (!end)
			end = p + strlen(p);
		len = (size_t)(end - p);
		if (len + strlen(name) + 2 <= PATH_MAX) {
			if (len == 0)
				snprintf(out, PATH_MAX, "%s", name); /* an empty entry: the current directory */
			else
				snprintf(out, PATH_MAX, "%.*s/%s", (int)len, p, name);
			if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
				if (access(out, X_OK) == 0)
					return 0;
				err = EACCES;
			}
		}
		if (!*end)
			return err;
	}
}

/*
 * kill(), not raise(): some libcs' raise() blocks signals around the kill and restores the mask
 * after the stop, a system call that would be counted as PROGRAM's.
 */
static void stop_self(void)
{
	syscall(SYS_kill, getpid(), SIGSTOP);
}

static void child(char **argv, int want_seccomp_fd, pid_t parent,
		  const struct sigaction *saved, const int *sigs, int nsigs, const sigset_t *mask)
{
	static char path[PATH_MAX];
	char mode = MSG_PTRACE;
	int i, fd, err;

	for (i = 0; i < nsigs; i++)
		sigaction(sigs[i], &saved[i], NULL);
	sigprocmask(SIG_SETMASK, mask, NULL);
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(125); /* syscount died before the line above */

	fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0) {
		send_msg(MSG_DEVNULL, errno);
		_exit(125);
	}
	if (fd != STDOUT_FILENO)
		close(fd);
	if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0) {
		send_msg(MSG_TRACEME, errno);
		_exit(126);
	}
	stop_self(); /* the tracer sets its options, then says whether to use seccomp */
	if (read(want_seccomp_fd, &mode, 1) != 1)
		_exit(125);
	close(want_seccomp_fd);
	if (mode == MSG_SECCOMP && install_trace_filter() == 0)
		send_msg(MSG_SECCOMP, 0);
	else
		send_msg(MSG_PTRACE, mode == MSG_SECCOMP ? errno : 0);
	err = resolve(argv[0], path);
	if (err) {
		send_msg(MSG_EXEC, err);
		_exit(127);
	}
	stop_self(); /* counting starts here: the next call is execve */
	execv(path, argv);
	send_msg(MSG_EXEC, errno);
	_exit(127);
}

/* -------------------------------------------------------------- output -------------------- */


static const char *signal_name(int sig, char *buf, size_t size)
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
	size_t i;
	for (i = 0; i < sizeof names / sizeof names[0]; i++)
		if (names[i].sig == sig)
			return names[i].name;
	if (sig >= SIGRTMIN && sig <= SIGRTMAX)
		snprintf(buf, size, "SIGRTMIN+%d", sig - SIGRTMIN);
	else
		snprintf(buf, size, "SIG%d", sig);
	return buf;
}

static void print_result(int main_status, int have_status, int timed_out, const char *error,
			 const char *method)
{
	unsigned long long total = count_other;
	char buf[32];
	int i, first = 1;

	printf("{\"counts\": {");
	for (i = 0; i < NR_MAX; i++) {
		if (!counts[i])
			continue;
		printf("%s\"%d\": %llu", first ? "" : ", ", i, counts[i]);
		first = 0;
		total += counts[i];
	}
	if (count_other)
		printf("%s\"other\": %llu", first ? "" : ", ", count_other);
	printf("}, \"total\": %llu, \"exit_code\": ", total);
	if (have_status && WIFEXITED(main_status))
		printf("%d", WEXITSTATUS(main_status));
	else
		printf("null");
	printf(", \"signal\": ");
	if (have_status && WIFSIGNALED(main_status))
		json_string(signal_name(WTERMSIG(main_status), buf, sizeof buf));
	else
		printf("null");
	printf(", \"timed_out\": %s, \"error\": ", timed_out ? "true" : "false");
	if (error)
		json_string(error);
	else
		printf("null");
	printf(", \"method\": \"%s\"}\n", method);
	fflush(stdout);
}

/* -------------------------------------------------------------- tracing ------------------- */

static int usage(const char *why)
{
	if (why)
		fprintf(stderr, "syscount: %s\n", why);
	fprintf(stderr, "usage: syscount [--timeout SECONDS] -- PROGRAM ARGS...\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const int stop_sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGALRM};
	enum { NSIGS = sizeof stop_sigs / sizeof stop_sigs[0] };
	struct sigaction saved[NSIGS], sa;
	sigset_t old_mask;
	double timeout = 120;
	char error[512] = "", *end;
	const char *method = "seccomp-trace";
	int i, status = 0, main_status = 0, have_status = 0, exec_seen = 0, counting = 0;
	int use_seccomp = 1, msg_pipe[2], mode_pipe[2];
	long opts;
	pid_t pid, self = getpid();
	struct itimerval deadline;
	struct msg m;

	/*
	 * For the tests: SYSCOUNT_METHOD=ptrace-syscall skips the filter, ptrace-syscall-regs also
	 * PTRACE_GET_SYSCALL_INFO (as on kernels before 5.3).
	 */
	end = getenv("SYSCOUNT_METHOD");
	if (end && strncmp(end, "ptrace-syscall", 14) == 0) {
		use_seccomp = 0;
		have_syscall_info = strcmp(end, "ptrace-syscall-regs") != 0;
	}
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			errno = 0;
			timeout = strtod(argv[++i], &end);
			if (errno || *end || end == argv[i] || !(timeout > 0 && timeout < 1e7))
				return usage("--timeout wants a number of seconds > 0");
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(NULL);
			return 0;
		} else if (argv[i][0] == '-') {
			return usage("unknown option");
		} else {
			break; /* PROGRAM without "--" */
		}
	}
	if (i >= argc)
		return usage("no PROGRAM");
	argv += i;

	/*
	 * The stopping signals stay blocked until the child has its process group, so that the
	 * handler never kills a group that is not the tree's.
	 */
	sigemptyset(&guard_set);
	for (i = 0; i < NSIGS; i++)
		sigaddset(&guard_set, stop_sigs[i]);
	sigprocmask(SIG_BLOCK, &guard_set, &old_mask);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop_signal;
	sigfillset(&sa.sa_mask);
	for (i = 0; i < NSIGS; i++)
		sigaction(stop_sigs[i], &sa, &saved[i]);

	if (pipe2(msg_pipe, O_CLOEXEC) != 0 || pipe2(mode_pipe, O_CLOEXEC) != 0) {
		snprintf(error, sizeof error, "pipe: %s", strerror(errno));
		print_result(0, 0, 0, error, method);
		return 0;
	}
	pid = fork();
	if (pid < 0) {
		snprintf(error, sizeof error, "fork: %s", strerror(errno));
		print_result(0, 0, 0, error, method);
		return 0;
	}
	if (pid == 0) {
		close(msg_pipe[0]);
		close(mode_pipe[1]);
		msg_fd = msg_pipe[1];
		child(argv, mode_pipe[0], self, saved, stop_sigs, NSIGS, &old_mask);
	}
	close(msg_pipe[1]);
	close(mode_pipe[0]);
	fcntl(msg_pipe[0], F_SETFL, O_NONBLOCK);
	setpgid(pid, pid); /* both sides do it: no window in which the child is in our group */
	tree_pgid = pid;
	tab_add(pid, 0);
	memset(&deadline, 0, sizeof deadline);
	deadline.it_value.tv_sec = (time_t)timeout;
	deadline.it_value.tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6);
	if (!deadline.it_value.tv_sec && !deadline.it_value.tv_usec)
		deadline.it_value.tv_usec = 1;
	setitimer(ITIMER_REAL, &deadline, NULL);
	sigprocmask(SIG_SETMASK, &old_mask, NULL);
	for (i = 0; i < NSIGS; i++)
		sigdelset(&old_mask, stop_sigs[i]);
	sigprocmask(SIG_SETMASK, &old_mask, NULL); /* ours, even if the caller blocked them */

	/* The child's first stop: set the options before it installs the filter. */
	while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR)
		;
	if (WIFSTOPPED(status)) {
		char mode = use_seccomp ? MSG_SECCOMP : MSG_PTRACE;
		opts = PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK |
		       PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC | SC_PTRACE_O_EXITKILL;
		if (!use_seccomp ||
		    ptrace(PTRACE_SETOPTIONS, pid, NULL, (void *)(opts | SC_PTRACE_O_TRACESECCOMP)) != 0) {
			use_seccomp = 0;
			mode = MSG_PTRACE;
			if (ptrace(PTRACE_SETOPTIONS, pid, NULL, (void *)opts) != 0)
				snprintf(error, sizeof error, "ptrace refused (is ptrace forbidden here?): "
					 "PTRACE_SETOPTIONS: %s", strerror(errno));
		}
		if (*error || write(mode_pipe[1], &mode, 1) != 1)
			kill_tree();
		ptrace(PTRACE_CONT, pid, NULL, NULL);
	} else {
		have_status = 1;
		main_status = status;
	}
	close(mode_pipe[1]);
	if (!use_seccomp)
		method = "ptrace-syscall";

	for (;;) {
		struct tracee *t;
		int sig = 0, event, fresh;
		pid_t tid = waitpid(-1, &status, __WALL);
		if (tid < 0) {
			if (errno == EINTR)
				continue;
			break; /* ECHILD: every tracee is gone, even those not yet in the table */
		}
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			tab_remove(tid);
			if (tid == pid) {
				have_status = 1;
				main_status = status;
				if (ntab > 0)
					kill_tree(); /* PROGRAM is done: nothing stays behind */
			}
			continue;
		}
		if (!WIFSTOPPED(status))
			continue;
		t = tab_find(tid);
		if (!t) {
			/* A new thread or child whose first stop came before its parent's event. */
			t = tab_add(tid, 1);
			if (!t) {
				if (!*error)
					snprintf(error, sizeof error, "more than %d threads traced at once",
						 MAX_TRACEES);
				kill(tid, SIGKILL);
				kill_tree();
				continue;
			}
		}
		fresh = t->fresh;
		t->fresh = 0;
		event = status >> 16;
		if (event) {
			unsigned long msg = 0;
			if (event == SC_PTRACE_EVENT_SECCOMP) {
				if (counting && ptrace(PTRACE_GETEVENTMSG, tid, NULL, &msg) == 0)
					count_nr(msg & 0xffff);
			} else if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK ||
				   event == PTRACE_EVENT_VFORK) {
				if (ptrace(PTRACE_GETEVENTMSG, tid, NULL, &msg) == 0 && !tab_find((pid_t)msg) &&
				    !tab_add((pid_t)msg, 1)) {
					if (!*error)
						snprintf(error, sizeof error,
							 "more than %d threads traced at once", MAX_TRACEES);
					kill((pid_t)msg, SIGKILL);
					kill_tree();
				}
			} else if (event == PTRACE_EVENT_EXEC) {
				/* A thread other than the leader exec'd: it now has the leader's tid. */
				if (ptrace(PTRACE_GETEVENTMSG, tid, NULL, &msg) == 0 && (pid_t)msg != tid)
					tab_remove((pid_t)msg);
				t = tab_find(tid); /* tab_remove moved entries */
				if (t)
					t->in_syscall = 1; /* the execve's exit stop comes next */
				if (tid == pid)
					exec_seen = 1;
			}
		} else if (WSTOPSIG(status) == (SIGTRAP | 0x80)) {
			if (counting)
				on_syscall_stop(tid, t);
		} else if (fresh && WSTOPSIG(status) == SIGSTOP) {
			/* the SIGSTOP every auto-attached tracee starts with: swallowed */
		} else if (tid == pid && !counting && WSTOPSIG(status) == SIGSTOP) {
			/* The child's second stop: the filter is in or not; the next call is execve. */
			if (read(msg_pipe[0], &m, sizeof m) == (ssize_t)sizeof m && m.kind == MSG_SECCOMP)
				method = "seccomp-trace";
			else
				method = "ptrace-syscall", use_seccomp = 0;
			counting = 1;
		} else {
			siginfo_t si;
			sig = WSTOPSIG(status);
			/* A group-stop has no siginfo: resume it without turning it into a signal. */
			if ((sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) &&
			    ptrace(PTRACE_GETSIGINFO, tid, NULL, &si) != 0)
				sig = 0;
		}
		/* ESRCH: the tracee was killed meanwhile; its death is reported by waitpid. */
		ptrace(use_seccomp ? PTRACE_CONT : PTRACE_SYSCALL, tid, NULL, (void *)(long)sig);
	}

	memset(&deadline, 0, sizeof deadline);
	setitimer(ITIMER_REAL, &deadline, NULL);
	while (read(msg_pipe[0], &m, sizeof m) == (ssize_t)sizeof m) {
		if (m.kind == MSG_PTRACE && !counting)
			method = "ptrace-syscall";
		if (*error)
			continue;
		if (m.kind == MSG_TRACEME)
			snprintf(error, sizeof error, "ptrace refused (is ptrace forbidden here?): "
				 "PTRACE_TRACEME: %s", strerror(m.err));
		else if (m.kind == MSG_EXEC && !exec_seen)
			snprintf(error, sizeof error, "exec failed: %.256s: %s", argv[0], strerror(m.err));
		else if (m.kind == MSG_DEVNULL)
			snprintf(error, sizeof error, "/dev/null: %s", strerror(m.err));
	}
	if (!*error && stop_sig && stop_sig != SIGALRM) {
		char buf[32];
		snprintf(error, sizeof error, "interrupted by %s: the traced tree was killed",
			 signal_name(stop_sig, buf, sizeof buf));
	}
	if (!*error && !exec_seen && have_status)
		snprintf(error, sizeof error, "PROGRAM's process ended before exec");
	/* exit_code and signal describe PROGRAM: none when it never ran. */
	print_result(main_status, have_status && exec_seen, stop_sig == SIGALRM, *error ? error : NULL,
		     method);
	return 0;
}
