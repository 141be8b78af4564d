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
 * The tracing itself is tracer.c's, shared with the helper's count of system calls per call.
 *
 * Exit status: 0 when a document was printed (even one that carries an "error"), 2 on usage errors.
 * Written for the oldest userland of the matrix: C99, glibc >= 2.31 or musl (no kernel headers).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json_string.h"
#include "signal_names.h"
#include "tracer.h"

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* The stopping signals: each kills the traced tree, and what was counted is still printed. */
static const int stop_sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGALRM};
enum { NSIGS = sizeof stop_sigs / sizeof stop_sigs[0] };
static volatile sig_atomic_t stop_sig; /* SIGALRM: the timeout; else SIGTERM, SIGINT, SIGHUP */

static unsigned long long counts[TRACE_NR_MAX], count_other;

/* Child-to-parent messages on a close-on-exec pipe. */
struct msg { char kind; int err; };
#define MSG_SECCOMP 'S'   /* filter installed */
#define MSG_PTRACE 'P'    /* no filter: err says why (0: the tracer asked for none) */
#define MSG_TRACEME 'T'   /* PTRACE_TRACEME refused */
#define MSG_EXEC 'E'      /* exec failed */
#define MSG_DEVNULL 'N'   /* /dev/null could not be opened */

static void on_stop_signal(int sig)
{
	int saved = errno;
	if (!stop_sig)
		stop_sig = sig;
	trace_kill_all();
	errno = saved;
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

/* The caller's signal dispositions and mask back, a group of its own, stdout to /dev/null. */
static void child_environment(pid_t parent, const struct sigaction *saved, const sigset_t *mask)
{
	int i, fd;
	for (i = 0; i < NSIGS; i++)
		sigaction(stop_sigs[i], &saved[i], NULL);
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
}

static void child(char **argv, int want_seccomp_fd, pid_t parent, const struct sigaction *saved,
		  const sigset_t *mask)
{
	static char path[PATH_MAX];
	char mode = MSG_PTRACE;
	int err;

	child_environment(parent, saved, mask);
	if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0) {
		send_msg(MSG_TRACEME, errno);
		_exit(126);
	}
	stop_self(); /* the tracer sets its options, then says whether to use seccomp */
	if (read(want_seccomp_fd, &mode, 1) != 1)
		_exit(125);
	close(want_seccomp_fd);
	if (mode == MSG_SECCOMP && trace_install_seccomp_filter() == 0)
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

/* -------------------------------------------------------------- counting ------------------ */

/* The tracer's side of one run: the tracee's messages, and whether counting has begun. */
struct run {
	int msg_fd;        /* the child's messages, non-blocking */
	int counting;      /* after the child's second stop: everything from its execve on */
	const char *method;
	char error[512];
};

static void count_entry(void *ctx, const struct trace_entry *e)
{
	const struct run *r = ctx;
	if (!r->counting)
		return;
	if (e->nr < TRACE_NR_MAX)
		counts[e->nr]++;
	else
		count_other++;
}

/* The child's second stop: the filter is in or not; the next call is execve. */
static int on_leader_stop(void *ctx, struct trace *t)
{
	struct run *r = ctx;
	struct msg m;
	if (r->counting)
		return 0;
	if (read(r->msg_fd, &m, sizeof m) == (ssize_t)sizeof m && m.kind == MSG_SECCOMP)
		r->method = "seccomp-trace";
	else {
		r->method = "ptrace-syscall";
		t->method = TRACE_PTRACE_SYSCALL;
	}
	r->counting = 1;
	return 1;
}

/* -------------------------------------------------------------- output -------------------- */

static void print_result(int main_status, int have_status, int timed_out, const char *error,
			 const char *method)
{
	unsigned long long total = count_other;
	int i, first = 1;

	printf("{\"counts\": {");
	for (i = 0; i < TRACE_NR_MAX; i++) {
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
	json_string_or_null(have_status && WIFSIGNALED(main_status) ? signal_name(WTERMSIG(main_status))
								      : NULL);
	printf(", \"timed_out\": %s, \"error\": ", timed_out ? "true" : "false");
	json_string_or_null(error);
	printf(", \"method\": \"%s\"}\n", method);
	fflush(stdout);
}

/* -------------------------------------------------------------- main ---------------------- */

static int usage(const char *why)
{
	if (why)
		fprintf(stderr, "syscount: %s\n", why);
	fprintf(stderr, "usage: syscount [--timeout SECONDS] -- PROGRAM ARGS...\n");
	return 2;
}

/* The index of PROGRAM in argv, or -1 after printing the usage (*status: the exit status). */
static int parse_args(int argc, char **argv, double *timeout, int *status)
{
	char *end;
	int i;
	*status = 2;
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			errno = 0;
			*timeout = strtod(argv[++i], &end);
			if (errno || *end || end == argv[i] || !(*timeout > 0 && *timeout < 1e7))
				return usage("--timeout wants a number of seconds > 0"), -1;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(NULL);
			*status = 0;
			return -1;
		} else if (argv[i][0] == '-') {
			return usage("unknown option"), -1;
		} else {
			break; /* PROGRAM without "--" */
		}
	}
	if (i >= argc)
		return usage("no PROGRAM"), -1;
	return i;
}

