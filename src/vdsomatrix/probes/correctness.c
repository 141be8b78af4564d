/*
 * Correctness of the fast paths (issue 16): does the vDSO give the answers the system call gives,
 * and does it fail the way the system call fails?
 *
 *   agreement   per clock, gettimeofday and time: readings through the system call, the vDSO and
 *               libc, interleaved (syscall, vDSO, syscall, libc, syscall, ...); every reading of a
 *               monotonic clock is checked to be no earlier than the one before it, whatever its
 *               path, and every reading of a settable clock to lie between the system calls that
 *               bracket it within the clock's resolution. clock_getres through each path;
 *               time() against gettimeofday(); getcpu() pinned to each CPU of the affinity set.
 *   cross_cpu   one thread per CPU reads CLOCK_MONOTONIC through the vDSO and publishes the
 *               latest reading; a reading earlier than one published before it is a failure
 *               (unsynchronised TSCs).
 *   error paths an invalid clock id, NULL, unmapped and read-only result pointers, another
 *               process's CPU-time clock, through each path in a child process: what it returns
 *               (value, errno) or the signal that kills it.
 * The checks are bounded in time, not in count (a guest under TCG is ~10x slower), and print one
 * JSON object on stdout. Portable C: the system call goes through libc's syscall(2) (no
 * assembly); a vDSO symbol the architecture lacks is a path "not offered", not an error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "correctness.h"
#include "json_string.h"
#include "signal_names.h"
#include "vdso_elf.h"

/*
 * The kernel's own structures for the vDSO and the raw system call: `long` fields are the
 * kernel's "old" layout on every ABI built here (32-bit on i386, 64-bit on x86_64 and aarch64),
 * whatever time_t the libc chose (musl on i386 has a 64-bit one). libc's calls get libc's types.
 */
struct k_timespec {
	long tv_sec, tv_nsec;
};
struct k_timeval {
	long tv_sec, tv_usec;
};
typedef int (*cgt_fn)(clockid_t, struct k_timespec *);
typedef int (*gtod_fn)(struct k_timeval *, void *);
typedef long (*time_fn)(long *);
typedef long (*getcpu_fn)(unsigned *, unsigned *, void *);

/* System call numbers of the calls whose layout is the `long` one above. On i386 the libc
 * headers' SYS_clock_gettime may mean the 64-bit-time variant (musl), so the numbers are the
 * 32-bit table's own. aarch64 has no time system call (NR_TIME undefined: "not offered"). */
#if defined(__i386__)
#define NR_CLOCK_GETTIME 265
#define NR_CLOCK_GETRES 266
#define NR_GETTIMEOFDAY 78
#define NR_TIME 13
#else
#define NR_CLOCK_GETTIME SYS_clock_gettime
#define NR_CLOCK_GETRES SYS_clock_getres
#define NR_GETTIMEOFDAY SYS_gettimeofday
#if defined(SYS_time)
#define NR_TIME SYS_time
#endif
#endif
#define NR_GETCPU SYS_getcpu
#define VDSO_GETRES VDSO_SYM("clock_getres")
/* glibc has getcpu() since 2.29; other libcs: sched_getcpu() only, which takes no pointer. */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 29))
#define HAVE_LIBC_GETCPU 1
#endif

#define NS 1000000000LL
#define MAX_CPUS 64        /* CPUs checked (and listed) at most */
#define CHILD_DEADLINE_S 5 /* an error-path child still running by then is killed: "timeout" */

static cgt_fn v_cgt, v_getres;
static gtod_fn v_gtod;
static time_fn v_time;
static getcpu_fn v_getcpu;
static const char *v_absent;
static char no_symbol[5][120]; /* why a vDSO path is missing, per call (see vdso_missing) */

enum { P_SYSCALL, P_VDSO, P_LIBC };
static const char *const path_names[] = {"syscall", "vdso", "libc"};
enum { C_CGT, C_GETRES, C_GTOD, C_TIME, C_GETCPU };
static const char *const call_names[] = {"clock_gettime", "clock_getres", "gettimeofday", "time",
					 "getcpu"};
static const char *vdso_missing(int call)
{
	if (v_absent)
		return v_absent;
	if ((call == C_CGT && v_cgt) || (call == C_GETRES && v_getres) || (call == C_GTOD && v_gtod) ||
	    (call == C_TIME && v_time) || (call == C_GETCPU && v_getcpu))
		return NULL;
	if (!no_symbol[call][0])
		snprintf(no_symbol[call], sizeof no_symbol[call], "this vDSO exports no %s",
			 call == C_GETRES ? VDSO_GETRES : call_names[call]);
	return no_symbol[call];
}

static int64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * NS + t.tv_nsec;
}

static const char *errno_name(int e)
{
	static char other[16];
	switch (e) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ESRCH: return "ESRCH";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EINVAL: return "EINVAL";
	case ENOSYS: return "ENOSYS";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	default:
		snprintf(other, sizeof other, "E%d", e);
		return other;
	}
}

/* ------------------------------------------------------------- one check ------------------ */

struct check {
	const char *kind; /* agreement, resolution, time_vs_gettimeofday, getcpu, cross_cpu */
	char name[80];
	char paths[40];
	const char *status; /* NULL: "pass" or "fail" from the counts */
	char reason[240];
	long long made, failed, rounds;
	char first[400]; /* the first offending readings */
};

