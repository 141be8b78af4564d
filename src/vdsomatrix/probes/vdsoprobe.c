/*
 * vdsoprobe: every way into the kernel, timed and counted, on Linux: x86 (x86_64 and i386) and
 * arm64 (aarch64).
 *
 * For each call (getppid, clock_gettime on five clocks, gettimeofday, time, getcpu, getrandom) and
 * each path (the libc function, the vDSO symbol called directly, the raw `syscall` instruction, the
 * legacy vsyscall page, `int $0x80`), this program
 *   - times it in a child process (a crash is a result, not a failure of the probe), and
 *   - counts the real system calls one call makes with ptrace, as strace does, and the page-fault
 *     traps it takes with a perf software counter where the kernel allows one.
 * The same way it measures what entering the kernel costs apart from a system call ("entry_costs":
 * cpuid, and a signal round trip entered by tgkill and by int3).
 * It prints one JSON object on stdout. The Python half of the probe (probe.py) wraps it with the
 * facts it collects itself.
 *
 * Built for i386 (natively in an i386 userland: the same source, one code path), the paths are
 * those of 32-bit code: the libc function, the 32-bit vDSO's symbols (with the y2038 entry
 * __vdso_clock_gettime64 and __vdso_clock_getres), `int $0x80`, and `call *%gs:0x10`, the way
 * glibc i386 enters the kernel: through the thread control block's copy of AT_SYSINFO, the
 * address of the vDSO's __kernel_vsyscall ("kernel_vsyscall" rows). A 32-bit process has no
 * vsyscall page and no `syscall` instruction of its own: its vsyscall rows say "unsupported".
 *
 * Built for aarch64, the rows are those of x86_64 with arm64's own ways in: the vDSO's
 * __kernel_* symbols (version LINUX_2.6.39; arm64's vDSO has no time or getcpu), `svc #0` (the
 * "syscall" path: number in x8, arguments in x0..x5), and clock_getres by all three. The rows
 * that exist only on x86 (int $0x80, __kernel_vsyscall, the vsyscall page, cpuid) are
 * "unsupported", "not on this architecture"; the exception-entered signal round trip is `brk`.
 * The per-architecture parts are grouped: the ABI, the system call numbers and instruction here;
 * the rows in rows_<arch>.h; the vDSO's names in vdso_elf.h; the tracee's registers in tracer.c.
 *
 * Written for the oldest userland of the matrix: C99 plus GNU inline assembly, glibc >= 2.31 or
 * musl, built three ways by build.sh (dynamic glibc, static glibc, static musl).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <gnu/libc-version.h>
#endif
/* getrandom() is glibc >= 2.25 and musl >= 1.1.20; without the header the libc row says so. */
#if defined(__has_include)
#if __has_include(<sys/random.h>)
#include <sys/random.h>
#define HAVE_LIBC_GETRANDOM 1
#endif
#endif

#include "correctness.h"
#include "json_string.h"
#include "signal_names.h"
#include "tracer.h"
#include "vdso_elf.h"
/* The process's own ABI. */
#if defined(__x86_64__)
#define PROBE_ABI "x86_64"
#elif defined(__i386__)
#define PROBE_ABI "i386"
#elif defined(__aarch64__)
#define PROBE_ABI "aarch64"
#else
#error "vdsoprobe measures x86 and arm64: build it for x86_64, i386 or aarch64"
#endif
#ifndef AT_SYSINFO
#define AT_SYSINFO 32
#endif

#ifndef CLOCK_BOOTTIME
#define CLOCK_BOOTTIME 7
#endif
#ifndef CLOCK_MONOTONIC_COARSE
#define CLOCK_MONOTONIC_COARSE 6
#endif

/*
 * The first 64 bytes of struct perf_event_attr (PERF_ATTR_SIZE_VER0), declared here because
 * musl-gcc does not see the kernel's headers. The kernel accepts this size from any version.
 */
struct perf_attr_v0 {
	uint32_t type, size;
	uint64_t config, sample_period, sample_type, read_format;
	uint64_t flags; /* bit 0 disabled, bit 5 exclude_kernel, bit 6 exclude_hv */
	uint32_t wakeup_events, bp_type;
	uint64_t bp_addr;
};
#define PERF_TYPE_SOFTWARE_ 1
#define PERF_COUNT_SW_PAGE_FAULTS_ 2
#define PERF_IOC_ENABLE 0x2400
#define PERF_IOC_DISABLE 0x2401
#define PERF_IOC_RESET 0x2403

#define I386_NR_GETPPID 64 /* the 32-bit system call table's getppid, used through int $0x80 */
#if defined(__x86_64__)
#define VSYSCALL_BASE 0xffffffffff600000UL
#define MARKER_NR SYS_getpid /* a raw getpid with a magic argument brackets the counted calls */
#define X86_64_NR_GETRANDOM 318
#define X86_64_NR_GETTID 186
#define X86_64_NR_TGKILL 234
#elif defined(__i386__)
/* The rest of the 32-bit system call table this program calls by number (int $0x80). */
#define I386_NR_TIME 13
#define I386_NR_GETPID 20
#define I386_NR_GETTIMEOFDAY 78
#define I386_NR_CLOCK_GETTIME 265
#define I386_NR_CLOCK_GETRES 266
#define I386_NR_GETCPU 318
#define I386_NR_CLOCK_GETTIME64 403
#define I386_NR_GETTID 224
#define I386_NR_TGKILL 270
#define I386_NR_GETRANDOM 355
#define MARKER_NR I386_NR_GETPID
#define NO_VSYSCALL_32 "no vsyscall page for 32-bit processes"
#endif
#if defined(__aarch64__)
/* arm64 has the generic system call table (<asm-generic/unistd.h>): the libc's SYS_ names. */
#define MARKER_NR SYS_getpid
#define NOT_THIS_ARCH "not on this architecture"
#endif
#define MARKER_BEGIN 0x76647362L
#define MARKER_END 0x76647365L
#define COUNT_CALLS 64 /* calls made between the markers when counting */

