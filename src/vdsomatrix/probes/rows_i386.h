/*
 * The rows of the i386 helper, in output order: data for vdsoprobe.c's emit_rows, included by it
 * alone. A 32-bit process's ways in are int $0x80 and __kernel_vsyscall (NEEDS_KVS: its detail
 * says how this libc reaches it); it has no vsyscall page.
 */
#define VDSO_ROW(name, fn_) \
	.path = "vdso", .fn = fn_, .detail = VDSO_DIRECT(name), .needs = NEEDS_VDSO_SYMBOL, \
	.vdso_symbol = VDSO_SYM(name)
#define KVS_ROW(fn_) .path = "kernel_vsyscall", .fn = fn_, .needs = NEEDS_KVS
#define NO_VSYSCALL_ROW(address) \
	.path = "vsyscall", .detail = "legacy vsyscall page, " address, .unsupported = NO_VSYSCALL_32

/* clock_gettime on one clock, by each path. */
#define CLOCK_GETTIME_ROWS(id)                                                                    \
	{.call = "clock_gettime(" #id ")", .clock = id, .path = "libc", .fn = c_cgt_libc,         \
	 .detail = "clock_gettime() from libc"},                                                   \
	{.call = "clock_gettime(" #id ")", .clock = id, VDSO_ROW("clock_gettime", c_cgt_vdso)},   \
	{.call = "clock_gettime(" #id ")", .clock = id, .path = "int80", .fn = c_cgt_int80,       \
	 .detail = "int $0x80 (32-bit system call table, nr 265)"},                                \
	{.call = "clock_gettime(" #id ")", .clock = id, KVS_ROW(c_cgt_kvs)}

static const struct row call_rows[] = {
	{.call = "getppid", .path = "libc", .fn = C_GETPPID_LIBC, .detail = "getppid() from libc"},
	{.call = "getppid", .path = "int80", .fn = c_getppid_int80,
	 .detail = "int $0x80 (32-bit system call table, nr 64)"},
	{.call = "getppid", KVS_ROW(c_getppid_kvs)},
	CLOCK_GETTIME_ROWS(CLOCK_MONOTONIC),
	CLOCK_GETTIME_ROWS(CLOCK_REALTIME),
	CLOCK_GETTIME_ROWS(CLOCK_MONOTONIC_COARSE),
	CLOCK_GETTIME_ROWS(CLOCK_BOOTTIME),
	CLOCK_GETTIME_ROWS(CLOCK_PROCESS_CPUTIME_ID),
	{.call = "clock_gettime64(CLOCK_MONOTONIC)", .clock = CLOCK_MONOTONIC, .path = "vdso",
	 .fn = c_cgt64_vdso, .detail = "__vdso_clock_gettime64 (LINUX_2.6, the y2038 entry) called directly",
	 .needs = NEEDS_VDSO_SYMBOL, .vdso_symbol = "__vdso_clock_gettime64"},
	{.call = "clock_gettime64(CLOCK_MONOTONIC)", .clock = CLOCK_MONOTONIC, .path = "int80",
	 .fn = c_cgt64_int80, .detail = "int $0x80 (32-bit system call table, clock_gettime64, nr 403)"},
	{.call = "gettimeofday", .path = "libc", .fn = c_gtod_libc, .detail = "gettimeofday() from libc"},
	{.call = "gettimeofday", VDSO_ROW("gettimeofday", c_gtod_vdso)},
	{.call = "gettimeofday", .path = "int80", .fn = c_gtod_int80,
	 .detail = "int $0x80 (32-bit system call table, nr 78)"},
	{.call = "gettimeofday", NO_VSYSCALL_ROW("0xffffffffff600000")},
	{.call = "time", .path = "libc", .fn = c_time_libc, .detail = "time() from libc"},
	{.call = "time", VDSO_ROW("time", c_time_vdso)},
	{.call = "time", .path = "int80", .fn = c_time_int80,
	 .detail = "int $0x80 (32-bit system call table, nr 13)"},
	{.call = "time", NO_VSYSCALL_ROW("0xffffffffff600400")},
	{.call = "clock_getres(CLOCK_MONOTONIC)", .clock = CLOCK_MONOTONIC, .path = "libc",
	 .fn = c_getres_libc, .detail = "clock_getres() from libc"},
	{.call = "clock_getres(CLOCK_MONOTONIC)", .clock = CLOCK_MONOTONIC,
	 VDSO_ROW("clock_getres", c_getres_vdso)},
	{.call = "clock_getres(CLOCK_MONOTONIC)", .clock = CLOCK_MONOTONIC, .path = "int80",
	 .fn = c_getres_int80, .detail = "int $0x80 (32-bit system call table, nr 266)"},
	{.call = "getcpu", .path = "libc", .fn = c_getcpu_libc, .detail = "sched_getcpu() from libc"},
	{.call = "getcpu", VDSO_ROW("getcpu", c_getcpu_vdso)},
	{.call = "getcpu", .path = "int80", .fn = c_getcpu_int80,
	 .detail = "int $0x80 (32-bit system call table, nr 318)"},
	{.call = "getcpu", NO_VSYSCALL_ROW("0xffffffffff600800")},
	{.call = "getrandom", .path = "libc", .fn = c_getrandom_libc,
	 .detail = "getrandom() from libc (16 bytes, flags 0)", .unsupported = NO_LIBC_GETRANDOM},
	{.call = "getrandom", .path = "vdso", .fn = c_getrandom_vdso, .detail = GETRANDOM_VDSO_DETAIL,
	 .needs = NEEDS_VGETRANDOM, .setup = grnd_setup},
	{.call = "getrandom", .path = "int80", .fn = c_getrandom_int80,
	 .detail = "int $0x80 (32-bit system call table, nr 355, 16 bytes, flags 0)"},
	{.call = "getrandom", KVS_ROW(c_getrandom_kvs)},
};

static const struct row entry_rows[] = {
	{.call = "cpuid", .path = "instruction", .fn = c_cpuid, .detail = "cpuid leaf 0"},
	{.call = "signal round trip", .path = "syscall", .fn = c_tgkill_signal, .setup = entry_setup,
	 .detail = "tgkill(self, SIGUSR1) to an empty handler, then rt_sigreturn"},
	{.call = "signal round trip", .path = "int3", .fn = c_int3_signal, .setup = entry_setup,
	 .detail = "int3 (#BP through the IDT) to an empty SIGTRAP handler, then rt_sigreturn"},
};
