/*
 * launch: run a user's program in an environment and report honestly what happened to it.
 *
 *   launch [--timeout SECONDS] [--output-cap BYTES] [--result PATH | --result-fd N]
 *          [--cwd DIR] -- PROGRAM ARGS...
 *
 * Writes ONE JSON object to the result channel (--result PATH, opened only after the program's
 * side has been forked, or --result-fd N, default 3), never to the program's streams:
 *   {"launcher": "vdsomatrix-launch/1", "program": text, "traced": bool|null,
 *    "method": text|null,
 *    "exec_errno": "ENOENT"|number|null, "exec_errno_number": number|null,
 *    "exit_status": int|null, "signal": "SIGSEGV"|null, "fault_address": "0x0"|null,
 *    "fault_ip": "0x401126"|null, "timed_out": bool, "seconds": float,
 *    "processes": int|null, "threads": int|null, "syscalls": {"59": 1, ..., "other": n},
 *    "syscalls_total": n, "vsyscall_traps": int|null,
 *    "output": {"stdout": {"passed": n, "dropped": n}, "stderr": {...}}, "errors": [text...]}
 * Field names follow vdsomatrix.program.verdict.outcome_from_dict.
 *
 * Three processes, so that neither the program nor its tree can reach the report:
 *   supervisor (this process, a child subreaper): holds the result channel and the deadline,
 *     passes the program's stdout and stderr through to its own, at most --output-cap bytes
 *     each (the rest counted and dropped), and writes the document;
 *   tracer (its child): the program's parent; traces its whole tree with tracer.c (as syscount:
 *     a seccomp RET_TRACE filter, else PTRACE_SYSCALL) and sends its findings up a pipe;
 *   program (the tracer's child): PROGRAM, with fds 0-2 only.
 * The program may signal its parent: the tracer drops every catchable signal that the
 * supervisor did not send. SIGKILL it cannot drop: PTRACE_O_EXITKILL then kills the traced
 * tree, and the supervisor (which the tree cannot name by getppid) reports what it saw.
 * Emulated vsyscalls stop a seccomp tracer only (not PTRACE_SYSCALL), with the ip at the
 * vsyscall entry; the ip costs nothing extra there: one PTRACE_GET_SYSCALL_INFO replaces the
 * PTRACE_GETEVENTMSG that reads the number.
 * Where ptrace is refused or missing (qemu-user has none), PROGRAM runs untraced: exit status
 * and signal only, and "errors" says why.
 *
 * Exit status: 0 when the document was written, 1 when it could not be, 2 on usage errors.
 * C99, glibc >= 2.31 or musl, no kernel headers.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "json_string.h"
#include "signal_names.h"
#include "tracer.h"

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif
#ifndef PR_SET_CHILD_SUBREAPER
#define PR_SET_CHILD_SUBREAPER 36
#endif

#define VSYSCALL_START 0xffffffffff600000ULL
#define VSYSCALL_END 0xffffffffff601000ULL
#define TERM_GRACE 2.0  /* seconds between asking the tracer to stop and killing it */
#define DRAIN_GRACE 2.0 /* seconds to wait for the output pipes' end once the tree is gone */

struct options {
	double timeout;
	unsigned long long output_cap;
	const char *result_path;
	int result_fd;
	const char *cwd;
	char **argv;
};

/* ------------------------------------------------------------ errno names --------------- */

static const char *errno_name(int err)
{
	static const struct { int err; const char *name; } names[] = {
		{EPERM, "EPERM"}, {ENOENT, "ENOENT"}, {EIO, "EIO"}, {E2BIG, "E2BIG"},
		{ENOEXEC, "ENOEXEC"}, {ENOMEM, "ENOMEM"}, {EACCES, "EACCES"}, {EFAULT, "EFAULT"},
		{ENOTDIR, "ENOTDIR"}, {EISDIR, "EISDIR"}, {EINVAL, "EINVAL"}, {ENFILE, "ENFILE"},
		{EMFILE, "EMFILE"}, {ETXTBSY, "ETXTBSY"}, {EAGAIN, "EAGAIN"}, {ENOSYS, "ENOSYS"},
		{ELOOP, "ELOOP"}, {ENAMETOOLONG, "ENAMETOOLONG"}, {ELIBBAD, "ELIBBAD"},
	};
	size_t i;
	for (i = 0; i < sizeof names / sizeof names[0]; i++)
		if (names[i].err == err)
			return names[i].name;
	return NULL;
}

/* ------------------------------------------------------ the tracer's report ------------- */

