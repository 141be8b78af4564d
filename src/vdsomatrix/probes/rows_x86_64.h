/*
 * The rows of the x86_64 helper, in output order: data for vdsoprobe.c's emit_rows, included by
 * it alone (the functions named here are its own). A vDSO row is unsupported at run time when
 * the symbol is missing (NEEDS_VDSO_SYMBOL), and so on for the other needs.
 */
#define SYSCALL_DETAIL "raw syscall instruction, no libc"
#define VDSO_ROW(name, fn_) \
	.path = "vdso", .fn = fn_, .detail = VDSO_DIRECT(name), .needs = NEEDS_VDSO_SYMBOL, \
	.vdso_symbol = VDSO_SYM(name)

/* clock_gettime on one clock, by each path. */
#define CLOCK_GETTIME_ROWS(id)                                                                    \
	{.call = "clock_gettime(" #id ")", .clock = id, .path = "libc", .fn = c_cgt_libc,         \
	 .detail = "clock_gettime() from libc"},                                                   \
	{.call = "clock_gettime(" #id ")", .clock = id, VDSO_ROW("clock_gettime", c_cgt_vdso)},   \
	{.call = "clock_gettime(" #id ")", .clock = id, .path = "syscall", .fn = c_cgt_syscall,   \
	 .detail = SYSCALL_DETAIL}

static const struct row call_rows[] = {
	{.call = "getppid", .path = "libc", .fn = C_GETPPID_LIBC, .detail = "getppid() from libc"},
	{.call = "getppid", .path = "syscall", .fn = c_getppid_syscall, .detail = SYSCALL_DETAIL},
	{.call = "getppid", .path = "int80", .fn = c_getppid_int80,
	 .detail = "int $0x80 from 64-bit code (32-bit system call table, nr 64)"},
	CLOCK_GETTIME_ROWS(CLOCK_MONOTONIC),
	CLOCK_GETTIME_ROWS(CLOCK_REALTIME),
	CLOCK_GETTIME_ROWS(CLOCK_MONOTONIC_COARSE),
	CLOCK_GETTIME_ROWS(CLOCK_BOOTTIME),
	CLOCK_GETTIME_ROWS(CLOCK_PROCESS_CPUTIME_ID),
	{.call = "gettimeofday", .path = "libc", .fn = c_gtod_libc, .detail = "gettimeofday() from libc"},
	{.call = "gettimeofday", VDSO_ROW("gettimeofday", c_gtod_vdso)},
	{.call = "gettimeofday", .path = "syscall", .fn = c_gtod_syscall, .detail = SYSCALL_DETAIL},
	{.call = "gettimeofday", .path = "vsyscall", .fn = c_gtod_vsyscall,
	 .detail = "legacy vsyscall page, 0xffffffffff600000"},
	{.call = "time", .path = "libc", .fn = c_time_libc, .detail = "time() from libc"},
	{.call = "time", VDSO_ROW("time", c_time_vdso)},
	{.call = "time", .path = "syscall", .fn = c_time_syscall, .detail = SYSCALL_DETAIL},
	{.call = "time", .path = "vsyscall", .fn = c_time_vsyscall,
	 .detail = "legacy vsyscall page, 0xffffffffff600400"},
	{.call = "getcpu", .path = "libc", .fn = c_getcpu_libc, .detail = "sched_getcpu() from libc"},
	{.call = "getcpu", VDSO_ROW("getcpu", c_getcpu_vdso)},
	{.call = "getcpu", .path = "syscall", .fn = c_getcpu_syscall, .detail = SYSCALL_DETAIL},
	{.call = "getcpu", .path = "vsyscall", .fn = c_getcpu_vsyscall,
	 .detail = "legacy vsyscall page, 0xffffffffff600800"},
	{.call = "getrandom", .path = "libc", .fn = c_getrandom_libc,
	 .detail = "getrandom() from libc (16 bytes, flags 0)", .unsupported = NO_LIBC_GETRANDOM},
	{.call = "getrandom", .path = "vdso", .fn = c_getrandom_vdso, .detail = GETRANDOM_VDSO_DETAIL,
	 .needs = NEEDS_VGETRANDOM, .setup = grnd_setup},
	{.call = "getrandom", .path = "syscall", .fn = c_getrandom_syscall,
	 .detail = "raw syscall instruction, no libc (nr 318, 16 bytes, flags 0)"},
};

static const struct row entry_rows[] = {
	{.call = "cpuid", .path = "instruction", .fn = c_cpuid, .detail = "cpuid leaf 0"},
	{.call = "signal round trip", .path = "syscall", .fn = c_tgkill_signal, .setup = entry_setup,
	 .detail = "tgkill(self, SIGUSR1) to an empty handler, then rt_sigreturn"},
	{.call = "signal round trip", .path = "int3", .fn = c_int3_signal, .setup = entry_setup,
	 .detail = "int3 (#BP through the IDT) to an empty SIGTRAP handler, then rt_sigreturn"},
};