static void check_start(struct check *c, const char *kind, const char *name)
{
	memset(c, 0, sizeof *c);
	c->kind = kind;
	snprintf(c->name, sizeof c->name, "%s", name);
}

static void add_reason(struct check *c, const char *fmt, ...)
{
	size_t len = strlen(c->reason);
	va_list ap;
	if (len && len + 2 < sizeof c->reason) {
		strcpy(c->reason + len, "; ");
		len += 2;
	}
	va_start(ap, fmt);
	vsnprintf(c->reason + len, sizeof c->reason - len, fmt, ap);
	va_end(ap);
}

/* One check made; the first failure's readings are kept as evidence. */
static void made(struct check *c, int ok, const char *fmt, ...)
{
	va_list ap;
	c->made++;
	if (ok)
		return;
	if (c->failed++)
		return;
	va_start(ap, fmt);
	vsnprintf(c->first, sizeof c->first, fmt, ap);
	va_end(ap);
	fprintf(stderr, "correctness: FAILED %s: %s\n", c->name, c->first);
}

static int first_item;

static void emit_check(const struct check *c)
{
	const char *status = c->status ? c->status : c->failed ? "fail" : "pass";
	printf("%s\n    {\"check\": ", first_item ? "" : ",");
	first_item = 0;
	json_string(c->name);
	printf(", \"kind\": \"%s\", \"status\": \"%s\", \"paths\": ", c->kind, status);
	json_string(c->paths);
	printf(", \"made\": %lld, \"failed\": %lld, \"rounds\": %lld, \"reason\": ", c->made, c->failed,
	       c->rounds);
	if (c->reason[0])
		json_string(c->reason);
	else
		printf("null");
	printf(", \"first_failure\": ");
	if (c->first[0])
		json_string(c->first);
	else
		printf("null");
	printf("}");
	fflush(stdout);
}

/* "12.000000345": a clock reading in seconds, exact. */
static const char *secs(int64_t ns, char *buf, size_t size)
{
	const char *sign = ns < 0 ? "-" : "";
	uint64_t a = ns < 0 ? (uint64_t)-ns : (uint64_t)ns;
	snprintf(buf, size, "%s%llu.%09llu", sign, (unsigned long long)(a / NS),
		 (unsigned long long)(a % NS));
	return buf;
}

/* ------------------------------------------------------------ the readings ----------------- */

static int valid_ts(long sec, long nsec) { return sec >= 0 && nsec >= 0 && nsec < NS; }

/* A clock through one path: 0 and *ns, or the errno (the vDSO's negative return, made positive). */
static int read_clock(int path, clockid_t id, int64_t *ns)
{
	struct k_timespec k;
	struct timespec t;
	long r;
	switch (path) {
	case P_SYSCALL:
		if (syscall(NR_CLOCK_GETTIME, (long)id, &k) != 0)
			return errno ? errno : -1;
		break;
	case P_VDSO:
		r = v_cgt(id, &k);
		if (r != 0)
			return r < 0 ? (int)-r : -1;
		break;
	default:
		if (clock_gettime(id, &t) != 0)
			return errno ? errno : -1;
		k.tv_sec = (long)t.tv_sec;
		k.tv_nsec = t.tv_nsec;
		if (t.tv_sec != (time_t)k.tv_sec)
			return -1;
	}
	if (!valid_ts(k.tv_sec, k.tv_nsec))
		return -2;
	*ns = (int64_t)k.tv_sec * NS + k.tv_nsec;
	return 0;
}

static int read_res(int path, clockid_t id, int64_t *ns)
{
	struct k_timespec k;
	struct timespec t;
	long r;
	switch (path) {
	case P_SYSCALL:
		if (syscall(NR_CLOCK_GETRES, (long)id, &k) != 0)
			return errno ? errno : -1;
		break;
	case P_VDSO:
		r = v_getres(id, &k);
		if (r != 0)
			return r < 0 ? (int)-r : -1;
		break;
	default:
		if (clock_getres(id, &t) != 0)
			return errno ? errno : -1;
		k.tv_sec = (long)t.tv_sec;
		k.tv_nsec = t.tv_nsec;
	}
	*ns = (int64_t)k.tv_sec * NS + k.tv_nsec;
	return 0;
}

static int read_gtod(int path, int64_t *ns)
{
	struct k_timeval k;
	struct timeval t;
	long r;
	switch (path) {
	case P_SYSCALL:
		if (syscall(NR_GETTIMEOFDAY, &k, NULL) != 0)
			return errno ? errno : -1;
		break;
	case P_VDSO:
		r = v_gtod(&k, NULL);
		if (r != 0)
			return r < 0 ? (int)-r : -1;
		break;
	default:
		if (gettimeofday(&t, NULL) != 0)
			return errno ? errno : -1;
		k.tv_sec = (long)t.tv_sec;
		k.tv_usec = (long)t.tv_usec;
	}
	if (k.tv_sec < 0 || k.tv_usec < 0 || k.tv_usec >= 1000000)
		return -2;
	*ns = (int64_t)k.tv_sec * NS + (int64_t)k.tv_usec * 1000;
	return 0;
}