/* Sent up the report pipe by the tracer: first the program's pid, then this, once. */
struct report {
	int have_status, status; /* the program's wait status */
	int ran;                 /* PROGRAM was exec'd (status is PROGRAM's, not ours) */
	int traced;
	char method[16];         /* "seccomp-trace", "ptrace-syscall" or "" */
	int exec_errno;          /* execve's errno, 0 if it did not fail */
	int fault_sig, have_fault_addr, have_fault_ip;
	unsigned long long fault_addr, fault_ip;
	int vsyscall_observable; /* only a seccomp stop shows an emulated vsyscall */
	unsigned long long vsyscall_traps;
	unsigned long forks, clones;
	unsigned long long counts[TRACE_NR_MAX], count_other;
	char error[512];
};

static void add_error(char *errors, size_t size, const char *text)
{
	size_t used = strlen(errors);
	if (!*text)
		return;
	if (used + strlen(text) + 2 >= size)
		return; /* the first reasons are the ones that matter */
	if (used)
		errors[used++] = '\n'; /* one reason a line: the document lists them */
	strcpy(errors + used, text);
}

/* ------------------------------------------------------------ the program --------------- */

/* Child-to-tracer messages on a close-on-exec pipe (as in syscount). */
struct msg { char kind; int err; };
#define MSG_SECCOMP 'S' /* filter installed */
#define MSG_PTRACE 'P'  /* traced without a filter: err says why (0: none was asked for) */
#define MSG_TRACEME 'T' /* PTRACE_TRACEME refused: running untraced */
#define MSG_CWD 'C'     /* --cwd failed */
#define MSG_EXEC 'E'    /* exec failed */

/*
 * The tracer's signals: the first NSTOP stop the run, and only when the supervisor (or the
 * kernel: a hang-up) sends them; the rest are caught and dropped. The program may signal its
 * parent, the tracer (a daemon's readiness SIGUSR1, a SIGTERM): that must not end the trace.
 * Caught, not ignored, so that the program inherits none of it (handlers reset at exec).
 */
static const int tracer_sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGALRM, SIGQUIT,
				  SIGPIPE, SIGVTALRM, SIGPROF, SIGIO, SIGTSTP, SIGTTIN, SIGTTOU};
enum { NSTOP = 3, NSIGS = sizeof tracer_sigs / sizeof tracer_sigs[0] };
static volatile sig_atomic_t stop_sig;
static pid_t supervisor_pid;
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