static struct {
	int batches;          /* batches per row (>= 31) */
	long min_batch_ns;    /* a batch lasts at least this long */
	int row_deadline_s;   /* a child that has not finished by then is killed: "timeout" */
} cfg = {31, 1000000L, 20};

/* ---------------------------------------------------------------- the calls --------------- */

typedef long (*call_fn)(void);
typedef int (*setup_fn)(void); /* run in each child before the call; nonzero: it failed */
static volatile long sink;
static clockid_t g_clock; /* the clock the clock_gettime rows read */

#if defined(__x86_64__)
static long raw_syscall0(long nr)
{
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr) : "rcx", "r11", "memory");
	return ret;
}

static long raw_syscall3(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return ret;
}
#elif defined(__i386__)
/* 32-bit code: `int $0x80`, arguments in ebx, ecx, edx; every other register is preserved. */
static long int80_3(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return ret;
}
#define raw_syscall3 int80_3

/*
 * __kernel_vsyscall, as glibc i386 calls it: `call *%gs:0x10`, the sysinfo word of the thread
 * control block (glibc's tcbhead_t and musl's struct pthread both keep AT_SYSINFO there). When
 * this libc's word is not AT_SYSINFO, the call goes through the AT_SYSINFO address itself.
 * __kernel_vsyscall takes the same registers as int $0x80 and preserves all but eax.
 */
static int kvs_via_tcb;         /* %gs:0x10 holds AT_SYSINFO */
static uintptr_t kvs_address;   /* AT_SYSINFO */
static uintptr_t kvs_tcb_word;  /* what %gs:0x10 holds (0 when %gs is not set up) */

static long kvs3(long nr, long a, long b, long c)
{
	long ret;
	if (kvs_via_tcb)
		__asm__ volatile("call *%%gs:0x10"
				 : "=a"(ret)
				 : "a"(nr), "b"(a), "c"(b), "d"(c)
				 : "memory", "cc");
	else
		__asm__ volatile("call *%%esi"
				 : "=a"(ret)
				 : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(kvs_address)
				 : "memory", "cc");
	return ret;
}

static void kvs_init(void)
{
	unsigned short gs;
	kvs_address = (uintptr_t)getauxval(AT_SYSINFO);
	__asm__ volatile("mov %%gs, %0" : "=r"(gs));
	if (gs != 0)
		__asm__ volatile("movl %%gs:0x10, %0" : "=r"(kvs_tcb_word));
	kvs_via_tcb = kvs_address != 0 && kvs_tcb_word == kvs_address;
}
#elif defined(__aarch64__)
/* `svc #0`: the number in x8, arguments in x0..x5, the result in x0; nothing else is changed. */
static long raw_syscall3(long nr, long a, long b, long c)
{
	register long x8 __asm__("x8") = nr;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
	return x0;
}
#define raw_syscall0(nr) raw_syscall3((nr), 0, 0, 0)
#endif

static void marker(long which) { raw_syscall3(MARKER_NR, which, 0, 0); }

/* How the rows name a vDSO path (the names themselves: VDSO_SYM in vdso_elf.h). */
#define VDSO_DIRECT(call) VDSO_SYM(call) " (" VDSO_VERSION ") called directly"

/* Found in the vDSO's own dynamic symbol table at start-up (find_vdso_functions). */
static int (*vdso_clock_gettime)(clockid_t, struct timespec *);
static int (*vdso_gettimeofday)(struct timeval *, void *);
static long (*vdso_time)(long *);
static long (*vdso_getcpu)(unsigned *, unsigned *, void *);
#if defined(__i386__)
struct kernel_timespec64 {
	int64_t tv_sec;
	int64_t tv_nsec;
};
static int (*vdso_clock_gettime64)(clockid_t, struct kernel_timespec64 *);
#endif
#if defined(__i386__) || defined(__aarch64__)
static int (*vdso_clock_getres)(clockid_t, struct timespec *);
#endif
static long (*vdso_getrandom)(void *, size_t, unsigned int, void *, size_t);

__attribute__((noinline)) static long c_empty(void)
{
	__asm__ volatile("" ::: "memory");
	return 0;
}

/*
 * getppid() from libc is timed by calling libc's function itself, not a wrapper around it:
 * with the kernel's return-stack mitigations (RSB filling, Safe RET) every return after a kernel
 * entry mispredicts, and a wrapper's own return would add one more (about 6-8 ns here; see
 * benchmarks/fidelity.py). The cast only drops the return type: getppid takes no arguments, and
 * the sink ignores what the upper half of the return register holds.
 */
#define C_GETPPID_LIBC ((call_fn)(void (*)(void))getppid)
#if defined(__x86_64__) || defined(__aarch64__)
static long c_getppid_syscall(void) { return raw_syscall0(SYS_getppid); }
#endif
#if defined(__x86_64__)
static long c_getppid_int80(void)
{
	long ret;
	/* A 64-bit process may still use the 32-bit entry; the kernel treats r8-r11 as scratch. */
	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"((long)I386_NR_GETPPID)
			 : "r8", "r9", "r10", "r11", "memory");
	return ret;
}
#elif defined(__i386__)
static long c_getppid_int80(void) { return int80_3(I386_NR_GETPPID, 0, 0, 0); }
static long c_getppid_kvs(void) { return kvs3(I386_NR_GETPPID, 0, 0, 0); }
#endif

static long c_cgt_libc(void)
{
	struct timespec ts;
	clock_gettime(g_clock, &ts);
	return ts.tv_nsec;
}
static long c_cgt_vdso(void)
{
	struct timespec ts;
	vdso_clock_gettime(g_clock, &ts);
	return ts.tv_nsec;
}
#if defined(__x86_64__) || defined(__aarch64__)
static long c_cgt_syscall(void)
{
	struct timespec ts;
	raw_syscall3(SYS_clock_gettime, g_clock, (long)&ts, 0);
	return ts.tv_nsec;
}
#endif