static int time_offered(int path)
{
#ifdef NR_TIME
	return path != P_VDSO || v_time;
#else
	return path == P_LIBC || (path == P_VDSO && v_time);
#endif
}

/* time() through one path, in nanoseconds (whole seconds). */
static int read_time(int path, int64_t *ns)
{
	long r = 0, out = -1;
	switch (path) {
	case P_SYSCALL:
#ifdef NR_TIME
		r = syscall(NR_TIME, &out);
		if (r == -1)
			return errno ? errno : -1;
		break;
#else
		return ENOSYS;
#endif
	case P_VDSO:
		r = v_time(&out);
		break;
	default: {
		time_t t = 0, back = time(&t);
		r = (long)back;
		out = (long)t;
		if (back == (time_t)-1)
			return errno ? errno : -1;
	}
	}
	if (r != out || r < 0)
		return -2; /* the value returned and the value stored disagree */
	*ns = (int64_t)r * NS;
	return 0;
}

static const char *read_error(int e)
{
	static char buf[64];
	if (e == -2)
		return "an impossible value (negative, or nanoseconds out of range)";
	if (e == -1)
		return "a failure without errno";
	snprintf(buf, sizeof buf, "error %s", errno_name(e));
	return buf;
}

/* ------------------------------------------------------------- agreement ------------------- */

struct clockdef {
	clockid_t id;
	const char *name;
	int monotonic; /* never goes backwards (the others can be set) */
};
/* Every clock id the kernel defines (uapi/linux/time.h); numbers, not macros: old headers
 * lack some, and the ids are the kernel's ABI. */
static const struct clockdef clocks[] = {
	{0, "CLOCK_REALTIME", 0},          {1, "CLOCK_MONOTONIC", 1},
	{2, "CLOCK_PROCESS_CPUTIME_ID", 1}, {3, "CLOCK_THREAD_CPUTIME_ID", 1},
	{4, "CLOCK_MONOTONIC_RAW", 1},     {5, "CLOCK_REALTIME_COARSE", 0},
	{6, "CLOCK_MONOTONIC_COARSE", 1},  {7, "CLOCK_BOOTTIME", 1},
	{8, "CLOCK_REALTIME_ALARM", 0},    {9, "CLOCK_BOOTTIME_ALARM", 1},
	{11, "CLOCK_TAI", 0},
};
#define NCLOCKS ((int)(sizeof clocks / sizeof clocks[0]))
static int offered[NCLOCKS];

typedef int (*reader_fn)(int path, const void *arg, int64_t *ns);
static int rd_clock(int path, const void *arg, int64_t *ns)
{
	return read_clock(path, ((const struct clockdef *)arg)->id, ns);
}
static int rd_gtod(int path, const void *arg, int64_t *ns) { return read_gtod(path, ns); }
static int rd_time(int path, const void *arg, int64_t *ns) { return read_time(path, ns); }

/*
 * syscall, p1, syscall, p2, syscall, p1, ...: each reading of another path is bracketed by two
 * system-call readings. A monotonic clock is checked for order (each reading no earlier than the
 * one before); a settable one for lying within [before - tolerance, after + tolerance].
 */
static void interleave(struct check *c, reader_fn rd, const void *arg, int monotonic,
		       int64_t tolerance, const int *paths, int npaths, int bracket_path,
		       int64_t deadline)
{
	int64_t before, x, after;
	char b1[32], b2[32], b3[32];
	int e, i;
	if ((e = rd(bracket_path, arg, &before)) != 0) {
		made(c, 0, "%s gave %s", path_names[bracket_path], read_error(e));
		return;
	}
	do {
		for (i = 0; i < npaths; i++) {
			int p = paths[i];
			if ((e = rd(p, arg, &x)) != 0) {
				made(c, 0, "%s gave %s where %s gave %s", path_names[p], read_error(e),
				     path_names[bracket_path], secs(before, b1, sizeof b1));
				continue;
			}
			if ((e = rd(bracket_path, arg, &after)) != 0) {
				made(c, 0, "%s gave %s", path_names[bracket_path], read_error(e));
				return;
			}
			if (monotonic) {
				made(c, before <= x, "%s %s, then %s %s: went back %lld ns", path_names[bracket_path],
				     secs(before, b1, sizeof b1), path_names[p], secs(x, b2, sizeof b2),
				     (long long)(before - x));
				made(c, x <= after, "%s %s, then %s %s: went back %lld ns", path_names[p],
				     secs(x, b1, sizeof b1), path_names[bracket_path], secs(after, b2, sizeof b2),
				     (long long)(x - after));
			} else {
				made(c, before - tolerance <= x && x <= after + tolerance,
				     "%s %s, %s %s, %s %s: outside the bracket by more than %lld ns",
				     path_names[bracket_path], secs(before, b1, sizeof b1), path_names[p],
				     secs(x, b2, sizeof b2), path_names[bracket_path], secs(after, b3, sizeof b3),
				     (long long)tolerance);
			}
			before = after;
		}
		c->rounds++;
	} while (now_ns() < deadline);
}