/* execvp's search, done before tracing counts, so that failed candidates are not counted. */
static int resolve(const char *name, char *out)
{
	const char *path = getenv("PATH"), *p, *end;
	int err = ENOENT;
	if (strchr(name, '/'))
		return strlen(name) < PATH_MAX ? (strcpy(out, name), 0) : ENAMETOOLONG;
	if (!*name)
		return ENOENT;
	for (p = path ? path : "/bin:/usr/bin";; p = end + 1) {
		struct stat st;
		size_t len;
		end = strchr(p, ':');
		if (!end)
			end = p + strlen(p);
		len = (size_t)(end - p);
		if (len + strlen(name) + 2 <= PATH_MAX) {
			snprintf(out, PATH_MAX, "%.*s%s%s", (int)len, p, len ? "/" : "", name);
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

/* kill(), not raise(): some libcs' raise() changes the signal mask around the kill. */
static void stop_self(void)
{
	syscall(SYS_kill, getpid(), SIGSTOP);
}

/* Dispositions and mask as the launcher found them, a group of its own, no core files. */
static void program_environment(pid_t parent, const struct sigaction *saved, const sigset_t *mask)
{
	struct rlimit no_core = {0, 0};
	int i;
	for (i = 0; i < NSIGS; i++)
		sigaction(tracer_sigs[i], &saved[i], NULL);
	sigprocmask(SIG_SETMASK, mask, NULL);
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(125); /* the tracer died before the line above */
	/* A crash is a result here, not a core file left in the environment (or the host's
	 * core_pattern handler). */
	getrlimit(RLIMIT_CORE, &no_core);
	no_core.rlim_cur = 0;
	setrlimit(RLIMIT_CORE, &no_core);
}

static void program_run(const struct options *o, int mode_fd, pid_t parent,
			const struct sigaction *saved, const sigset_t *mask)
{
	static char path[PATH_MAX];
	char mode = MSG_PTRACE;
	int err, traced = 1;

	program_environment(parent, saved, mask);
	if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0) {
		send_msg(MSG_TRACEME, errno); /* qemu-user, a seccomp profile: run untraced */
		traced = 0;
	}
	if (traced) {
		stop_self(); /* the tracer sets its options, then says whether to use seccomp */
		if (read(mode_fd, &mode, 1) != 1)
			_exit(125);
		if (mode == MSG_SECCOMP && trace_install_seccomp_filter() == 0)
			send_msg(MSG_SECCOMP, 0);
		else
			send_msg(MSG_PTRACE, mode == MSG_SECCOMP ? errno : 0);
	}
	close(mode_fd);
	if (o->cwd && chdir(o->cwd) != 0) {
		send_msg(MSG_CWD, errno);
		_exit(127);
	}
	err = resolve(o->argv[0], path);
	if (err) {
		send_msg(MSG_EXEC, err);
		_exit(127);
	}
	if (traced)
		stop_self(); /* counting starts here: the next call is execve */
	execv(path, o->argv);
	send_msg(MSG_EXEC, errno);
	_exit(127);
}

/* ------------------------------------------------------------ the tracer ---------------- */

struct tracing {
	struct report *rep;
	int msg_fd;   /* the program's messages, non-blocking */
	int counting; /* after the program's second stop: everything from its execve on */
};

static void count_entry(void *ctx, const struct trace_entry *e)
{
	struct tracing *tr = ctx;
	if (!tr->counting)
		return;
	if (e->nr < TRACE_NR_MAX)
		tr->rep->counts[e->nr]++;
	else
		tr->rep->count_other++;
	/* An emulated vsyscall reaches seccomp with the ip at the vsyscall entry itself. */
	if (e->have_ip && e->ip >= VSYSCALL_START && e->ip < VSYSCALL_END)
		tr->rep->vsyscall_traps++;
}

/* The program's second stop: the filter is in or not; the next call is execve. */
static int on_leader_stop(void *ctx, struct trace *t)
{
	struct tracing *tr = ctx;
	struct msg m;
	if (tr->counting)
		return 0;
	if (read(tr->msg_fd, &m, sizeof m) == (ssize_t)sizeof m && m.kind == MSG_SECCOMP)
		snprintf(tr->rep->method, sizeof tr->rep->method, "seccomp-trace");
	else {
		snprintf(tr->rep->method, sizeof tr->rep->method, "ptrace-syscall");
		t->method = TRACE_PTRACE_SYSCALL;
	}
	tr->counting = 1;
	return 1;
}

/* The thread group a tid belongs to, from /proc (0 if unknown). */
static pid_t thread_group(pid_t tid)
{
	char path[64], line[128];
	pid_t tgid = 0;
	FILE *f;
	snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
	if (!(f = fopen(path, "re")))
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid;
}

/*
 * A signal about to be delivered in the program's main process: remembered, so that when that
 * signal ends it, its si_addr and the ip of that stop are the crash's (a handled fault, as in
 * a JVM, is overwritten by the next one).
 */
static void on_signal(void *ctx, struct trace *t, pid_t tid, int sig)
{
	struct report *rep = ((struct tracing *)ctx)->rep;
	siginfo_t si;
	if (tid != t->leader && thread_group(tid) != t->leader)
		return;
	rep->fault_sig = sig;
	rep->have_fault_addr = rep->have_fault_ip = 0;
	if (ptrace(PTRACE_GETSIGINFO, tid, NULL, &si) == 0 && si.si_code > 0 &&
	    (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGTRAP)) {
		rep->fault_addr = (unsigned long long)(unsigned long)si.si_addr;
		rep->have_fault_addr = 1; /* si_code > 0: sent by the kernel, si_addr is meaningful */
	}
	rep->have_fault_ip = trace_read_ip(tid, &rep->fault_ip) == 0;
}

static void on_stop_signal(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	if (si->si_pid != supervisor_pid && si->si_code != SI_KERNEL)
		return; /* the program signalling its parent */
	if (!stop_sig)
		stop_sig = sig;
	trace_kill_all();
	errno = saved;
}

static void on_parent_signal(int sig)
{
}

/* The tracer's signals (the supervisor's SIGTERM at the deadline), the stop ones installed
 * blocked; saved: the caller's dispositions, for the program. */
static void install_stop_handlers(struct sigaction *saved, sigset_t *old_mask)
{
	struct sigaction stop, drop;
	sigset_t guard;
	int i;
	supervisor_pid = getppid();
	sigemptyset(&guard);
	for (i = 0; i < NSTOP; i++)
		sigaddset(&guard, tracer_sigs[i]);
	trace_guard_signals(&guard);
	sigprocmask(SIG_BLOCK, &guard, old_mask);
	memset(&stop, 0, sizeof stop);
	stop.sa_sigaction = on_stop_signal;
	stop.sa_flags = SA_SIGINFO;
	sigfillset(&stop.sa_mask);
	memset(&drop, 0, sizeof drop);
	drop.sa_handler = on_parent_signal;
	drop.sa_flags = SA_RESTART;
	for (i = 0; i < NSIGS; i++)
		sigaction(tracer_sigs[i], i < NSTOP ? &stop : &drop, &saved[i]);
}

/* Every fd but 0-2 and keep closed: the program gets nothing the caller leaked. */
static void close_other_fds(int keep)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int fd;
	if (!d) {
		for (fd = 3; fd < 4096; fd++)
			if (fd != keep)
				close(fd);
		return;
	}
	while ((de = readdir(d)))
		if ((fd = atoi(de->d_name)) > 2 && fd != keep && fd != dirfd(d))
			fcntl(fd, F_SETFD, FD_CLOEXEC); /* closed at exec; closing under readdir is not safe */
	closedir(d);
}

/* The program's first stop: options set, then the program told whether to install the filter. */
static void start_tracing(struct trace *t, struct report *rep, int mode_fd)
{
	char mode;
	if (trace_setup(t) != 0) {
		if (t->error[0]) {
			add_error(rep->error, sizeof rep->error, t->error);
			trace_kill_all();
		}
		return; /* else it ended before its first stop (untraced): its messages say why */
	}
	rep->traced = 1;
	mode = t->method == TRACE_SECCOMP ? MSG_SECCOMP : MSG_PTRACE;
	if (write(mode_fd, &mode, 1) != 1)
		trace_kill_all();
	if (t->method != TRACE_SECCOMP)
		snprintf(rep->method, sizeof rep->method, "ptrace-syscall");
}

/* What the program's side said: untraced, a failed --cwd or exec. */
static void read_program_messages(struct report *rep, int fd, int exec_seen, const char *program)
{
	char text[600];
	struct msg m;
	int failed = 0;
	while (read(fd, &m, sizeof m) == (ssize_t)sizeof m) {
		if (m.kind == MSG_TRACEME) {
			snprintf(text, sizeof text, "not traced: PTRACE_TRACEME refused (%s): exit status "
				 "and signal only, no system calls, fault address or processes",
				 strerror(m.err));
			add_error(rep->error, sizeof rep->error, text);
		} else if (m.kind == MSG_EXEC && !exec_seen) {
			rep->exec_errno = m.err;
			failed = 1;
			snprintf(text, sizeof text, "exec failed: %.256s: %s", program, strerror(m.err));
			add_error(rep->error, sizeof rep->error, text);
		} else if (m.kind == MSG_CWD) {
			failed = 1;
			snprintf(text, sizeof text, "--cwd: %s", strerror(m.err));
			add_error(rep->error, sizeof rep->error, text);
		}
	}
	/* Untraced, no exec event: a status without a failure message is PROGRAM's (the pipe
	 * closed at its exec). */
	rep->ran = exec_seen || (!rep->traced && rep->have_status && !failed);
}

static void configure_trace(struct trace *t, struct tracing *tr)
{
	const char *method_env = getenv("LAUNCH_METHOD");
	memset(t, 0, sizeof *t);
	t->follow = 1;
	t->method = TRACE_SECCOMP;
	t->want_ip = 1; /* one PTRACE_GET_SYSCALL_INFO in place of one PTRACE_GETEVENTMSG */
	t->ctx = tr;
	t->on_entry = count_entry;
	t->on_leader_stop = on_leader_stop;
	t->on_signal = on_signal;
	/* For the tests: LAUNCH_METHOD=ptrace-syscall skips the filter. */
	if (method_env && strcmp(method_env, "ptrace-syscall") == 0)
		t->method = TRACE_PTRACE_SYSCALL;
}

/* All of buf to fd, a signal's interruption resumed (a report is larger than PIPE_BUF). */
static int write_full(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The program followed to its end; then nothing of its tree is left, traced or not. */
static void trace_tree(struct trace *t, struct report *rep, int mode_fd)
{
	start_tracing(t, rep, mode_fd);
	close(mode_fd);
	if (rep->traced)
		trace_run(t);
	kill(-t->group, SIGKILL); /* untraced descendants (no ptrace here) */
	while (!t->have_status) {
		/* ptrace refused after the first stop: the program was killed, not yet reaped */
		if (waitpid(t->leader, &t->status, __WALL) == t->leader)
			t->have_status = 1;
		else if (errno != EINTR)
			break;
	}
}

/* The tracer's whole life: the program forked, traced to its end, the report sent. */
static void tracer_main(const struct options *o, int report_fd)
{
	static struct report rep;
	struct sigaction saved[NSIGS];
	struct tracing tr = {&rep, -1, 0};
	struct trace t;
	sigset_t old_mask;
	int msg_pipe[2], mode_pipe[2];
	pid_t self = getpid();

	close_other_fds(report_fd);
	configure_trace(&t, &tr);
	install_stop_handlers(saved, &old_mask);
	if (pipe2(msg_pipe, O_CLOEXEC) != 0 || pipe2(mode_pipe, O_CLOEXEC) != 0 ||
	    (t.leader = fork()) < 0) {
		snprintf(rep.error, sizeof rep.error, "starting the program: %s", strerror(errno));
		t.leader = 0;
	} else if (t.leader == 0) {
		close(report_fd);
		close(msg_pipe[0]);
		close(mode_pipe[1]);
		msg_fd = msg_pipe[1];
		program_run(o, mode_pipe[0], self, saved, &old_mask);
	}
	if (write_full(report_fd, &t.leader, sizeof t.leader) != 0 || !t.leader)
		_exit(1);
	close(msg_pipe[1]);
	close(mode_pipe[0]);
	tr.msg_fd = msg_pipe[0];
	fcntl(tr.msg_fd, F_SETFL, O_NONBLOCK);
	setpgid(t.leader, t.leader); /* both sides: no window with the program in our group */
	t.group = t.leader;
	trace_begin(&t);
	sigprocmask(SIG_SETMASK, &old_mask, NULL);
	trace_tree(&t, &rep, mode_pipe[1]);
	rep.have_status = t.have_status;
	rep.status = t.status;
	read_program_messages(&rep, tr.msg_fd, t.exec_seen, o->argv[0]);
	rep.forks = t.forks;
	rep.clones = t.clones;
	rep.vsyscall_observable = rep.traced && strcmp(rep.method, "seccomp-trace") == 0;
	if (t.error[0])
		add_error(rep.error, sizeof rep.error, t.error);
	if (write_full(report_fd, &rep, sizeof rep) != 0)
		_exit(1);
	_exit(0);
}

/* ----------------------------------------------------------- the supervisor ------------- */

struct stream {
	int fd;  /* the read end of the program's pipe; -1 at its end */
	int out; /* where it is passed through: 1 or 2 */
	unsigned long long passed, dropped;
	int write_error; /* the launcher's own stream refused: the rest is dropped */
};

struct supervisor {
	struct stream streams[2];
	int report_fd;
	unsigned char report_buf[sizeof(pid_t) + sizeof(struct report)];
	size_t report_len;
	pid_t tracer, program;
	int tracer_status, tracer_done;
	int program_status, have_program_status; /* reaped here: the tracer died first */
	int timed_out, interrupted;
	double started, deadline, kill_at, drain_until;
	char errors[1024];
};

static volatile sig_atomic_t supervisor_stop;

static void on_supervisor_stop(int sig)
{
	if (!supervisor_stop)
		supervisor_stop = sig;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n bytes to the launcher's own stream; how many it took (the rest is dropped). */
static size_t write_all(struct stream *s, const char *buf, size_t n)
{
	size_t done = 0;
	while (done < n && !s->write_error) {
		ssize_t w = write(s->out, buf + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			s->write_error = w < 0 ? errno : EIO;
		else
			done += (size_t)w;
	}
	return done;
}

/* What the pipe holds: passed through up to the cap, the rest counted. */
static void pump(struct stream *s, unsigned long long cap)
{
	static char buf[65536];
	ssize_t n = read(s->fd, buf, sizeof buf);
	unsigned long long room = s->passed < cap ? cap - s->passed : 0;
	size_t pass, written;
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		close(s->fd);
		s->fd = -1;
		return;
	}
	pass = room < (unsigned long long)n ? (size_t)room : (size_t)n;
	written = write_all(s, buf, pass);
	s->passed += written;
	s->dropped += (unsigned long long)n - written;
}

static void read_report(struct supervisor *sv)
{
	ssize_t n = read(sv->report_fd, sv->report_buf + sv->report_len,
			 sizeof sv->report_buf - sv->report_len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		close(sv->report_fd);
		sv->report_fd = -1;
		return;
	}
	sv->report_len += (size_t)n;
	if (!sv->program && sv->report_len >= sizeof(pid_t))
		memcpy(&sv->program, sv->report_buf, sizeof(pid_t));
}

/* Every child that has ended: the tracer, and (a subreaper's) orphans of the tree. */
static void reap(struct supervisor *sv, int options)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, options | __WALL)) > 0) {
		if (pid == sv->tracer) {
			sv->tracer_status = status;
			sv->tracer_done = 1;
		} else if (pid == sv->program) {
			sv->program_status = status;
			sv->have_program_status = 1;
		}
	}
}