static long c_gtod_libc(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return tv.tv_usec;
}
static long c_gtod_vdso(void)
{
	struct timeval tv;
	vdso_gettimeofday(&tv, NULL);
	return tv.tv_usec;
}
#if defined(__x86_64__) || defined(__aarch64__)
static long c_gtod_syscall(void)
{
	struct timeval tv;
	raw_syscall3(SYS_gettimeofday, (long)&tv, 0, 0);
	return tv.tv_usec;
}
#endif
#if defined(__x86_64__)
static long c_gtod_vsyscall(void)
{
	struct timeval tv;
	((int (*)(struct timeval *, void *))VSYSCALL_BASE)(&tv, NULL);
	return tv.tv_usec;
}
#endif

static long c_time_libc(void) { return (long)time(NULL); }
static long c_time_vdso(void) { return vdso_time(NULL); }
#if defined(__x86_64__)
static long c_time_syscall(void) { return raw_syscall3(SYS_time, 0, 0, 0); }
static long c_time_vsyscall(void) { return ((long (*)(long *))(VSYSCALL_BASE + 0x400))(NULL); }
#endif

static long c_getcpu_libc(void) { return sched_getcpu(); }
static long c_getcpu_vdso(void)
{
	unsigned cpu = 0;
	vdso_getcpu(&cpu, NULL, NULL);
	return cpu;
}
#if defined(__x86_64__) || defined(__aarch64__)
static long c_getcpu_syscall(void)
{
	unsigned cpu = 0;
	raw_syscall3(SYS_getcpu, (long)&cpu, 0, 0);
	return cpu;
}
#endif
#if defined(__x86_64__)
static long c_getcpu_vsyscall(void)
{
	unsigned cpu = 0;
	((long (*)(unsigned *, unsigned *, void *))(VSYSCALL_BASE + 0x800))(&cpu, NULL, NULL);
	return cpu;
}
#elif defined(__i386__)
/* The 32-bit paths: int $0x80 with the 32-bit table's numbers, and __kernel_vsyscall. The
 * structures are the libc's (32-bit time_t in every Debian i386 userland), which are what the
 * kernel's 32-bit clock_gettime, gettimeofday and clock_getres write. */
static long c_cgt_int80(void)
{
	struct timespec ts;
	int80_3(I386_NR_CLOCK_GETTIME, g_clock, (long)&ts, 0);
	return ts.tv_nsec;
}
static long c_cgt_kvs(void)
{
	struct timespec ts;
	kvs3(I386_NR_CLOCK_GETTIME, g_clock, (long)&ts, 0);
	return ts.tv_nsec;
}
static long c_cgt64_vdso(void)
{
	struct kernel_timespec64 ts;
	vdso_clock_gettime64(g_clock, &ts);
	return (long)ts.tv_nsec;
}
static long c_cgt64_int80(void)
{
	struct kernel_timespec64 ts;
	int80_3(I386_NR_CLOCK_GETTIME64, g_clock, (long)&ts, 0);
	return (long)ts.tv_nsec;
}
static long c_gtod_int80(void)
{
	struct timeval tv;
	int80_3(I386_NR_GETTIMEOFDAY, (long)&tv, 0, 0);
	return tv.tv_usec;
}
static long c_time_int80(void) { return int80_3(I386_NR_TIME, 0, 0, 0); }
#endif
#if defined(__i386__) || defined(__aarch64__)
static long c_getres_libc(void)
{
	struct timespec ts;
	clock_getres(g_clock, &ts);
	return ts.tv_nsec;
}
static long c_getres_vdso(void)
{
	struct timespec ts;
	vdso_clock_getres(g_clock, &ts);
	return ts.tv_nsec;
}
#endif
#if defined(__i386__)
static long c_getres_int80(void)
{
	struct timespec ts;
	int80_3(I386_NR_CLOCK_GETRES, g_clock, (long)&ts, 0);
	return ts.tv_nsec;
}
static long c_getcpu_int80(void)
{
	unsigned cpu = 0;
	int80_3(I386_NR_GETCPU, (long)&cpu, 0, 0);
	return cpu;
}
#endif
#if defined(__aarch64__)
static long c_getres_syscall(void)
{
	struct timespec ts;
	raw_syscall3(SYS_clock_getres, g_clock, (long)&ts, 0);
	return ts.tv_nsec;
}
#endif

/* ------------------------------------------------------------------ getrandom ------------ */
/*
 * __vdso_getrandom (Linux 6.11) keeps its ChaCha20 key and buffered output in an opaque state the
 * caller allocates. The kernel's documented protocol: ask with (NULL, 0, 0, &params, ~0UL), then
 * mmap states with the prot and flags it returns (MAP_DROPPABLE: the kernel may zero the pages at
 * any time, and a forked child gets them zeroed; the vDSO then reseeds with one getrandom system
 * call). One state per thread, not straddling a page. Each child maps its own (grnd_setup),
 * as a libc does per thread, so the reseed falls in the warm-up call, outside the measurement.
 */
struct vgetrandom_params {
	uint32_t size_of_opaque_state, mmap_prot, mmap_flags, reserved[13];
};
static struct vgetrandom_params grnd_params;
static int grnd_params_ok; /* the query answered: grnd_params holds what the kernel asks for */
static void *grnd_state;
#define GETRANDOM_BYTES 16

static size_t grnd_map_len(void)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	return (grnd_params.size_of_opaque_state + page - 1) & ~(page - 1);
}

