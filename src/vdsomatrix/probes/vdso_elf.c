/*
 * Reading the vDSO's dynamic symbol table in memory. The vDSO is a complete ELF shared object
 * that the kernel maps at AT_SYSINFO_EHDR: its program headers lead to the dynamic section, and
 * that to the symbol, string, hash and version tables. The model is the kernel's
 * selftests/vDSO/parse_vdso.c. One code path for both ELF classes: ElfN(...) is Elf64_... in a
 * 64-bit process and Elf32_... in a 32-bit one, whose vDSO is 32-bit ELF.
 */
#include <elf.h>
#include <stdint.h>
#include <string.h>

#include "vdso_elf.h"

#if defined(__x86_64__) || defined(__aarch64__)
#define ELFCLASS_NATIVE ELFCLASS64
#define ElfN(type) Elf64_##type
#define ELFN_ST_TYPE(info) ELF64_ST_TYPE(info)
#define ELFN_ST_BIND(info) ELF64_ST_BIND(info)
#elif defined(__i386__)
#define ELFCLASS_NATIVE ELFCLASS32
#define ElfN(type) Elf32_##type
#define ELFN_ST_TYPE(info) ELF32_ST_TYPE(info)
#define ELFN_ST_BIND(info) ELF32_ST_BIND(info)
#else
#error "vdso_elf: x86_64, i386 or aarch64"
#endif

static struct {
	uintptr_t load_offset; /* added to a symbol's value: its address in this process */
	const ElfN(Sym) *symtab;
	const char *strtab;
	const ElfN(Versym) *versym; /* NULL: an unversioned vDSO */
	const ElfN(Verdef) *verdef;
	unsigned long nsyms;
	int ok;
} vdso;

/* DT_GNU_HASH does not store the symbol count: it is one past the last chain's end. */
static unsigned long gnu_hash_nsyms(const uint32_t *gh)
{
	uint32_t nbuckets = gh[0], symoffset = gh[1], bloom_words = gh[2];
	/* the Bloom filter's words are ELF-class sized: 64 bits in ELF64, 32 in ELF32 */
	const uint32_t *buckets = (const uint32_t *)((const ElfN(Addr) *)(gh + 4) + bloom_words);
	const uint32_t *chain = buckets + nbuckets;
	uint32_t last = 0, i;
	for (i = 0; i < nbuckets; i++)
		if (buckets[i] > last)
			last = buckets[i];
	if (last < symoffset)
		return symoffset;
	while (!(chain[last - symoffset] & 1))
		last++;
	return (unsigned long)last + 1;
}

/* The load offset (from the first PT_LOAD) and the dynamic section; NULL: not found. */
static const ElfN(Dyn) *find_dynamic(uintptr_t base)
{
	const ElfN(Ehdr) *eh = (const ElfN(Ehdr) *)base;
	const ElfN(Phdr) *ph;
	const ElfN(Dyn) *dyn = NULL;
	int i, have_load = 0;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS_NATIVE)
		return NULL;
	ph = (const ElfN(Phdr) *)(base + eh->e_phoff);
	for (i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type == PT_LOAD && !have_load) {
			have_load = 1;
			vdso.load_offset = base + ph[i].p_offset - ph[i].p_vaddr;
		} else if (ph[i].p_type == PT_DYNAMIC) {
			dyn = (const ElfN(Dyn) *)(base + ph[i].p_offset);
		}
	}
	return have_load ? dyn : NULL;
}

static int read_tables(const ElfN(Dyn) *dyn)
{
	const uint32_t *hash = NULL, *gnu_hash = NULL;
	for (; dyn->d_tag != DT_NULL; dyn++) {
		uintptr_t p = vdso.load_offset + dyn->d_un.d_ptr;
		switch (dyn->d_tag) {
		case DT_STRTAB: vdso.strtab = (const char *)p; break;
		case DT_SYMTAB: vdso.symtab = (const ElfN(Sym) *)p; break;
		case DT_HASH: hash = (const uint32_t *)p; break;
		case DT_GNU_HASH: gnu_hash = (const uint32_t *)p; break;
		case DT_VERSYM: vdso.versym = (const ElfN(Versym) *)p; break;
		case DT_VERDEF: vdso.verdef = (const ElfN(Verdef) *)p; break;
		}
	}
	if (!vdso.strtab || !vdso.symtab || (!hash && !gnu_hash))
		return 0;
	vdso.nsyms = hash ? hash[1] : gnu_hash_nsyms(gnu_hash);
	if (!vdso.verdef)
		vdso.versym = NULL; /* versions without their definitions: treated as unversioned */
	return 1;
}

const char *vdso_parse(uintptr_t base)
{
	const ElfN(Dyn) *dyn;
	memset(&vdso, 0, sizeof vdso);
	if (!base)
		return "no vDSO: the kernel passed no AT_SYSINFO_EHDR";
	dyn = find_dynamic(base);
	vdso.ok = dyn && read_tables(dyn);
	return vdso.ok ? NULL : "vDSO present but its dynamic symbol table could not be read";
}

static int version_matches(unsigned long index, const char *version)
{
	const ElfN(Verdef) *def = vdso.verdef;
	unsigned ver;
	if (!vdso.versym)
		return 1;
	ver = vdso.versym[index] & 0x7fff; /* the top bit marks a hidden symbol */
	for (;;) {
		if (!(def->vd_flags & VER_FLG_BASE) && (def->vd_ndx & 0x7fff) == ver) {
			const ElfN(Verdaux) *aux = (const ElfN(Verdaux) *)((const char *)def + def->vd_aux);
			return strcmp(version, vdso.strtab + aux->vda_name) == 0;
		}
		if (!def->vd_next)
			return 0;
		def = (const ElfN(Verdef) *)((const char *)def + def->vd_next);
	}
}

void *vdso_sym(const char *version, const char *name)
{
	unsigned long i;
	if (!vdso.ok)
		return NULL;
	for (i = 0; i < vdso.nsyms; i++) {
		const ElfN(Sym) *s = &vdso.symtab[i];
		int type = ELFN_ST_TYPE(s->st_info), bind = ELFN_ST_BIND(s->st_info);
		if (type != STT_FUNC || (bind != STB_GLOBAL && bind != STB_WEAK) || s->st_shndx == SHN_UNDEF)
			continue;
		if (strcmp(vdso.strtab + s->st_name, name) == 0 && version_matches(i, version))
			return (void *)(vdso.load_offset + s->st_value);
	}
	return NULL;
}