/* The deadline and the launcher's own stop signals: the tracer asked, then made, to stop. */
static void enforce_deadline(struct supervisor *sv, double t)
{
	if (!sv->kill_at && (t >= sv->deadline || supervisor_stop)) {
		sv->timed_out = !supervisor_stop;
		sv->interrupted = supervisor_stop;
		kill(sv->tracer, SIGTERM); /* it kills the tree and still reports */
		sv->kill_at = t + TERM_GRACE;
	}
	if (sv->kill_at && t >= sv->kill_at && !sv->tracer_done) {
		kill(sv->tracer, SIGKILL); /* PTRACE_O_EXITKILL takes the traced tree with it */
		if (sv->program > 0)
			kill(-sv->program, SIGKILL);
		sv->kill_at = t + 3600;
	}
	if (sv->tracer_done && !sv->drain_until) {
		sv->drain_until = t + DRAIN_GRACE;
		if (sv->program > 0)
			kill(-sv->program, SIGKILL); /* nothing of the tree outlives the tracer */
	}
}

static int supervising(const struct supervisor *sv, double t)
{
	if (!sv->tracer_done || sv->report_fd >= 0)
		return 1;
	if (sv->streams[0].fd < 0 && sv->streams[1].fd < 0)
		return 0;
	return !sv->drain_until || t < sv->drain_until; /* a writer that escaped the tree: not waited for */
}