static int grnd_setup(void)
{
	void *p = mmap(NULL, grnd_map_len(), (int)grnd_params.mmap_prot, (int)grnd_params.mmap_flags, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	grnd_state = p; /* the start of a page: one state never straddles two */
	return 0;
}

/* The params query, in the parent; NULL when the vDSO path can be measured, else why not. */
static const char *grnd_init(void)
{
	static char why[160];
	long ret = vdso_getrandom(NULL, 0, 0, &grnd_params, ~(size_t)0);
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	if (ret != 0) {
		snprintf(why, sizeof why, "the vDSO's getrandom params query failed (returned %ld)", ret);
		return why;
	}
	grnd_params_ok = 1;
	if (grnd_params.size_of_opaque_state == 0 || grnd_params.size_of_opaque_state > page) {
		snprintf(why, sizeof why, "the vDSO asks for a %u-byte getrandom state, not 1 to %lu",
			 (unsigned)grnd_params.size_of_opaque_state, (unsigned long)page);
		return why;
	}
	if (grnd_setup() != 0) {
		snprintf(why, sizeof why, "mmap of the vDSO getrandom state (prot %#x, flags %#x) failed: %s",
			 (unsigned)grnd_params.mmap_prot, (unsigned)grnd_params.mmap_flags, strerror(errno));
		return why;
	}
	munmap(grnd_state, grnd_map_len()); /* a trial: every child maps its own */
	grnd_state = NULL;
	return NULL;
}

#ifdef HAVE_LIBC_GETRANDOM
static long c_getrandom_libc(void)
{
	unsigned char buf[GETRANDOM_BYTES];
	getrandom(buf, sizeof buf, 0);
	return buf[0];
}
#else
#define c_getrandom_libc NULL
#endif
static long c_getrandom_vdso(void)
{
	unsigned char buf[GETRANDOM_BYTES];
	vdso_getrandom(buf, sizeof buf, 0, grnd_state, grnd_params.size_of_opaque_state);
	return buf[0];
}
#if defined(__x86_64__)
static long c_getrandom_syscall(void)
{
	unsigned char buf[GETRANDOM_BYTES];
	raw_syscall3(X86_64_NR_GETRANDOM, (long)buf, sizeof buf, 0);
	return buf[0];
}
#elif defined(__aarch64__)
static long c_getrandom_syscall(void)
{
	unsigned char buf[GETRANDOM_BYTES];
	raw_syscall3(SYS_getrandom, (long)buf, sizeof buf, 0);
	return buf[0];
}
#else
static long c_getrandom_int80(void)
{
	unsigned char buf[GETRANDOM_BYTES];
	int80_3(I386_NR_GETRANDOM, (long)buf, sizeof buf, 0);
	return buf[0];
}
static long c_getrandom_kvs(void)
{
	unsigned char buf[GETRANDOM_BYTES];
	kvs3(I386_NR_GETRANDOM, (long)buf, sizeof buf, 0);
	return buf[0];
}
#endif

/* --------------------------------------------------------------- entry costs -------------- */
/*
 * What entering the kernel costs apart from any system call: cpuid (an exit to the hypervisor in
 * a VM), and a signal round trip entered two ways, by tgkill (the syscall entry) and by int3 (an
 * exception through the IDT, the way int $0x80 enters too), each to an empty handler and back
 * with rt_sigreturn. Comparing them tells the IDT entry and IRET apart from the rest. In i386
 * code tgkill goes through int $0x80, and so does rt_sigreturn: glibc's and musl's i386 restorers
 * are `mov $173, %eax; int $0x80`, so those rows carry one or two int $0x80 entries each.
 *
 * arm64 has no cpuid (the row says "not on this architecture"); its breakpoint instruction, `brk`,
 * takes the place of int3: a synchronous exception, not a system call, delivered as SIGTRAP. It
 * enters through the same EL0 exception vector as `svc` (the kernel tells them apart by the
 * exception class), so what the two rows differ by is the debug-exception path, not a vector.
 * Unlike int3, brk leaves the pc on itself: the handler steps over it (pc += 4) before returning.
 */
static long self_pid, self_tid; /* this process's, set after fork by entry_setup */

static void empty_handler(int sig) { (void)sig; }
#if defined(__aarch64__)
#include <ucontext.h>
static void brk_handler(int sig, siginfo_t *info, void *context)
{
	(void)sig;
	(void)info;
	((ucontext_t *)context)->uc_mcontext.pc += 4; /* past the brk, which faulted on itself */
}
#endif

static int entry_setup(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = empty_handler;
	sigemptyset(&sa.sa_mask);
#if defined(__aarch64__)
	if (sigaction(SIGUSR1, &sa, NULL) != 0)
		return -1;
	sa.sa_sigaction = brk_handler;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGTRAP, &sa, NULL) != 0)
		return -1;
#else
	if (sigaction(SIGUSR1, &sa, NULL) != 0 || sigaction(SIGTRAP, &sa, NULL) != 0)
		return -1;
#endif
	self_pid = getpid();
#if defined(__x86_64__)
	self_tid = raw_syscall3(X86_64_NR_GETTID, 0, 0, 0);
#elif defined(__aarch64__)
	self_tid = raw_syscall0(SYS_gettid);
#else
	self_tid = int80_3(I386_NR_GETTID, 0, 0, 0);
#endif
	return 0;
}

#if defined(__x86_64__) || defined(__i386__)
static long c_cpuid(void)
{
	unsigned a = 0, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d) : : "memory");
	return (long)(a + b + c + d);
}
#endif

static long c_tgkill_signal(void)
{
#if defined(__x86_64__)
	return raw_syscall3(X86_64_NR_TGKILL, self_pid, self_tid, SIGUSR1);
#elif defined(__aarch64__)
	return raw_syscall3(SYS_tgkill, self_pid, self_tid, SIGUSR1);
#else
	return int80_3(I386_NR_TGKILL, self_pid, self_tid, SIGUSR1);
#endif
}

#if defined(__aarch64__)
static long c_brk_signal(void)
{
	__asm__ volatile("brk #0" ::: "memory");
	return 0;
}
#else
static long c_int3_signal(void)
{
	__asm__ volatile("int3" ::: "memory");
	return 0;
}
#endif