static void set_paths(struct check *c, int call, int *paths, int *npaths, int syscall_offered)
{
	const char *why = vdso_missing(call);
	*npaths = 0;
	strcpy(c->paths, syscall_offered ? "syscall" : "");
	if (!why) {
		paths[(*npaths)++] = P_VDSO;
		strcat(c->paths, c->paths[0] ? " vdso" : "vdso");
	} else {
		add_reason(c, "vdso not offered: %s", why);
	}
	paths[(*npaths)++] = P_LIBC;
	strcat(c->paths, c->paths[0] ? " libc" : "libc");
}

static void check_clocks(int64_t slice)
{
	int i, paths[2], npaths;
	char name[80];
	for (i = 0; i < NCLOCKS; i++) {
		struct check c;
		int64_t x, res = 0;
		int e;
		snprintf(name, sizeof name, "clock_gettime(%s)", clocks[i].name);
		check_start(&c, "agreement", name);
		if ((e = read_clock(P_SYSCALL, clocks[i].id, &x)) != 0) {
			c.status = "not_offered";
			add_reason(&c, "the kernel rejects clock id %d (%s)", (int)clocks[i].id,
				   e > 0 ? errno_name(e) : read_error(e));
			emit_check(&c);
			continue;
		}
		offered[i] = 1;
		if (read_res(P_SYSCALL, clocks[i].id, &res) != 0)
			res = 0;
		set_paths(&c, C_CGT, paths, &npaths, 1);
		interleave(&c, rd_clock, &clocks[i], clocks[i].monotonic, res, paths, npaths, P_SYSCALL,
			   now_ns() + slice);
		emit_check(&c);
	}
}

static void check_gtod(int64_t slice)
{
	struct check c;
	int paths[2], npaths;
	check_start(&c, "agreement", "gettimeofday");
	set_paths(&c, C_GTOD, paths, &npaths, 1);
	/* gettimeofday's resolution is a microsecond */
	interleave(&c, rd_gtod, NULL, 0, 1000, paths, npaths, P_SYSCALL, now_ns() + slice);
	emit_check(&c);
}

/* No time system call here (aarch64): each time() reading is bracketed by the gettimeofday
 * system call's, within time's resolution (a second). */
static void time_bracketed_by_gtod(struct check *c, const int *paths, int npaths, int64_t slice)
{
	int64_t g0, t, g1, deadline;
	char b1[32], b2[32], b3[32];
	int e, i;
	if ((e = read_gtod(P_SYSCALL, &g0)) != 0) {
		made(c, 0, "gettimeofday syscall gave %s", read_error(e));
		return;
	}
	deadline = now_ns() + slice;
	do {
		for (i = 0; i < npaths; i++) {
			if ((e = read_time(paths[i], &t)) != 0 || (e = read_gtod(P_SYSCALL, &g1)) != 0) {
				made(c, 0, "%s gave %s", path_names[paths[i]], read_error(e));
				break;
			}
			made(c, g0 - NS < t && t <= g1, "gettimeofday %s, time %s %s, gettimeofday %s",
			     secs(g0, b1, sizeof b1), path_names[paths[i]], secs(t, b2, sizeof b2),
			     secs(g1, b3, sizeof b3));
			g0 = g1;
		}
		c->rounds++;
	} while (now_ns() < deadline);
}

static void check_time(int64_t slice)
{
	struct check c;
	int paths[2], npaths;
	check_start(&c, "agreement", "time");
	if (time_offered(P_SYSCALL)) {
		set_paths(&c, C_TIME, paths, &npaths, 1);
		/* A realtime reading, not a monotonic one: the system call and the vDSO count the
		 * seconds of CLOCK_REALTIME_COARSE, musl's libc those of CLOCK_REALTIME, which can be
		 * a second ahead until the next tick. So each reading lies between the bracketing
		 * system calls', within time's resolution (a second). */
		interleave(&c, rd_time, NULL, 0, NS, paths, npaths, P_SYSCALL, now_ns() + slice);
	} else {
		set_paths(&c, C_TIME, paths, &npaths, 0);
		add_reason(&c, "syscall not offered: no time system call on this architecture; "
			       "bracketed by the gettimeofday system call");
		time_bracketed_by_gtod(&c, paths, npaths, slice);
	}
	emit_check(&c);
}

/* What the time_vs_gettimeofday readings found, for its reason. */
struct time_lag {
	int64_t lag, crossed;
};

/* One reading of time() through `path` between gettimeofday() and CLOCK_REALTIME_COARSE. */
static void time_vs_gtod_once(struct check *c, int path, struct time_lag *l)
{
	int64_t g0, c0, t, c1, g1;
	char b1[32], b2[32], b3[32], b4[32], b5[32];
	int e;
	if ((e = read_gtod(path, &g0)) != 0 ||
	    (e = read_clock(P_SYSCALL, 5 /* CLOCK_REALTIME_COARSE */, &c0)) != 0 ||
	    (e = read_time(path, &t)) != 0 ||
	    (e = read_clock(P_SYSCALL, 5, &c1)) != 0 ||
	    (e = read_gtod(path, &g1)) != 0) {
		made(c, 0, "%s gave %s", path_names[path], read_error(e));
		return;
	}
	/* gettimeofday already in a second that time() does not show yet: by how much */
	if (t < g0 / NS * NS) {
		l->crossed++;
		if (g0 - (t + NS) > l->lag)
			l->lag = g0 - (t + NS);
	}
	made(c, c0 / NS * NS <= t && t <= g1,
	     "%s: gettimeofday %s, coarse %s, time %s, coarse %s, gettimeofday %s",
	     path_names[path], secs(g0, b1, sizeof b1), secs(c0, b4, sizeof b4),
	     secs(t, b2, sizeof b2), secs(c1, b5, sizeof b5), secs(g1, b3, sizeof b3));
}