static void supervise(struct supervisor *sv, const struct options *o)
{
	double t;
	int i;
	while (supervising(sv, t = now())) {
		struct pollfd p[3];
		int n = 0;
		enforce_deadline(sv, t);
		for (i = 0; i < 2; i++)
			if (sv->streams[i].fd >= 0)
				p[n].fd = sv->streams[i].fd, p[n].events = POLLIN, p[n++].revents = 0;
		if (sv->report_fd >= 0)
			p[n].fd = sv->report_fd, p[n].events = POLLIN, p[n++].revents = 0;
		/* woken by data or a pipe's end; at most 100 ms for the deadline and the reaping */
		if (poll(p, (nfds_t)n, 100) > 0) {
			for (i = 0; i < 2; i++)
				if (sv->streams[i].fd >= 0)
					pump(&sv->streams[i], o->output_cap);
			if (sv->report_fd >= 0)
				read_report(sv);
		}
		reap(sv, WNOHANG);
	}
	if (sv->streams[0].fd >= 0 || sv->streams[1].fd >= 0)
		add_error(sv->errors, sizeof sv->errors, "a process outside the traced tree kept "
			  "the program's output open after the tree had ended: no longer read");
	for (i = 0; i < 2; i++)
		if (sv->streams[i].fd >= 0) {
			close(sv->streams[i].fd);
			sv->streams[i].fd = -1;
		}
}