/* ------------------------------------------------------------------- timing --------------- */

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double batch_ns(call_fn fn, long n)
{
	double t0 = now_ns();
	long i;
	for (i = 0; i < n; i++)
		sink += fn();
	return now_ns() - t0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

struct timing {
	double min, median, p90, overhead;
	long batch_calls;
	int batches;
	long faults; /* page-fault traps over `faults_calls` calls, or -1 */
	long faults_calls;
	int faults_errno;
};

static double loop_overhead_ns = -1; /* per call, measured once in the parent */

/* Per-call nanoseconds over cfg.batches batches of a calibrated size, loop overhead removed. */
static void time_call(call_fn fn, struct timing *t)
{
	double *per_call = calloc(cfg.batches, sizeof *per_call);
	long n = 1;
	int i;
	sink += fn(); /* warm up: lazy binding, first-touch faults */
	while (batch_ns(fn, n) < cfg.min_batch_ns && n < (1L << 30))
		n *= 2;
	for (i = 0; i < cfg.batches; i++) {
		double v = batch_ns(fn, n) / n - (loop_overhead_ns > 0 ? loop_overhead_ns : 0);
		per_call[i] = v > 0 ? v : 0;
	}
	qsort(per_call, cfg.batches, sizeof *per_call, cmp_double);
	t->min = per_call[0];
	t->median = per_call[cfg.batches / 2];
	t->p90 = per_call[(cfg.batches * 9) / 10];
	t->batch_calls = n;
	t->batches = cfg.batches;
	free(per_call);
}

/* Page-fault traps per call, from the kernel's software counter (vsyscall emulation traps). */
static void count_faults(call_fn fn, struct timing *t)
{
	struct perf_attr_v0 attr;
	uint64_t count = 0; /* the kernel reads out 8 bytes, whatever the ABI */
	int fd, i;
	memset(&attr, 0, sizeof attr);
	attr.size = sizeof attr;
	attr.type = PERF_TYPE_SOFTWARE_;
	attr.config = PERF_COUNT_SW_PAGE_FAULTS_;
	attr.flags = 1u << 0 | 1u << 5 | 1u << 6;
	t->faults = -1;
	fd = (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
	if (fd < 0) {
		t->faults_errno = errno;
		return;
	}
	sink += fn(); /* warm up, including the copy-on-write fault on `sink` after fork() */
	ioctl(fd, PERF_IOC_RESET, 0);
	ioctl(fd, PERF_IOC_ENABLE, 0);
	for (i = 0; i < COUNT_CALLS; i++)
		sink += fn();
	ioctl(fd, PERF_IOC_DISABLE, 0);
	if (read(fd, &count, sizeof count) == (ssize_t)sizeof count) {
		t->faults = (long)count;
		t->faults_calls = COUNT_CALLS;
	}
	close(fd);
}

/* ----------------------------------------------------- counting system calls -------------- */

/* What the tracer's entries add up to: the calls between the two markers. */
struct marked_count {
	int counting, seen_end;
	long count;
};

static void count_marked_entry(void *ctx, const struct trace_entry *e)
{
	struct marked_count *c = ctx;
	if (e->nr == MARKER_NR && e->arg0 == MARKER_BEGIN)
		c->counting = 1;
	else if (e->nr == MARKER_NR && e->arg0 == MARKER_END) {
		c->counting = 0;
		c->seen_end = 1;
	} else if (c->counting)
		c->count++;
}

/* The traced child: stops itself, then makes the call COUNT_CALLS times between the markers. */
static void counted_child(call_fn fn, setup_fn setup)
{
	int i;
	if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0)
		_exit(3);
	alarm(cfg.row_deadline_s);
	raise(SIGSTOP);
	if (setup && setup() != 0)
		_exit(4);
	sink += fn(); /* warm up outside the counted window */
	marker(MARKER_BEGIN);
	for (i = 0; i < COUNT_CALLS; i++)
		sink += fn();
	marker(MARKER_END);
	_exit(0);
}

/* Why a trace that never saw the end marker gave no count. */
static const char *count_failure(const struct trace *t)
{
	int s = t->status;
	if (!t->have_status)
		return "trace ended early";
	if (WIFSIGNALED(s))
		return "the call killed the traced child";
	if (WIFEXITED(s) && WEXITSTATUS(s) == 4)
		return "the traced child could not set the call up";
	return "trace ended early";
}

/*
 * The real system calls the call makes, counted by the tracer (tracer.c) in a child process.
 * Returns the count, or -1 with *why set when the child died first.
 */
static long count_syscalls(call_fn fn, setup_fn setup, const char **why)
{
	static char refused[sizeof ((struct trace *)0)->error];
	struct marked_count c = {0, 0, 0};
	struct trace t;
	memset(&t, 0, sizeof t);
	t.leader = fork();
	if (t.leader < 0) {
		*why = "fork failed";
		return -1;
	}
	if (t.leader == 0)
		counted_child(fn, setup);
	t.method = TRACE_PTRACE_SYSCALL;
	t.ctx = &c;
	t.on_entry = count_marked_entry;
	trace_begin(&t);
	if (trace_setup(&t) != 0) {
		snprintf(refused, sizeof refused, "%s", t.error);
		*why = refused[0] ? refused : "traced child did not stop (is ptrace forbidden here?)";
		if (t.have_status && WIFEXITED(t.status) && WEXITSTATUS(t.status) == 3)
			*why = "ptrace(PTRACE_TRACEME) refused";
		if (!t.have_status) {
			kill(t.leader, SIGKILL);
			waitpid(t.leader, NULL, 0);
		}
		return -1;
	}
	trace_run(&t);
	if (!c.seen_end) {
		*why = count_failure(&t);
		return -1;
	}
	return c.count;
}
#if defined(__aarch64__)
#define NO_VDSO_GETRANDOM "not offered by this kernel: the vDSO exports no " VDSO_SYM("getrandom")
#else
#define NO_VDSO_GETRANDOM "not offered by this kernel: the vDSO exports no __vdso_getrandom (Linux 6.11 added it)"
#endif
#ifdef HAVE_LIBC_GETRANDOM
#define NO_LIBC_GETRANDOM NULL
#else
#define NO_LIBC_GETRANDOM "not offered by this libc: no getrandom() (no <sys/random.h>)"
#endif
#define GETRANDOM_VDSO_DETAIL VDSO_DIRECT("getrandom") ", with one opaque state mmap'd" \
	" as its params query asks (16 bytes, flags 0)"

/* ------------------------------------------------------------------- output --------------- */

/* What a row needs beyond its fixed fields, found at run time. */
enum row_needs {
	NEEDS_NOTHING,
	NEEDS_VDSO_SYMBOL, /* vdso_symbol, in this process's vDSO */
	NEEDS_VGETRANDOM,  /* the vDSO's getrandom and the opaque state its params query asks for */
	NEEDS_KVS,         /* i386: AT_SYSINFO's __kernel_vsyscall; the detail says how it is called */
};

/* One row of the rows_<arch>.h tables: a call by one path. */
struct row {
	const char *call;
	const char *path;
	call_fn fn;
	clockid_t clock;
	const char *detail;
	const char *unsupported; /* set when this build does not offer the path */
	setup_fn setup;          /* per-process preparation, run in each child after fork */
	enum row_needs needs;
	const char *vdso_symbol; /* NEEDS_VDSO_SYMBOL: the symbol the path calls */
};

/* What main found out, for the rows' needs. */
static const char *no_vdso, *no_vgetrandom, *no_kvs;
static char kvs_detail[200];

static int first_row = 1;

/* Rows go into a named top-level array: "calls", "entry_costs". */
static void begin_rows(const char *name)
{
	printf("  \"%s\": [", name);
	first_row = 1;
}

static void end_rows(int last)
{
	printf("\n  ]%s\n", last ? "" : ",");
}

/* Why this environment does not offer the row's path, or NULL when it does. */
static const char *row_unavailable(const struct row *r)
{
	static char lacks[120];
	if (r->unsupported)
		return r->unsupported;
	switch (r->needs) {
	case NEEDS_VDSO_SYMBOL:
		if (no_vdso)
			return no_vdso;
		if (vdso_sym(VDSO_VERSION, r->vdso_symbol))
			return NULL;
		snprintf(lacks, sizeof lacks, "the vDSO exports no %s", r->vdso_symbol);
		return lacks;
	case NEEDS_VGETRANDOM: return no_vgetrandom;
	case NEEDS_KVS: return no_kvs;
	default: return NULL;
	}
}

/* Timing, in a child: if the call crashes, the child dies and the row says how. 0: *t holds
 * the timing; else the row's status was printed. */
static int run_timing_child(const struct row *r, struct timing *t)
{
	int fds[2], status;
	pid_t pid;
	ssize_t got;
	memset(t, 0, sizeof *t);
	if (pipe(fds) != 0 || (pid = fork()) < 0) {
		printf(", \"status\": \"error\", \"reason\": \"pipe/fork failed\"}");
		return -1;
	}
	if (pid == 0) {
		close(fds[0]);
		alarm(cfg.row_deadline_s);
		if (r->setup && r->setup() != 0)
			_exit(4);
		count_faults(r->fn, t);
		time_call(r->fn, t);
		if (write(fds[1], t, sizeof *t) != (ssize_t)sizeof *t)
			_exit(2);
		_exit(0);
	}
	close(fds[1]);
	got = read(fds[0], t, sizeof *t);
	close(fds[0]);
	waitpid(pid, &status, 0);
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
		printf(", \"status\": \"timeout\", \"reason\": \"no result within %d s\"}", cfg.row_deadline_s);
	else if (WIFSIGNALED(status)) {
		printf(", \"status\": \"crashed\", \"signal\": ");
		json_string(signal_name(WTERMSIG(status)));
		printf(", \"signo\": %d}", WTERMSIG(status));
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 4)
		printf(", \"status\": \"error\", \"reason\": \"the timing child could not set the call up\"}");
	else if (got != (ssize_t)sizeof *t || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		printf(", \"status\": \"error\", \"reason\": \"timing child exited %d\"}",
		       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	else
		return 0;
	return -1;
}

static void emit_timing(const struct timing *t)
{
	printf(", \"status\": \"ok\", \"ns\": {\"min\": %.2f, \"median\": %.2f, \"p90\": %.2f}",
	       t->min, t->median, t->p90);
	printf(", \"batches\": %d, \"batch_calls\": %ld", t->batches, t->batch_calls);
	if (t->faults >= 0)
		printf(", \"faults_per_call\": %.3f", (double)t->faults / t->faults_calls);
	else {
		char why[160];
		snprintf(why, sizeof why, "perf_event_open: %s", strerror(t->faults_errno));
		printf(", \"faults_per_call\": null, \"faults_reason\": ");
		json_string(why);
	}
}

/* Counting, in another child under ptrace. */
static void emit_count(const struct row *r)
{
	const char *why = "";
	long n;
	fflush(stdout);
	n = count_syscalls(r->fn, r->setup, &why);
	if (n >= 0)
		printf(", \"syscalls_per_call\": %.3f, \"counted_calls\": %d", (double)n / COUNT_CALLS,
		       COUNT_CALLS);
	else {
		printf(", \"syscalls_per_call\": null, \"count_reason\": ");
		json_string(why);
	}
}

static void emit_row(const struct row *r)
{
	struct timing t;
	const char *unavailable = row_unavailable(r);
	printf("%s\n    {\"call\": ", first_row ? "" : ",");
	first_row = 0;
	json_string(r->call);
	printf(", \"path\": ");
	json_string(r->path);
	printf(", \"detail\": ");
	json_string(r->needs == NEEDS_KVS ? kvs_detail : r->detail);
	if (unavailable) {
		printf(", \"status\": \"unsupported\", \"reason\": ");
		json_string(unavailable);
		printf("}");
		return;
	}
	g_clock = r->clock;
	fflush(stdout);
	if (run_timing_child(r, &t) != 0)
		return;
	emit_timing(&t);
	emit_count(r);
	printf("}");
	fflush(stdout);
}

static void emit_rows(const char *name, const struct row *rows, size_t n, int last)
{
	size_t i;
	begin_rows(name);
	for (i = 0; i < n; i++)
		emit_row(&rows[i]);
	end_rows(last);
}
static void emit_vsyscall_read(void)
{
#if defined(__i386__)
	printf("  \"vsyscall_read\": {\"readable\": false, \"reason\": \"%s\"},\n", NO_VSYSCALL_32);
#elif defined(__aarch64__)
	printf("  \"vsyscall_read\": {\"readable\": false, \"reason\": \"%s\"},\n", NOT_THIS_ARCH);
#else
	int status;
	pid_t pid;
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		alarm(5);
		sink += *(volatile const unsigned char *)VSYSCALL_BASE;
		_exit(0);
	}
	waitpid(pid, &status, 0);
	printf("  \"vsyscall_read\": {\"readable\": %s", WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "true" : "false");
	if (WIFSIGNALED(status)) {
		printf(", \"signal\": ");
		json_string(signal_name(WTERMSIG(status)));
	}
	printf("},\n");
#endif
}

/* Is this file name a libc (glibc's libc.so.6 / libc-2.x.so, musl's)? */
static int is_libc_name(const char *base)
{
	return strncmp(base, "libc.so", 7) == 0 || strncmp(base, "libc-", 5) == 0 ||
	       strncmp(base, "ld-musl", 7) == 0 || strncmp(base, "libc.musl", 9) == 0;
}

/* Is this file name a dynamic loader (used only when AT_BASE matches no mapping)? */
static int is_ldso_name(const char *base)
{
	return strncmp(base, "ld-linux", 8) == 0 || strncmp(base, "ld-musl", 7) == 0 ||
	       strncmp(base, "ld-2.", 5) == 0 || strncmp(base, "ld64.so", 7) == 0;
}

/*
 * The paths of the libc and of the program interpreter (the dynamic loader: glibc's ld.so, where
 * most vDSO symbols are looked up, or musl's ld-musl, which is its libc too), as /proc/self/maps
 * names the files really mapped. The interpreter is the file mapped at AT_BASE, the load address
 * the kernel passes to a dynamic executable; a static one has neither and prints neither.
 */
static void emit_libc_path(void)
{
	char line[4096];
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long at_base = getauxval(AT_BASE);
	static char path[4096], ldso[4096], ldso_by_name[4096];
	int have_path = 0, have_ldso = 0, have_ldso_by_name = 0;
	if (!f)
		return;
	while (!(have_path && have_ldso) && fgets(line, sizeof line, f)) {
		char *p = strchr(line, '/');
		char *base;
		unsigned long start;
		if (!p)
			continue;
		p[strcspn(p, "\n")] = 0;
		base = strrchr(p, '/') + 1;
		if (!have_path && is_libc_name(base)) {
			snprintf(path, sizeof path, "%s", p);
			have_path = 1;
		}
		if (!at_base || have_ldso)
			continue;
		if (sscanf(line, "%lx-", &start) == 1 && start == at_base) {
			snprintf(ldso, sizeof ldso, "%s", p);
			have_ldso = 1;
		} else if (!have_ldso_by_name && is_ldso_name(base)) {
			snprintf(ldso_by_name, sizeof ldso_by_name, "%s", p);
			have_ldso_by_name = 1;
		}
	}
	fclose(f);
	if (have_path) {
		printf("    \"path\": ");
		json_string(path);
		printf(",\n");
	}
	if (have_ldso || have_ldso_by_name) {
		printf("    \"ldso_path\": ");
		json_string(have_ldso ? ldso : ldso_by_name);
		printf(",\n");
	}
}

static void pin_to_one_cpu(void)
{
	cpu_set_t set;
	int cpu = sched_getcpu();
	if (cpu < 0)
		cpu = 0;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set) == 0) {
		printf("  \"pinned_cpu\": %d,\n", cpu);
	} else {
		printf("  \"pinned_cpu\": null, \"pin_error\": ");
		json_string(strerror(errno));
		printf(",\n");
	}
}