/*
 * time() against gettimeofday(): the vDSO's time() (and glibc's, which calls it) is the
 * seconds of CLOCK_REALTIME_COARSE, the realtime clock as of the last timekeeping update
 * (a tick, or later when the tick is late: a 4 ms tick was seen to lag 6.2 ms under TCG),
 * while musl's time() reads CLOCK_REALTIME itself, as gettimeofday() does. So time() may
 * lag the second gettimeofday() has entered, by an amount no fixed allowance can bound:
 * each reading must lie between the seconds of CLOCK_REALTIME_COARSE read by the system
 * call just before it (the slowest source it may follow) and those of the gettimeofday()
 * just after it (the fastest). How far it trailed gettimeofday() is recorded.
 */
static void check_time_vs_gtod(int64_t slice, int64_t coarse_res)
{
	struct check c;
	struct time_lag l = {0, 0};
	int64_t deadline = now_ns() + slice;
	int which[2] = {P_LIBC, P_VDSO};
	int p, both_vdso = !vdso_missing(C_TIME) && !vdso_missing(C_GTOD);
	check_start(&c, "time_vs_gettimeofday", "time() vs gettimeofday()");
	snprintf(c.paths, sizeof c.paths, "libc%s", both_vdso ? " vdso" : "");
	do {
		for (p = 0; p < (both_vdso ? 2 : 1); p++)
			time_vs_gtod_once(&c, which[p], &l);
		c.rounds++;
	} while (now_ns() < deadline);
	if (l.crossed)
		add_reason(&c, "time() between CLOCK_REALTIME_COARSE (resolution %lld ns) "
			   "before it and gettimeofday() after it; in %lld readings gettimeofday() "
			   "was already up to %lld ns into a second time() did not show yet",
			   (long long)coarse_res, (long long)l.crossed, (long long)l.lag);
	else
		add_reason(&c, "time() between CLOCK_REALTIME_COARSE (resolution %lld ns) "
			   "before it and gettimeofday() after it; no reading fell between a "
			   "second's start and the tick that shows it", (long long)coarse_res);
	emit_check(&c);
}

static void check_gtod_and_time(int64_t slice, int64_t coarse_res)
{
	check_gtod(slice);
	check_time(slice);
	check_time_vs_gtod(slice, coarse_res);
}

static void check_resolution(void)
{
	struct check c;
	int i, p;
	char b1[32], b2[32];
	check_start(&c, "resolution", "clock_getres");
	strcpy(c.paths, vdso_missing(C_GETRES) ? "syscall libc" : "syscall vdso libc");
	if (vdso_missing(C_GETRES))
		add_reason(&c, "vdso not offered: %s", vdso_missing(C_GETRES));
	for (i = 0; i < NCLOCKS; i++) {
		int64_t ref, got;
		if (!offered[i] || read_res(P_SYSCALL, clocks[i].id, &ref) != 0)
			continue;
		for (p = P_VDSO; p <= P_LIBC; p++) {
			int e;
			if (p == P_VDSO && vdso_missing(C_GETRES))
				continue;
			if ((e = read_res(p, clocks[i].id, &got)) != 0) {
				made(&c, 0, "%s: %s gave %s", clocks[i].name, path_names[p], read_error(e));
				continue;
			}
			made(&c, got == ref, "%s: syscall %s s, %s %s s", clocks[i].name, secs(ref, b1, sizeof b1),
			     path_names[p], secs(got, b2, sizeof b2));
		}
	}
	c.rounds = 1;
	emit_check(&c);
}

/* ------------------------------------------------------------- getcpu ---------------------- */

static int read_getcpu(int path, unsigned *cpu, unsigned *node)
{
	long r;
	*cpu = *node = ~0u;
	switch (path) {
	case P_SYSCALL:
		if (syscall(NR_GETCPU, cpu, node, NULL) != 0)
			return errno ? errno : -1;
		return 0;
	case P_VDSO:
		r = v_getcpu(cpu, node, NULL);
		return r == 0 ? 0 : r < 0 ? (int)-r : -1;
	default:
		r = sched_getcpu();
		if (r < 0)
			return errno ? errno : -1;
		*cpu = (unsigned)r;
		return 0;
	}
}

static int cpu_list(const cpu_set_t *set, int *cpus)
{
	int n = 0, i;
	for (i = 0; i < CPU_SETSIZE && n < MAX_CPUS; i++)
		if (CPU_ISSET(i, set))
			cpus[n++] = i;
	return n;
}