/* ------------------------------------------------------------- the document ------------- */

static void print_hex_or_null(int have, unsigned long long value)
{
	if (have)
		printf("\"0x%llx\"", value);
	else
		printf("null");
}

/* The errors, one JSON string per line of text. */
static void print_errors(const char *text)
{
	char line[1024];
	const char *p = text;
	int first = 1;
	printf("[");
	while (*p) {
		size_t len = strcspn(p, "\n");
		snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
		printf("%s", first ? "" : ", ");
		json_string(line);
		first = 0;
		p += len + (p[len] == '\n');
	}
	printf("]");
}

static void print_syscalls(const struct report *rep)
{
	unsigned long long total = rep ? rep->count_other : 0;
	int i, first = 1;
	printf("\"syscalls\": {");
	for (i = 0; rep && i < TRACE_NR_MAX; i++) {
		if (!rep->counts[i])
			continue;
		printf("%s\"%d\": %llu", first ? "" : ", ", i, rep->counts[i]);
		first = 0;
		total += rep->counts[i];
	}
	if (rep && rep->count_other)
		printf("%s\"other\": %llu", first ? "" : ", ", rep->count_other);
	printf("}, \"syscalls_total\": %llu, \"vsyscall_traps\": ", total);
	if (rep && rep->vsyscall_observable)
		printf("%llu", rep->vsyscall_traps);
	else
		printf("null");
}

static void print_status(const struct report *rep, int have, int status)
{
	int crashed = have && WIFSIGNALED(status);
	int fault = crashed && rep && rep->fault_sig == WTERMSIG(status);
	printf("\"exit_status\": ");
	if (have && WIFEXITED(status))
		printf("%d", WEXITSTATUS(status));
	else
		printf("null");
	printf(", \"signal\": ");
	json_string_or_null(crashed ? signal_name(WTERMSIG(status)) : NULL);
	printf(", \"fault_address\": ");
	print_hex_or_null(fault && rep->have_fault_addr, fault ? rep->fault_addr : 0);
	printf(", \"fault_ip\": ");
	print_hex_or_null(fault && rep->have_fault_ip, fault ? rep->fault_ip : 0);
}

static void print_exec_errno(const struct report *rep)
{
	const char *name = rep && rep->exec_errno ? errno_name(rep->exec_errno) : NULL;
	printf("\"exec_errno\": ");
	if (name)
		json_string(name);
	else if (rep && rep->exec_errno)
		printf("%d", rep->exec_errno); /* no name known: the number stands for it */
	else
		printf("null");
	printf(", \"exec_errno_number\": ");
	if (rep && rep->exec_errno)
		printf("%d", rep->exec_errno);
	else
		printf("null");
}

static void print_stream(const char *name, const struct stream *s)
{
	printf("\"%s\": {\"passed\": %llu, \"dropped\": %llu}", name, s->passed, s->dropped);
}