/* ------------------------------------------------------------------- main ----------------- */

#if defined(__x86_64__)
#include "rows_x86_64.h"
#elif defined(__i386__)
#include "rows_i386.h"
#elif defined(__aarch64__)
#include "rows_aarch64.h"
#endif

/* The options; 2 (the exit status) on a usage error, else 0. *correctness_ms > 0: that mode. */
static int parse_args(int argc, char **argv, int *correctness_ms)
{
	int i;
	*correctness_ms = 0;
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc)
			cfg.batches = atoi(argv[++i]);
		else if (strcmp(argv[i], "--min-batch-ns") == 0 && i + 1 < argc)
			cfg.min_batch_ns = atol(argv[++i]);
		else if (strcmp(argv[i], "--row-deadline") == 0 && i + 1 < argc)
			cfg.row_deadline_s = atoi(argv[++i]);
		else if (strcmp(argv[i], "--correctness") == 0) {
			*correctness_ms = i + 1 < argc && argv[i + 1][0] != '-' ? atoi(argv[++i]) : 300;
			*correctness_ms = *correctness_ms > 0 ? *correctness_ms : -1; /* refused below */
		} else {
			fprintf(stderr, "usage: %s [--batches N>=31] [--min-batch-ns NS] [--row-deadline S]"
				" | --correctness [BUDGET_MS]\n", argv[0]);
			return 2;
		}
	}
	if (cfg.batches < 31 || cfg.min_batch_ns < 1000 || cfg.row_deadline_s < 1 || *correctness_ms < 0) {
		fprintf(stderr, "vdsoprobe: need --batches >= 31, --min-batch-ns >= 1000, --row-deadline >= 1,"
			" --correctness BUDGET_MS >= 1\n");
		return 2;
	}
	return 0;
}

