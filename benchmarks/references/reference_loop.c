/*
 * reference_loop: an independent reference for the native rows of the probe (benchmarks/
 * fidelity.py). Written apart from probes/vdsoprobe.c and sharing none of its code or headers;
 * where the two must agree is only in *what* they time, not in how.
 *
 *     gcc -O2 -o reference_loop reference_loop.c -ldl
 *     ./reference_loop [--loops K] [--loop-ms MS] [--cpu N]     -> one JSON object on stdout
 *
 * The quantity, the same as the probe's: the nanoseconds one call costs a thread pinned to one
 * CPU, warm, with the cost of the loop around it taken out. The method, deliberately different:
 *
 *   - vDSO symbols come from glibc's own loader, dlopen("linux-vdso.so.1", RTLD_NOLOAD) and
 *     dlvsym(..., "LINUX_2.6"), not from walking the vDSO's ELF tables (so this needs dynamic
 *     glibc: fidelity.py compares it with the probe's dynamic build);
 *   - every call is written out in the loop body itself, eight per iteration, called directly:
 *     the libc function through its PLT entry, the vDSO symbol through the pointer dlvsym gave
 *     (which is what calling a vDSO symbol directly is), and the system call as a direct call of
 *     a small function holding the `syscall` instruction. The probe instead calls a wrapper
 *     through a pointer once per iteration and subtracts the measured cost of calling an empty
 *     one. Here there is nothing to subtract: the loop's own cost, one add, compare and branch
 *     per eight calls, is under 0.1 ns per call and runs beside the calls on an out-of-order
 *     core; the JSON reports it ("empty_ns_per_call": the same loop with no call in it) so that
 *     claim is checked on every run rather than assumed. Subtracting it would be subtracting
 *     noise;
 *   - why the system call sits in a function of its own, not inline in the loop: the quantity is
 *     what one system call costs its caller, and every caller (libc's wrapper, syscall(2), a
 *     runtime's own stub, the probe's wrapper) returns from a function after the kernel returns
 *     to it. With the kernel's return-stack mitigations (RSB filling, AMD's SRSO "Safe RET") that
 *     first return after a kernel entry is mispredicted, which costs some nanoseconds; eight
 *     `syscall` instructions inline in one loop body never pay it, and measured about 10% less
 *     than perf bench's own getppid loop on the machine this was written on. Those inline forms
 *     stay as variants ("syscall inline"), so that difference is shown on every run;
 *   - timing: loops of a fixed length in time (--loop-ms, 2 ms by default: twice the probe's
 *     shortest batch, and short beside a scheduler time slice, so that on a busy machine most
 *     loops run unpreempted and the median drops the rest), whose length in calls is set from
 *     one trial loop rather than by doubling, timed with CLOCK_MONOTONIC_RAW (the probe uses
 *     CLOCK_MONOTONIC); K loops (--loops, 21) after a warm-up loop of the same length, and the
 *     median of the K per-call figures;
 *   - pinned, like the probe, to one CPU: the one it starts on, or --cpu N. fidelity.py starts
 *     the probe on the same CPU, so both sides see the same CPU and the same neighbours.
 *
 * Rows: getppid (libc, syscall); clock_gettime on five clocks, gettimeofday, time and getcpu
 * (libc, vdso, syscall), named as the probe names its rows. getcpu is asked for the CPU only,
 * getcpu(&cpu, NULL, NULL), the way glibc's sched_getcpu and vdsotest ask; "variants" holds the
 * other forms (with the node pointer, through libc's syscall(2), the bare rdpid instruction, the
 * syscall inline), to tell apart what a getcpu figure depends on.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <cpuid.h>

#if !defined(__x86_64__)
#error "reference_loop is for x86_64 only"
#endif

static long opt_loops = 21;
static double opt_loop_ms = 2.0;

/* ------------------------------------------------------------ the system call, by hand ---- */
/* x86_64 entry: number in rax, arguments in rdi, rsi, rdx; the CPU clobbers rcx and r11. */
static inline long sys_enter(long number, long first, long second, long third)
{
	register long rax __asm__("rax") = number;
	register long rdi __asm__("rdi") = first;
	register long rsi __asm__("rsi") = second;
	register long rdx __asm__("rdx") = third;
	__asm__ __volatile__("syscall"
			     : "+r"(rax)
			     : "r"(rdi), "r"(rsi), "r"(rdx)
			     : "rcx", "r11", "memory");
	return rax;
}