static void check_getcpu(const cpu_set_t *all, const int *cpus, int ncpus, int64_t slice)
{
	struct check c;
	int i, p, e, pinned = 0;
	check_start(&c, "getcpu", "getcpu pinned to each CPU");
	strcpy(c.paths, vdso_missing(C_GETCPU) ? "syscall libc" : "syscall vdso libc");
	if (vdso_missing(C_GETCPU))
		add_reason(&c, "vdso not offered: %s", vdso_missing(C_GETCPU));
	for (i = 0; i < ncpus; i++) {
		cpu_set_t one;
		int64_t deadline;
		unsigned ref_node = ~0u;
		CPU_ZERO(&one);
		CPU_SET(cpus[i], &one);
		if (sched_setaffinity(0, sizeof one, &one) != 0) {
			add_reason(&c, "pinning to CPU %d refused (%s)", cpus[i], errno_name(errno));
			continue;
		}
		pinned++;
		deadline = now_ns() + slice / ncpus;
		do {
			for (p = P_SYSCALL; p <= P_LIBC; p++) {
				unsigned cpu, node;
				if (p == P_VDSO && vdso_missing(C_GETCPU))
					continue;
				if ((e = read_getcpu(p, &cpu, &node)) != 0) {
					made(&c, 0, "pinned to CPU %d: %s gave %s", cpus[i], path_names[p], read_error(e));
					continue;
				}
				made(&c, cpu == (unsigned)cpus[i], "pinned to CPU %d: %s says CPU %u", cpus[i],
				     path_names[p], cpu);
				if (p == P_SYSCALL)
					ref_node = node;
				else if (p == P_VDSO)
					made(&c, node == ref_node, "pinned to CPU %d: syscall says node %u, vdso node %u",
					     cpus[i], ref_node, node);
			}
			c.rounds++;
		} while (now_ns() < deadline);
	}
	sched_setaffinity(0, sizeof *all, all);
	if (!pinned)
		c.status = "not_run";
	emit_check(&c);
}

/* ------------------------------------------------------------- across CPUs ----------------- */

static struct {
	int64_t published; /* the latest CLOCK_MONOTONIC reading any thread has seen (atomic) */
	int publisher;     /* the CPU that published it (evidence only) */
	int go, ready;
	int64_t deadline;
	int use_vdso;
} xc;

struct xthread {
	pthread_t thread;
	int cpu, pin_errno, started;
	long long made, failed;
	int64_t seen, got;
	int seen_from;
};

static int64_t mono_for_xc(void)
{
	struct k_timespec k;
	if (xc.use_vdso)
		v_cgt(1, &k);
	else
		syscall(NR_CLOCK_GETTIME, 1L, &k);
	return (int64_t)k.tv_sec * NS + k.tv_nsec;
}

static void *xc_thread(void *arg)
{
	struct xthread *me = arg;
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(me->cpu, &one);
	if (sched_setaffinity(0, sizeof one, &one) != 0)
		me->pin_errno = errno;
	__atomic_add_fetch(&xc.ready, 1, __ATOMIC_ACQ_REL);
	while (!__atomic_load_n(&xc.go, __ATOMIC_ACQUIRE))
		sched_yield();
	if (me->pin_errno)
		return NULL;
	for (;;) {
		int64_t before = __atomic_load_n(&xc.published, __ATOMIC_ACQUIRE);
		int from = __atomic_load_n(&xc.publisher, __ATOMIC_RELAXED);
		int64_t now = mono_for_xc();
		me->made++;
		if (now < before && !me->failed++) {
			me->seen = before;
			me->got = now;
			me->seen_from = from;
		}
		while (before < now) {
			if (__atomic_compare_exchange_n(&xc.published, &before, now, 0, __ATOMIC_ACQ_REL,
							__ATOMIC_ACQUIRE)) {
				__atomic_store_n(&xc.publisher, me->cpu, __ATOMIC_RELAXED);
				break;
			}
		}
		if ((me->made & 63) == 0 && now >= xc.deadline)
			break;
	}
	return NULL;
}

static void check_cross_cpu(const int *cpus, int ncpus, int64_t slice)
{
	struct check c;
	struct xthread t[MAX_CPUS];
	int i, started = 0;
	char b1[32], b2[32];
	check_start(&c, "cross_cpu", "CLOCK_MONOTONIC across CPUs");
	memset(t, 0, sizeof t);
	memset(&xc, 0, sizeof xc);
	xc.use_vdso = !vdso_missing(C_CGT);
	strcpy(c.paths, xc.use_vdso ? "vdso" : "syscall");
	if (!xc.use_vdso)
		add_reason(&c, "vdso not offered (%s): read through the system call", vdso_missing(C_CGT));
	if (ncpus < 2) {
		c.status = "not_run";
		add_reason(&c, "one CPU in this process's affinity set (%ld online)", sysconf(_SC_NPROCESSORS_ONLN));
		emit_check(&c);
		return;
	}
	for (i = 0; i < ncpus; i++) {
		t[i].cpu = cpus[i];
		if (pthread_create(&t[i].thread, NULL, xc_thread, &t[i]) == 0) {
			t[i].started = 1;
			started++;
		}
	}
	while (__atomic_load_n(&xc.ready, __ATOMIC_ACQUIRE) < started)
		sched_yield();
	xc.deadline = mono_for_xc() + slice;
	__atomic_store_n(&xc.go, 1, __ATOMIC_RELEASE);
	for (i = 0; i < ncpus; i++) {
		if (!t[i].started) {
			add_reason(&c, "no thread for CPU %d (pthread_create failed)", cpus[i]);
			continue;
		}
		pthread_join(t[i].thread, NULL);
		if (t[i].pin_errno)
			add_reason(&c, "pinning a thread to CPU %d refused (%s)", cpus[i], errno_name(t[i].pin_errno));
		c.made += t[i].made;
		c.rounds += t[i].made;
		c.failed += t[i].failed;
		if (t[i].failed && !c.first[0])
			snprintf(c.first, sizeof c.first,
				 "CPU %d read %s after CPU %d had published %s: %lld ns earlier", t[i].cpu,
				 secs(t[i].got, b1, sizeof b1), t[i].seen_from, secs(t[i].seen, b2, sizeof b2),
				 (long long)(t[i].seen - t[i].got));
	}
	{
		int threads = 0;
		for (i = 0; i < ncpus; i++)
			threads += t[i].started && !t[i].pin_errno;
		if (threads < 2)
			c.status = "not_run";
	}
	if (c.failed)
		fprintf(stderr, "correctness: FAILED %s: %s\n", c.name, c.first);
	emit_check(&c);
}