/* The vDSO functions the calls use, typed; no_vdso says why there are none. */
static void find_vdso_functions(uintptr_t base)
{
	no_vdso = vdso_parse(base);
	if (no_vdso)
		return;
	vdso_clock_gettime = (int (*)(clockid_t, struct timespec *))vdso_sym(VDSO_VERSION, VDSO_SYM("clock_gettime"));
	vdso_gettimeofday = (int (*)(struct timeval *, void *))vdso_sym(VDSO_VERSION, VDSO_SYM("gettimeofday"));
	vdso_time = (long (*)(long *))vdso_sym(VDSO_VERSION, VDSO_SYM("time"));
	vdso_getcpu = (long (*)(unsigned *, unsigned *, void *))vdso_sym(VDSO_VERSION, VDSO_SYM("getcpu"));
	vdso_getrandom = (long (*)(void *, size_t, unsigned int, void *, size_t))vdso_sym(VDSO_VERSION, VDSO_SYM("getrandom"));
#if defined(__i386__)
	vdso_clock_gettime64 = (int (*)(clockid_t, struct kernel_timespec64 *))vdso_sym(VDSO_VERSION, VDSO_SYM("clock_gettime64"));
#endif
#if defined(__i386__) || defined(__aarch64__)
	vdso_clock_getres = (int (*)(clockid_t, struct timespec *))vdso_sym(VDSO_VERSION, VDSO_SYM("clock_getres"));
#endif
}

