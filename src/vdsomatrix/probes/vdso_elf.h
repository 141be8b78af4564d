/*
 * The vDSO as an ELF shared object: found at AT_SYSINFO_EHDR, its functions looked up by name and
 * symbol version. Used by the helper's rows and by the correctness checks; one vDSO per process,
 * so the parsed tables are this module's own.
 */
#ifndef VDSOMATRIX_VDSO_ELF_H
#define VDSOMATRIX_VDSO_ELF_H

#include <stdint.h>

/*
 * The vDSO's names and their version differ per architecture (the kernel's selftests keep them in
 * vdso_config.h the same way): x86's are __vdso_* at LINUX_2.6, arm64's __kernel_* at
 * LINUX_2.6.39. VDSO_SYM("clock_gettime") is the name this architecture exports.
 */
#if defined(__aarch64__)
#define VDSO_VERSION "LINUX_2.6.39"
#define VDSO_SYM(call) "__kernel_" call
#else
#define VDSO_VERSION "LINUX_2.6"
#define VDSO_SYM(call) "__vdso_" call
#endif

/* Parses the image mapped at base (0: none). NULL when its symbols can be looked up, else why
 * not, in the words of the helper's rows. */
const char *vdso_parse(uintptr_t base);

/* The address of function `name` at `version` (any version in an unversioned vDSO), or NULL. */
void *vdso_sym(const char *version, const char *name);

#endif