/* ------------------------------------------------------------- error paths ----------------- */

enum { B_CLOCK, B_AUX_CLOCK, B_NULL, B_UNMAPPED, B_READONLY, B_OTHER_CPUCLOCK };
static const char *const bad_names[] = {"invalid clock id", "clock id 16 (CLOCK_AUX)",
					"NULL result pointer", "unmapped result pointer",
					"read-only result pointer", "another process's CPU-time clock"};
#define INVALID_CLOCK 100 /* no kernel has a clock with this id */
/* MAX_CLOCKS: invalid before Linux 6.17, which made ids 16-23 auxiliary clocks (CLOCK_AUX),
 * valid once enabled in sysfs: the vDSO and the system call may judge it differently. */
#define AUX_CLOCK 16

struct outcome {
	long ret;
	int err;
};

static long call_with(int call, int path, clockid_t id, void *p)
{
	switch (call) {
	case C_CGT:
		return path == P_SYSCALL ? syscall(NR_CLOCK_GETTIME, (long)id, p)
		       : path == P_VDSO ? v_cgt(id, p) : clock_gettime(id, p);
	case C_GETRES:
		return path == P_SYSCALL ? syscall(NR_CLOCK_GETRES, (long)id, p)
		       : path == P_VDSO ? v_getres(id, p) : clock_getres(id, p);
	case C_GTOD:
		return path == P_SYSCALL ? syscall(NR_GETTIMEOFDAY, p, NULL)
		       : path == P_VDSO ? v_gtod(p, NULL) : gettimeofday(p, NULL);
	case C_TIME:
#ifdef NR_TIME
		if (path == P_SYSCALL)
			return syscall(NR_TIME, p);
#endif
		return path == P_VDSO ? v_time(p) : (long)time(p);
	default:
#ifdef HAVE_LIBC_GETCPU
		if (path == P_LIBC)
			return getcpu(p, NULL);
#endif
		return path == P_SYSCALL ? syscall(NR_GETCPU, p, NULL, NULL) : v_getcpu(p, NULL, NULL);
	}
}

/* Why a path cannot be tried at all, or NULL. */
static const char *error_path_missing(int call, int path)
{
	if (path == P_VDSO)
		return vdso_missing(call);
#ifndef NR_TIME
	if (call == C_TIME && path == P_SYSCALL)
		return "no time system call on this architecture";
#endif
#ifndef HAVE_LIBC_GETCPU
	if (call == C_GETCPU && path == P_LIBC)
		return "this libc has no getcpu() (glibc >= 2.29 has; sched_getcpu() takes no pointer)";
#endif
	return NULL;
}

static void error_child(int call, int bad, int path, int fd)
{
	static union {
		char bytes[64];
		long align;
	} valid;
	long page = sysconf(_SC_PAGESIZE);
	clockid_t id = 1; /* CLOCK_MONOTONIC */
	void *p = &valid;
	struct outcome o;
	alarm(CHILD_DEADLINE_S);
	switch (bad) {
	case B_CLOCK: id = INVALID_CLOCK; break;
	case B_AUX_CLOCK: id = AUX_CLOCK; break;
	case B_NULL: p = NULL; break;
	case B_UNMAPPED:
		p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED || munmap(p, page) != 0)
			_exit(3);
		break;
	case B_READONLY:
		p = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			_exit(3);
		break;
	default:
		/* the kernel's encoding of a process CPU-time clock: (~pid << 3) | CPUCLOCK_SCHED */
		id = (clockid_t)((~(unsigned)getppid()) << 3) | 2;
	}
	errno = 0;
	o.ret = call_with(call, path, id, p);
	o.err = errno;
	if (write(fd, &o, sizeof o) != (ssize_t)sizeof o)
		_exit(4);
	_exit(0);
}