#if defined(__i386__)
/* How this libc reaches __kernel_vsyscall: the kernel_vsyscall rows' detail, or no_kvs. */
static void describe_kvs(void)
{
	kvs_init();
	/* The details name no address (it moves with ASLR): probe.py reports AT_SYSINFO itself. */
	if (kvs_via_tcb)
		snprintf(kvs_detail, sizeof kvs_detail,
			 "call *%%gs:0x10 (the thread control block's copy of AT_SYSINFO) into __kernel_vsyscall,"
			 " as glibc and musl on i386 enter the kernel");
	else if (kvs_address)
		snprintf(kvs_detail, sizeof kvs_detail,
			 "call through AT_SYSINFO into __kernel_vsyscall (%%gs:0x10 %s in this libc)",
			 kvs_tcb_word ? "holds another address" : "is not set");
	else
		no_kvs = "no AT_SYSINFO: the kernel passed no __kernel_vsyscall (no 32-bit vDSO)";
}
#endif

static void emit_libc(void)
{
	printf("  \"libc\": {\n");
	emit_libc_path();
#ifdef __GLIBC__
	printf("    \"name\": \"glibc\", \"version\": ");
	json_string(gnu_get_libc_version());
	printf(",\n");
#else
	/* musl has no version function; probe.py takes the version from the package database. */
	printf("    \"name\": \"musl\", \"version\": null,\n");
#endif
	/* A dynamic executable has an interpreter, whose load address the kernel passes as AT_BASE. */
	printf("    \"linkage\": \"%s\"\n  },\n", getauxval(AT_BASE) ? "dynamic" : "static");
}

/* The loop overhead, measured once here and taken off every timing. */
static void emit_method(void)
{
	struct timing t;
	loop_overhead_ns = 0;
	memset(&t, 0, sizeof t);
	time_call(c_empty, &t);
	loop_overhead_ns = t.median;
	printf("  \"method\": {\"batches\": %d, \"min_batch_ns\": %ld, \"loop_overhead_ns\": %.3f, "
	       "\"counted_calls\": %d, \"clock\": \"CLOCK_MONOTONIC via libc\"},\n",
	       cfg.batches, cfg.min_batch_ns, loop_overhead_ns, COUNT_CALLS);
}

/* What the vDSO's getrandom asks for, or null; sets no_vgetrandom. */
static void emit_vgetrandom(void)
{
	no_vgetrandom = no_vdso ? no_vdso : !vdso_getrandom ? NO_VDSO_GETRANDOM : grnd_init();
	if (grnd_params_ok)
		printf("  \"vdso_getrandom\": {\"opaque_state_size\": %u, \"mmap_prot\": %u, \"mmap_flags\": %u},\n",
		       (unsigned)grnd_params.size_of_opaque_state, (unsigned)grnd_params.mmap_prot,
		       (unsigned)grnd_params.mmap_flags);
	else
		printf("  \"vdso_getrandom\": null,\n");
}

int main(int argc, char **argv)
{
	uintptr_t base = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
	int correctness_ms; /* > 0: --correctness, the checks of correctness.c only */

	if (parse_args(argc, argv, &correctness_ms) != 0)
		return 2;
	find_vdso_functions(base);
	if (correctness_ms > 0) { /* issue 16: correctness.c, with the vDSO functions found above */
		struct correctness_vdso found = {no_vdso, (void *)vdso_clock_gettime, (void *)vdso_gettimeofday,
						 (void *)vdso_time, (void *)vdso_getcpu};
		return correctness_main(&found, correctness_ms);
	}
#if defined(__i386__)
	describe_kvs();
#endif
	printf("{\n");
	printf("  \"abi\": \"%s\",\n", PROBE_ABI);
	pin_to_one_cpu();
	emit_libc();
	printf("  \"vdso_base\": %lu,\n", (unsigned long)base);
	emit_vsyscall_read();
	emit_method();
	emit_vgetrandom();
	emit_rows("calls", call_rows, sizeof call_rows / sizeof call_rows[0], 0);
	emit_rows("entry_costs", entry_rows, sizeof entry_rows / sizeof entry_rows[0], 1);
	printf("}\n");
	return 0;
}