/* The system calls as their callers make them: a function around the instruction (see the top). */
#define CALLED __attribute__((noinline, noclone))
static CALLED long k_getppid(void) { return sys_enter(SYS_getppid, 0, 0, 0); }
static CALLED long k_clock_gettime(clockid_t clk, struct timespec *ts)
{
	return sys_enter(SYS_clock_gettime, clk, (long)ts, 0);
}
static CALLED long k_gettimeofday(struct timeval *tv) { return sys_enter(SYS_gettimeofday, (long)tv, 0, 0); }
static CALLED long k_time(void) { return sys_enter(SYS_time, 0, 0, 0); }
static CALLED long k_getcpu(unsigned *cpu) { return sys_enter(SYS_getcpu, (long)cpu, 0, 0); }
static CALLED long k_getcpu_node(unsigned *cpu, unsigned *node)
{
	return sys_enter(SYS_getcpu, (long)cpu, (long)node, 0);
}

/* ------------------------------------------------------------ the vDSO, by the loader ---- */
typedef int (*cgt_t)(clockid_t, struct timespec *);
typedef int (*gtod_t)(struct timeval *, void *);
typedef time_t (*time_t_fn)(time_t *);
typedef int (*getcpu_t)(unsigned *, unsigned *, void *);

static cgt_t v_clock_gettime;
static gtod_t v_gettimeofday;
static time_t_fn v_time;
static getcpu_t v_getcpu;
static const char *vdso_error;

static void find_vdso(void)
{
	void *handle = dlopen("linux-vdso.so.1", RTLD_NOW | RTLD_NOLOAD);
	if (!handle) {
		const char *e = dlerror();
		vdso_error = e ? e : "dlopen(linux-vdso.so.1, RTLD_NOLOAD) failed";
		return;
	}
	v_clock_gettime = (cgt_t)dlvsym(handle, "__vdso_clock_gettime", "LINUX_2.6");
	v_gettimeofday = (gtod_t)dlvsym(handle, "__vdso_gettimeofday", "LINUX_2.6");
	v_time = (time_t_fn)dlvsym(handle, "__vdso_time", "LINUX_2.6");
	v_getcpu = (getcpu_t)dlvsym(handle, "__vdso_getcpu", "LINUX_2.6");
}

static int have_rdpid(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return 0;
	return (c >> 22) & 1;
}

/* ------------------------------------------------------------------- the loops ---------- */
static double raw_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC_RAW, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

volatile long sink;
static clockid_t which_clock; /* the clock of the clock_gettime rows, read once per loop */

#define EIGHT(stmt) stmt stmt stmt stmt stmt stmt stmt stmt

/* One loop of `iters` iterations of eight calls; returns its nanoseconds. `acc` keeps every
 * result live. */
#define LOOP(name, decl, stmt)                                   \
	static double name(long iters)                           \
	{                                                        \
		long acc = 0;                                    \
		clockid_t clk = which_clock;                     \
		decl;                                            \
		double start = raw_now();                        \
		for (long i = 0; i < iters; i++) {               \
			EIGHT(stmt)                              \
		}                                                \
		double stop = raw_now();                         \
		(void)clk;                                       \
		sink = acc;                                      \
		return stop - start;                             \
	}

LOOP(l_empty, , __asm__ __volatile__("" : "+r"(acc));)
LOOP(l_getppid_libc, , acc += getppid();)
LOOP(l_getppid_sys, , acc += k_getppid();)
LOOP(l_cgt_libc, struct timespec ts, clock_gettime(clk, &ts); acc += ts.tv_nsec;)
LOOP(l_cgt_vdso, struct timespec ts; cgt_t f = v_clock_gettime, f(clk, &ts); acc += ts.tv_nsec;)
LOOP(l_cgt_sys, struct timespec ts, k_clock_gettime(clk, &ts); acc += ts.tv_nsec;)
LOOP(l_gtod_libc, struct timeval tv, gettimeofday(&tv, NULL); acc += tv.tv_usec;)
LOOP(l_gtod_vdso, struct timeval tv; gtod_t f = v_gettimeofday, f(&tv, NULL); acc += tv.tv_usec;)
LOOP(l_gtod_sys, struct timeval tv, k_gettimeofday(&tv); acc += tv.tv_usec;)
LOOP(l_time_libc, , acc += time(NULL);)
LOOP(l_time_vdso, time_t_fn f = v_time, acc += f(NULL);)
LOOP(l_time_sys, , acc += k_time();)
LOOP(l_getcpu_libc, , acc += sched_getcpu();)
LOOP(l_getcpu_vdso, unsigned cpu = 0; getcpu_t f = v_getcpu, f(&cpu, NULL, NULL); acc += cpu;)
LOOP(l_getcpu_sys, unsigned cpu = 0, k_getcpu(&cpu); acc += cpu;)
/* variants of getcpu */
LOOP(l_getcpu_vdso_node, unsigned cpu = 0; unsigned node = 0; getcpu_t f = v_getcpu,
     f(&cpu, &node, NULL); acc += cpu;)
