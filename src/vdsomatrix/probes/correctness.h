/* The correctness checks of the C helper (issue 16), entered from vdsoprobe.c's main with
 * `--correctness`: what the helper already found in the vDSO, handed over; the symbols only the
 * checks need (clock_getres) they look up themselves, with vdso_elf.h. */
#ifndef VDSOMATRIX_CORRECTNESS_H
#define VDSOMATRIX_CORRECTNESS_H

struct correctness_vdso {
	const char *absent; /* why there is no vDSO at all (no AT_SYSINFO_EHDR, unreadable), or NULL */
	/* The symbols vdsoprobe.c resolved (NULL: this vDSO does not export it). Untyped here:
	 * correctness.c calls them with the kernel's own structures, not the libc's. */
	void *clock_gettime, *gettimeofday, *time, *getcpu;
};

/* Prints one JSON object {"correctness": {...}} on stdout; returns the exit status. */
int correctness_main(const struct correctness_vdso *vdso, int budget_ms);

#endif