/*
 * The stopping signals' handler, installed with them blocked; they stay blocked until the child
 * has its process group, so that the handler never kills a group that is not the tree's.
 * *old_mask: the caller's mask; saved: the caller's dispositions (for the child).
 */
static void install_stop_handlers(struct sigaction *saved, sigset_t *old_mask)
{
	struct sigaction sa;
	sigset_t guard;
	int i;
	sigemptyset(&guard);
	for (i = 0; i < NSIGS; i++)
		sigaddset(&guard, stop_sigs[i]);
	trace_guard_signals(&guard);
	sigprocmask(SIG_BLOCK, &guard, old_mask);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop_signal;
	sigfillset(&sa.sa_mask);
	for (i = 0; i < NSIGS; i++)
		sigaction(stop_sigs[i], &sa, &saved[i]);
}

/* The timeout (SIGALRM) armed, then the stopping signals unblocked, even if the caller had
 * blocked them. */
static void arm_deadline(double timeout, const sigset_t *old_mask)
{
	struct itimerval deadline;
	sigset_t mask = *old_mask;
	int i;
	memset(&deadline, 0, sizeof deadline);
	deadline.it_value.tv_sec = (time_t)timeout;
	deadline.it_value.tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6);
	if (!deadline.it_value.tv_sec && !deadline.it_value.tv_usec)
		deadline.it_value.tv_usec = 1;
	setitimer(ITIMER_REAL, &deadline, NULL);
	for (i = 0; i < NSIGS; i++)
		sigdelset(&mask, stop_sigs[i]);
	sigprocmask(SIG_SETMASK, &mask, NULL);
}

static void disarm_deadline(void)
{
	struct itimerval deadline;
	memset(&deadline, 0, sizeof deadline);
	setitimer(ITIMER_REAL, &deadline, NULL);
}

/* The child's first stop: the options set, then the child told whether to install the filter. */
static void start_tracing(struct trace *t, struct run *r, int mode_fd)
{
	char mode;
	if (trace_setup(t) != 0) {
		if (t->error[0])
			snprintf(r->error, sizeof r->error, "%s", t->error);
		else
			return; /* it ended before its first stop: the messages say why */
		trace_kill_all();
		return;
	}
	mode = t->method == TRACE_SECCOMP ? MSG_SECCOMP : MSG_PTRACE;
	if (write(mode_fd, &mode, 1) != 1)
		trace_kill_all();
}

/* What the child said that the trace did not show (a refused PTRACE_TRACEME, a failed exec). */
static void read_child_messages(struct run *r, const struct trace *t, const char *program)
{
	struct msg m;
	while (read(r->msg_fd, &m, sizeof m) == (ssize_t)sizeof m) {
		if (m.kind == MSG_PTRACE && !r->counting)
			r->method = "ptrace-syscall";
		if (r->error[0])
			continue;
		if (m.kind == MSG_TRACEME)
			snprintf(r->error, sizeof r->error, "ptrace refused (is ptrace forbidden here?): "
				 "PTRACE_TRACEME: %s", strerror(m.err));
		else if (m.kind == MSG_EXEC && !t->exec_seen)
			snprintf(r->error, sizeof r->error, "exec failed: %.256s: %s", program, strerror(m.err));
		else if (m.kind == MSG_DEVNULL)
			snprintf(r->error, sizeof r->error, "/dev/null: %s", strerror(m.err));
	}
}