static void emit_error_path(int call, int bad, int path)
{
	const char *missing = error_path_missing(call, path);
	struct outcome o;
	int fds[2], status = 0;
	pid_t pid;
	ssize_t got = 0;

	printf("%s\n    {\"call\": \"%s\", \"input\": \"%s\", \"path\": \"%s\", ", first_item ? "" : ",",
	       call_names[call], bad_names[bad], path_names[path]);
	first_item = 0;
	if (missing) {
		printf("\"status\": \"not_offered\", \"reason\": ");
		json_string(missing);
		printf("}");
		return;
	}
	fflush(stdout);
	if (pipe(fds) != 0 || (pid = fork()) < 0) {
		printf("\"status\": \"error\", \"reason\": ");
		json_string(strerror(errno));
		printf("}");
		return;
	}
	if (pid == 0) {
		close(fds[0]);
		error_child(call, bad, path, fds[1]);
	}
	close(fds[1]);
	while (got < (ssize_t)sizeof o) {
		ssize_t n = read(fds[0], (char *)&o + got, sizeof o - got);
		if (n <= 0)
			break;
		got += n;
	}
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		printf("\"status\": \"%s\", \"signal\": ", sig == SIGALRM ? "timeout" : "crashed");
		json_string(signal_name(sig));
		printf(", \"signo\": %d}", sig);
	} else if (got != (ssize_t)sizeof o) {
		printf("\"status\": \"error\", \"reason\": \"the child exited %d without an answer\"}",
		       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	} else {
		/* The vDSO returns -errno itself; libc and syscall(2) return -1 and set errno. */
		int err = path == P_VDSO ? (o.ret < 0 && o.ret > -4096 ? (int)-o.ret : 0)
					 : (o.ret == -1 ? o.err : 0);
		printf("\"status\": \"returned\", \"ret\": %ld, \"errno\": ", o.ret);
		if (err)
			printf("\"%s\"}", errno_name(err));
		else
			printf("null}");
	}
}

static void error_paths(void)
{
	static const struct {
		int call;
		int bad[6];
		int nbad;
	} cases[] = {
		{C_CGT, {B_CLOCK, B_AUX_CLOCK, B_NULL, B_UNMAPPED, B_READONLY, B_OTHER_CPUCLOCK}, 6},
		{C_GETRES, {B_CLOCK, B_AUX_CLOCK, B_NULL, B_UNMAPPED, B_READONLY, B_OTHER_CPUCLOCK}, 6},
		{C_GTOD, {B_NULL, B_UNMAPPED, B_READONLY}, 3},
		{C_TIME, {B_UNMAPPED, B_READONLY}, 2},
		{C_GETCPU, {B_NULL, B_UNMAPPED, B_READONLY}, 3},
	};
	int i, j, p;
	for (i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++)
		for (j = 0; j < cases[i].nbad; j++)
			for (p = P_SYSCALL; p <= P_LIBC; p++)
				emit_error_path(cases[i].call, cases[i].bad[j], p);
}

/* ------------------------------------------------------------- the run --------------------- */

int correctness_main(const struct correctness_vdso *vdso, int budget_ms)
{
	int64_t started = now_ns(), budget = (int64_t)budget_ms * 1000000, coarse_res = 0;
	int cpus[MAX_CPUS], ncpus = 0, i;
	cpu_set_t all;

	v_absent = vdso->absent;
	if (!v_absent) {
		v_cgt = (cgt_fn)vdso->clock_gettime;
		v_gtod = (gtod_fn)vdso->gettimeofday;
		v_time = (time_fn)vdso->time;
		v_getcpu = (getcpu_fn)vdso->getcpu;
		v_getres = (cgt_fn)vdso_sym(VDSO_VERSION, VDSO_GETRES);
	}
	CPU_ZERO(&all);
	if (sched_getaffinity(0, sizeof all, &all) == 0)
		ncpus = cpu_list(&all, cpus);
	if (read_res(P_SYSCALL, 5 /* CLOCK_REALTIME_COARSE */, &coarse_res) != 0)
		coarse_res = 0;

	printf("{\"correctness\": {\n  \"budget_ms\": %d,\n  \"cpus\": [", budget_ms);
	for (i = 0; i < ncpus; i++)
		printf("%s%d", i ? ", " : "", cpus[i]);
	printf("],\n  \"checks\": [");
	first_item = 1;
	/* Budget: 45% for the readings of the 13 agreement loops, 15% for getcpu, 20% across
	 * CPUs; the error paths' children take what they take (each is bounded by its alarm). */
	check_clocks(budget * 45 / 100 / (NCLOCKS + 3));
	check_gtod_and_time(budget * 45 / 100 / (NCLOCKS + 3), coarse_res);
	check_resolution();
	if (ncpus > 0) {
		check_getcpu(&all, cpus, ncpus, budget * 15 / 100);
	} else {
		struct check c;
		check_start(&c, "getcpu", "getcpu pinned to each CPU");
		c.status = "not_run";
		add_reason(&c, "sched_getaffinity failed (%s)", errno_name(errno));
		emit_check(&c);
	}
	check_cross_cpu(cpus, ncpus, budget * 20 / 100);
	printf("\n  ],\n  \"error_paths\": [");
	first_item = 1;
	error_paths();
	printf("\n  ],\n  \"elapsed_ms\": %.1f\n}}\n", (now_ns() - started) / 1e6);
	return 0;
}