/* The one document, on stdout (the result channel by then). */
static void print_document(const struct supervisor *sv, const struct report *rep,
			   const char *program, const char *errors)
{
	int have = rep ? rep->have_status && rep->ran : sv->have_program_status;
	int status = rep ? rep->status : sv->program_status;
	printf("{\"launcher\": \"vdsomatrix-launch/1\", \"program\": ");
	json_string(program);
	/* null: the tracer's report was lost, whether it traced is not known */
	printf(", \"traced\": %s, \"method\": ", !rep ? "null" : rep->traced ? "true" : "false");
	json_string_or_null(rep && rep->method[0] ? rep->method : NULL);
	printf(", ");
	print_exec_errno(rep);
	printf(", ");
	print_status(rep, have, status);
	printf(", \"timed_out\": %s, \"seconds\": %.3f, \"processes\": ",
	       sv->timed_out ? "true" : "false", now() - sv->started);
	if (rep && rep->traced)
		printf("%lu, \"threads\": %lu, ", 1 + rep->forks, rep->clones);
	else
		printf("null, \"threads\": null, ");
	print_syscalls(rep);
	printf(", \"output\": {");
	print_stream("stdout", &sv->streams[0]);
	printf(", ");
	print_stream("stderr", &sv->streams[1]);
	printf("}, \"errors\": ");
	print_errors(errors);
	printf("}\n");
}

/* Everything the document's "errors" says, in order: the tracer's, then the supervisor's. */
static void collect_errors(const struct supervisor *sv, const struct report *rep, char *out,
			   size_t size)
{
	char text[512];
	int i;
	out[0] = 0;
	if (rep)
		add_error(out, size, rep->error);
	if (rep && rep->traced && !rep->vsyscall_observable)
		add_error(out, size, "vsyscall_traps unknown: emulated vsyscalls stop only a seccomp "
			  "tracer, and the seccomp filter could not be installed");
	if (!rep && sv->tracer_done) {
		snprintf(text, sizeof text, "the tracer (the program's parent) ended by %s before it "
			 "could report: killed by the program or its tree? The traced tree was killed "
			 "with it (PTRACE_O_EXITKILL); no system calls, fault address or exec result",
			 WIFSIGNALED(sv->tracer_status) ? signal_name(WTERMSIG(sv->tracer_status))
							 : "exiting");
		add_error(out, size, text);
	}
	if (sv->interrupted) {
		snprintf(text, sizeof text, "interrupted by %s: the program's tree was killed",
			 signal_name(sv->interrupted));
		add_error(out, size, text);
	}
	for (i = 0; i < 2; i++)
		if (sv->streams[i].write_error) {
			snprintf(text, sizeof text, "the launcher's %s refused the program's output: %s",
				 i ? "stderr" : "stdout", strerror(sv->streams[i].write_error));
			add_error(out, size, text);
		}
	add_error(out, size, sv->errors);
}

/* The document to the result channel: stdout is moved there, json_string writes to it. */
static int write_document(const struct supervisor *sv, int result_fd, const char *program)
{
	static struct report rep_copy;
	const struct report *rep = NULL;
	static char errors[2048];
	int saved;
	if (sv->report_len == sizeof sv->report_buf) {
		memcpy(&rep_copy, sv->report_buf + sizeof(pid_t), sizeof rep_copy);
		rep = &rep_copy;
	}
	collect_errors(sv, rep, errors, sizeof errors);
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	if (dup2(result_fd, STDOUT_FILENO) < 0)
		return -1;
	print_document(sv, rep, program, errors);
	if (fflush(stdout) != 0 || ferror(stdout))
		return -1;
	if (saved >= 0)
		dup2(saved, STDOUT_FILENO);
	return 0;
}

/* ------------------------------------------------------------------ main ---------------- */

static int usage(const char *why)
{
	if (why)
		fprintf(stderr, "launch: %s\n", why);
	fprintf(stderr, "usage: launch [--timeout SECONDS] [--output-cap BYTES] "
		"[--result PATH | --result-fd N] [--cwd DIR] -- PROGRAM ARGS...\n");
	return 2;
}

/* One option with its value; 0, else -1 after the usage. */
static int parse_option(struct options *o, const char *name, const char *value)
{
	char *end;
	errno = 0;
	if (strcmp(name, "--timeout") == 0) {
		o->timeout = strtod(value, &end);
		if (errno || *end || end == value || !(o->timeout > 0 && o->timeout < 1e7))
			return usage("--timeout wants a number of seconds > 0"), -1;
	} else if (strcmp(name, "--output-cap") == 0) {
		o->output_cap = strtoull(value, &end, 10);
		if (errno || *end || end == value || value[0] == '-')
			return usage("--output-cap wants a number of bytes"), -1;
	} else if (strcmp(name, "--result-fd") == 0) {
		long fd = strtol(value, &end, 10);
		if (errno || *end || end == value || fd < 3 || fd > INT_MAX)
			return usage("--result-fd wants a descriptor >= 3 (not the program's streams)"), -1;
		o->result_fd = (int)fd;
	} else if (strcmp(name, "--result") == 0) {
		o->result_path = value;
	} else if (strcmp(name, "--cwd") == 0) {
		o->cwd = value;
	} else {
		return usage("unknown option"), -1;
	}
	return 0;
}