/* An interruption, or a program that never ran: r->error, if still "". */
static void final_error(struct run *r, const struct trace *t)
{
	if (!r->error[0] && stop_sig && stop_sig != SIGALRM)
		snprintf(r->error, sizeof r->error, "interrupted by %s: the traced tree was killed",
			 signal_name(stop_sig));
	if (!r->error[0] && !t->exec_seen && t->have_status)
		snprintf(r->error, sizeof r->error, "PROGRAM's process ended before exec");
}

/* The whole tree, by the seccomp filter unless SYSCOUNT_METHOD says otherwise. */
static void configure_trace(struct trace *t, struct run *r)
{
	const char *method_env = getenv("SYSCOUNT_METHOD");
	memset(t, 0, sizeof *t);
	t->follow = 1;
	t->method = TRACE_SECCOMP;
	t->ctx = r;
	t->on_entry = count_entry;
	t->on_leader_stop = on_leader_stop;
	/* For the tests: SYSCOUNT_METHOD=ptrace-syscall skips the filter, ptrace-syscall-regs also
	 * PTRACE_GET_SYSCALL_INFO (as on kernels before 5.3). */
	if (method_env && strncmp(method_env, "ptrace-syscall", 14) == 0) {
		t->method = TRACE_PTRACE_SYSCALL;
		if (strcmp(method_env, "ptrace-syscall-regs") == 0)
			trace_without_syscall_info();
	}
}

/* No child to trace: the document says why. */
static int fail_before_start(const char *what, struct run *r)
{
	snprintf(r->error, sizeof r->error, "%s: %s", what, strerror(errno));
	print_result(0, 0, 0, r->error, r->method);
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction saved[NSIGS];
	sigset_t old_mask;
	double timeout = 120;
	int first, status, msg_pipe[2], mode_pipe[2];
	struct run r = {-1, 0, "seccomp-trace", ""};
	struct trace t;
	pid_t self = getpid();

	first = parse_args(argc, argv, &timeout, &status);
	if (first < 0)
		return status;
	argv += first;
	configure_trace(&t, &r);
	install_stop_handlers(saved, &old_mask);
	if (pipe2(msg_pipe, O_CLOEXEC) != 0 || pipe2(mode_pipe, O_CLOEXEC) != 0)
		return fail_before_start("pipe", &r);
	if ((t.leader = fork()) < 0)
		return fail_before_start("fork", &r);
	if (t.leader == 0) {
		close(msg_pipe[0]);
		close(mode_pipe[1]);
		msg_fd = msg_pipe[1];
		child(argv, mode_pipe[0], self, saved, &old_mask);
	}
	close(msg_pipe[1]);
	close(mode_pipe[0]);
	r.msg_fd = msg_pipe[0];
	fcntl(r.msg_fd, F_SETFL, O_NONBLOCK);
	setpgid(t.leader, t.leader); /* both sides do it: no window in which the child is in our group */
	t.group = t.leader;
	trace_begin(&t);
	arm_deadline(timeout, &old_mask);

	start_tracing(&t, &r, mode_pipe[1]);
	close(mode_pipe[1]);
	if (t.method != TRACE_SECCOMP)
		r.method = "ptrace-syscall";
	trace_run(&t);
	disarm_deadline();
	if (!r.error[0] && t.error[0]) /* the tracer's own (too many threads) comes first */
		snprintf(r.error, sizeof r.error, "%s", t.error);
	read_child_messages(&r, &t, argv[0]);
	final_error(&r, &t);
	/* exit_code and signal describe PROGRAM: none when it never ran. */
	print_result(t.status, t.have_status && t.exec_seen, stop_sig == SIGALRM,
		     r.error[0] ? r.error : NULL, r.method);
	return 0;
}