LOOP(l_getcpu_sys_node, unsigned cpu = 0; unsigned node = 0, k_getcpu_node(&cpu, &node); acc += cpu;)
LOOP(l_getppid_inline, , acc += sys_enter(SYS_getppid, 0, 0, 0);)
LOOP(l_getcpu_inline, unsigned cpu = 0, sys_enter(SYS_getcpu, (long)&cpu, 0, 0); acc += cpu;)
LOOP(l_getcpu_libc_syscall, unsigned cpu = 0, syscall(SYS_getcpu, &cpu, NULL, NULL); acc += cpu;)
LOOP(l_getcpu_libc_getcpu, unsigned cpu = 0; unsigned node = 0,
     getcpu(&cpu, &node); acc += cpu;)
LOOP(l_rdpid, unsigned long pid = 0, __asm__ __volatile__("rdpid %0" : "=r"(pid)); acc += pid;)

typedef double (*loop_fn)(long);

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct result {
	double min, median, max;
	long calls_per_loop;
};

/* K loops of about --loop-ms each, after a trial that sets their length and a warm-up loop. */
static void measure(loop_fn loop, struct result *r)
{
	double target = opt_loop_ms * 1e6, trial, per_iter;
	double *per_call = calloc((size_t)opt_loops, sizeof *per_call);
	long iters = 256, k;

	loop(16); /* first touch, lazy binding */
	do {
		trial = loop(iters);
		if (trial < target / 50)
			iters *= 8;
	} while (trial < target / 50 && iters < (1L << 34));
	per_iter = trial / (double)iters;
	iters = (long)(target / (per_iter > 0 ? per_iter : 1)) + 1;
	loop(iters); /* warm-up at full length */
	for (k = 0; k < opt_loops; k++)
		per_call[k] = loop(iters) / ((double)iters * 8);
	qsort(per_call, (size_t)opt_loops, sizeof *per_call, cmp_dbl);
	r->min = per_call[0];
	r->median = opt_loops % 2 ? per_call[opt_loops / 2]
				  : (per_call[opt_loops / 2 - 1] + per_call[opt_loops / 2]) / 2;
	r->max = per_call[opt_loops - 1];
	r->calls_per_loop = iters * 8;
	free(per_call);
}

static int printed;