/* The index of PROGRAM in argv, or -1 after the usage (*status: the exit status). */
static int parse_args(int argc, char **argv, struct options *o, int *status)
{
	int i;
	*status = 2;
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(NULL);
			*status = 0;
			return -1;
		} else if (argv[i][0] != '-') {
			break; /* PROGRAM without "--" */
		} else if (i + 1 >= argc || parse_option(o, argv[i], argv[i + 1]) != 0) {
			return i + 1 >= argc ? (usage("an option without its value"), -1) : -1;
		}
		i++;
	}
	if (i >= argc)
		return usage("no PROGRAM"), -1;
	if (!o->result_path && fcntl(o->result_fd, F_GETFD) < 0)
		return usage("no result channel: fd 3 is not open (--result PATH or --result-fd N)"), -1;
	return i;
}

/* The supervisor's signals: a stop request kills the tree and still writes the document. */
static void supervisor_signals(void)
{
	struct sigaction sa;
	int i;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_supervisor_stop;
	sigfillset(&sa.sa_mask);
	for (i = 0; i < NSTOP; i++)
		sigaction(tracer_sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN); /* a closed stdout is an error in the document, not our death */
}

/* The tracer's side, forked: the program's stdout and stderr are its pipes' write ends. */
static pid_t fork_tracer(const struct options *o, int out_pipe[2], int err_pipe[2],
			 int rep_pipe[2])
{
	pid_t pid;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid != 0)
		return pid;
	if (dup2(out_pipe[1], STDOUT_FILENO) < 0 || dup2(err_pipe[1], STDERR_FILENO) < 0)
		_exit(1);
	if (!o->result_path)
		close(o->result_fd); /* the program never holds the result channel */
	close(out_pipe[0]);
	close(err_pipe[0]);
	close(rep_pipe[0]);
	tracer_main(o, rep_pipe[1]);
	_exit(1);
}

/* The supervisor's ends of the pipes, non-blocking. */
static void take_pipes(struct supervisor *sv, int out_pipe[2], int err_pipe[2], int rep_pipe[2])
{
	close(out_pipe[1]);
	close(err_pipe[1]);
	close(rep_pipe[1]);
	sv->streams[0].fd = out_pipe[0];
	sv->streams[0].out = STDOUT_FILENO;
	sv->streams[1].fd = err_pipe[0];
	sv->streams[1].out = STDERR_FILENO;
	sv->report_fd = rep_pipe[0];
	fcntl(out_pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(err_pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(rep_pipe[0], F_SETFL, O_NONBLOCK);
}

/* What is left of the tree killed and reaped, for at most a second (untraced escapees). */
static void reap_the_rest(struct supervisor *sv)
{
	int i;
	if (sv->program > 0)
		kill(-sv->program, SIGKILL);
	for (i = 0; i < 100; i++) {
		struct timespec tick = {0, 10 * 1000 * 1000};
		reap(sv, WNOHANG);
		if (waitpid(-1, NULL, WNOHANG | __WALL) < 0 && errno == ECHILD)
			return;
		nanosleep(&tick, NULL);
	}
}

int main(int argc, char **argv)
{
	static struct supervisor sv;
	struct options o = {120, 1 << 20, NULL, 3, NULL, NULL};
	int first, status, out_pipe[2], err_pipe[2], rep_pipe[2], result_fd;

	first = parse_args(argc, argv, &o, &status);
	if (first < 0)
		return status;
	o.argv = argv + first;
	if (!o.result_path)
		fcntl(o.result_fd, F_SETFD, FD_CLOEXEC);
	/* Orphans of the tree (its parent, the tracer, killed) come here to be reaped. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC) || pipe2(rep_pipe, O_CLOEXEC)) {
		perror("launch: pipe");
		return 1;
	}
	sv.started = now();
	sv.deadline = sv.started + o.timeout;
	sv.tracer = fork_tracer(&o, out_pipe, err_pipe, rep_pipe);
	if (sv.tracer < 0) {
		perror("launch: fork");
		return 1;
	}
	take_pipes(&sv, out_pipe, err_pipe, rep_pipe);
	supervisor_signals();
	/* Opened only now: no process of the program's side ever holds it. */
	result_fd = o.result_path ? open(o.result_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
					 0644) : o.result_fd;
	if (result_fd < 0) {
		fprintf(stderr, "launch: %s: %s\n", o.result_path, strerror(errno));
		kill(sv.tracer, SIGKILL);
		reap_the_rest(&sv);
		return 1;
	}
	supervise(&sv, &o);
	reap_the_rest(&sv);
	if (write_document(&sv, result_fd, o.argv[0]) != 0) {
		fprintf(stderr, "launch: writing the result: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