static void row(const char *call, const char *path, const char *how, loop_fn loop, clockid_t clk,
		const char *missing)
{
	struct result r;
	printf("%s\n    {\"call\": \"%s\", \"path\": \"%s\", \"how\": \"%s\"", printed ? "," : "", call,
	       path, how);
	printed = 1;
	if (missing) {
		printf(", \"status\": \"unsupported\", \"reason\": \"%s\"}", missing);
		return;
	}
	which_clock = clk;
	measure(loop, &r);
	printf(", \"status\": \"ok\", \"ns\": {\"min\": %.3f, \"median\": %.3f, \"max\": %.3f}, "
	       "\"calls_per_loop\": %ld}",
	       r.min, r.median, r.max, r.calls_per_loop);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	/* The clocks the probe reports, by the names its rows use (the macro spells each name). */
#define NAMED_CLOCK(id) { id, #id }
	static const struct {
		clockid_t id;
		const char *name;
	} clocks[] = { NAMED_CLOCK(CLOCK_MONOTONIC), NAMED_CLOCK(CLOCK_REALTIME),
		       NAMED_CLOCK(CLOCK_MONOTONIC_COARSE), NAMED_CLOCK(CLOCK_BOOTTIME),
		       NAMED_CLOCK(CLOCK_PROCESS_CPUTIME_ID) };
#undef NAMED_CLOCK
	const char *no_vdso_fn = "the loader found no such vDSO symbol";
	cpu_set_t one;
	int cpu = -1;
	struct result empty;
	size_t c;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--loops") && i + 1 < argc)
			opt_loops = atol(argv[++i]);
		else if (!strcmp(argv[i], "--loop-ms") && i + 1 < argc)
			opt_loop_ms = atof(argv[++i]);
		else if (!strcmp(argv[i], "--cpu") && i + 1 < argc)
			cpu = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--loops K>=1] [--loop-ms MS>0] [--cpu N]\n", argv[0]);
			return 2;
		}
	}
	if (opt_loops < 1 || !(opt_loop_ms > 0)) {
		fprintf(stderr, "reference_loop: need --loops >= 1 and --loop-ms > 0\n");
		return 2;
	}
	if (cpu < 0) {
		unsigned here = 0;
		cpu = getcpu(&here, NULL) == 0 ? (int)here : 0;
	}
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	if (sched_setaffinity(0, sizeof one, &one) != 0) {
		fprintf(stderr, "reference_loop: cannot pin to CPU %d: %s\n", cpu, strerror(errno));
		return 1;
	}
	find_vdso();

	which_clock = CLOCK_MONOTONIC;
	measure(l_empty, &empty);
	printf("{\n  \"reference\": \"reference_loop\", \"pinned_cpu\": %d,\n", cpu);
	printf("  \"method\": {\"clock\": \"CLOCK_MONOTONIC_RAW\", \"loops\": %ld, \"loop_ms\": %.3f, "
	       "\"calls_per_iteration\": 8, \"statistic\": \"median of the loops\", "
	       "\"overhead_subtracted\": false, \"empty_ns_per_call\": %.4f, "
	       "\"vdso_lookup\": \"dlopen(linux-vdso.so.1, RTLD_NOLOAD) + dlvsym(LINUX_2.6)\"},\n",
	       opt_loops, opt_loop_ms, empty.median);
	if (vdso_error) {
		printf("  \"vdso_error\": \"");
		for (const char *p = vdso_error; *p; p++)
			putchar(*p == '"' || *p == '\\' || (unsigned char)*p < 0x20 ? '?' : *p);
		printf("\",\n");
	}
	printf("  \"rows\": [");
	row("getppid", "libc", "getppid()", l_getppid_libc, 0, NULL);
	row("getppid", "syscall", "a function holding the syscall instruction, nr 110", l_getppid_sys, 0,
	    NULL);
	for (c = 0; c < sizeof clocks / sizeof clocks[0]; c++) {
		char call[64];
		snprintf(call, sizeof call, "clock_gettime(%s)", clocks[c].name);
		row(call, "libc", "clock_gettime()", l_cgt_libc, clocks[c].id, NULL);
		row(call, "vdso", "dlvsym __vdso_clock_gettime", l_cgt_vdso, clocks[c].id,
		    vdso_error ? "no vDSO handle" : v_clock_gettime ? NULL : no_vdso_fn);
		row(call, "syscall", "a function holding the syscall instruction, nr 228", l_cgt_sys,
		    clocks[c].id, NULL);
	}
	row("gettimeofday", "libc", "gettimeofday(&tv, NULL)", l_gtod_libc, 0, NULL);
	row("gettimeofday", "vdso", "dlvsym __vdso_gettimeofday", l_gtod_vdso, 0,
	    vdso_error ? "no vDSO handle" : v_gettimeofday ? NULL : no_vdso_fn);
	row("gettimeofday", "syscall", "a function holding the syscall instruction, nr 96", l_gtod_sys,
	    0, NULL);
	row("time", "libc", "time(NULL)", l_time_libc, 0, NULL);
	row("time", "vdso", "dlvsym __vdso_time", l_time_vdso, 0,
	    vdso_error ? "no vDSO handle" : v_time ? NULL : no_vdso_fn);
	row("time", "syscall", "a function holding the syscall instruction, nr 201", l_time_sys, 0,
	    NULL);
	row("getcpu", "libc", "sched_getcpu()", l_getcpu_libc, 0, NULL);
	row("getcpu", "vdso", "dlvsym __vdso_getcpu(&cpu, NULL, NULL)", l_getcpu_vdso, 0,
	    vdso_error ? "no vDSO handle" : v_getcpu ? NULL : no_vdso_fn);
	row("getcpu", "syscall", "a function holding the syscall instruction, nr 309, (&cpu, NULL, NULL)",
	    l_getcpu_sys, 0, NULL);
	printf("\n  ],\n  \"variants\": [");
	printed = 0;
	row("getcpu", "vdso+node", "dlvsym __vdso_getcpu(&cpu, &node, NULL)", l_getcpu_vdso_node, 0,
	    vdso_error ? "no vDSO handle" : v_getcpu ? NULL : no_vdso_fn);
	row("getcpu", "syscall+node", "a function holding the syscall instruction, (&cpu, &node, NULL)",
	    l_getcpu_sys_node, 0, NULL);
	row("getcpu", "syscall inline", "syscall instruction inline in the loop, (&cpu, NULL, NULL)",
	    l_getcpu_inline, 0, NULL);
	row("getppid", "syscall inline", "syscall instruction inline in the loop, no return after it",
	    l_getppid_inline, 0, NULL);
	row("getcpu", "libc syscall(2)", "libc syscall(SYS_getcpu, &cpu, NULL, NULL), as vdsotest",
	    l_getcpu_libc_syscall, 0, NULL);
	row("getcpu", "libc getcpu()", "glibc getcpu(&cpu, &node)", l_getcpu_libc_getcpu, 0, NULL);
	row("getcpu", "rdpid", "the bare rdpid instruction", l_rdpid, 0,
	    have_rdpid() ? NULL : "this CPU has no rdpid");
	printf("\n  ]\n}\n");
	return 0;
}
