"""The report's answers about recent vDSO interfaces (getrandom, time namespaces) and about why
a way into the kernel costs what it costs: each computed from the rows, none assumed."""

from fakes import markdown_cells, markdown_tables
from test_report_build import doc, ok

from vdsomatrix.report import build_report, render_report

MONO = "clock_gettime(CLOCK_MONOTONIC)"


def flat(markdown: str) -> str:
    """Page text as one line, Markdown's escapes undone: what a reader reads."""
    return " ".join(markdown.split()).replace("\\_", "_").replace("\\*", "*")


def glance_of(page: str) -> str:
    return flat(page.split("## At a glance", 1)[1].split("## How to read", 1)[0])


def entry(call, path, median, spc):
    return ok(call, path, median, spc)


def native(name, *, libc="2.41", random_spc=0.0, vdso_random=True, build="dynamic",
           suite="trixie", **extra):
    calls = [ok("getppid", "syscall", 140.0, 1), ok("getppid", "int80", 4400.0, 1),
             ok("getrandom", "libc", 30.0 if not random_spc else 400.0, random_spc),
             ok("getrandom", "syscall", 380.0, 1),
             ok(MONO, "vdso", 20.0, 0), ok(MONO, "syscall", 180.0, 1)]
    calls.append(ok("getrandom", "vdso", 25.0, 0) if vdso_random else
                 {"call": "getrandom", "path": "vdso", "status": "unsupported",
                  "reason": "not offered by this kernel: the vDSO exports no __vdso_getrandom"})
    d = doc(name, calls=calls, entry_costs=[
        entry("cpuid", "instruction", 3800.0, 0),
        entry("signal round trip", "syscall", 1850.0, 2),
        entry("signal round trip", "int3", 1800.0, 1)], **extra)
    d["environment"].update(
        suite=suite, build=build,
        libc={"name": "glibc", "version": libc, "linkage": "dynamic"},
        cpu_security={"hypervisor": True, "mitigations_cmdline": None,
                      "vulnerabilities": {"spectre_v2": "Mitigation: Retpolines",
                                          "meltdown": "Not affected",
                                          "spec_store_bypass": "Vulnerable"}},
        seccomp={"profile": "docker-default+perf_event_open"})
    return d


def guest(name, cmdline="", spc=1.0, getppid=350.0, timens=None):
    d = doc(name, backend="qemu", accel="tcg", calls=[
        ok("getppid", "syscall", getppid, 1), ok("getppid", "int80", 2.5 * getppid, 1),
        ok("getrandom", "libc", 900.0, spc), ok("getrandom", "syscall", 880.0, 1),
        {"call": "getrandom", "path": "vdso", "status": "unsupported",
         "reason": "not offered by this kernel: the vDSO exports no __vdso_getrandom"},
        ok(MONO, "vdso", 60.0, 0)])
    d["environment"].update(suite="bookworm", build="dynamic", kernel_suite="bookworm",
                            matrix_cmdline=cmdline,
                            cpu_security={"hypervisor": False, "mitigations_cmdline":
                                          "off" if "mitigations=off" in cmdline else None,
                                          "vulnerabilities": {"spectre_v2": "Vulnerable"
                                                              if cmdline else "Mitigation: x"}})
    if timens:
        d["environment"]["time_namespace"] = timens
    return d


def test_getrandom_answer_counts_libc_and_kernel_apart():
    docs = [native("trixie"), native("bookworm", libc="2.36", random_spc=1.0, suite="bookworm"),
            guest("k6.1")]
    glance = glance_of(render_report(docs))
    assert "through libc makes no system call in 1 of 3 environments (glibc 2.41" in glance
    assert "one in 1 whose kernel offers __vdso_getrandom but whose libc does not use it " \
           "(glibc 2.36)" in glance
    assert "one in 1 whose kernel offers no __vdso_getrandom (k6.1" in glance


def test_int80_explained_by_what_was_measured_beside_it():
    page = render_report([native("trixie"), guest("k6.1")])
    glance = glance_of(page)
    assert "costs 31.4× a syscall" in glance
    assert "cpuid costs 3800 ns" in glance
    method = flat(page.split("## Method", 1)[1])
    assert "55617fb991df" in method and "int80_is_external()" in method


def test_the_entry_cost_table_subtracts_and_says_vm():
    report = build_report([native("trixie")])
    table = next(t for t in report.tables() if t.id == "entry-cost")
    row = {c: v.text for c, v in zip(table.columns, table.rows[0], strict=True)}
    assert row["VM"] == "yes" and row["mitigations="] == "(default)"
    assert row["int $0x80 (ns)"] == "4400" and row["int3 extra (ns)"] == "-50.0"


def test_mitigations_off_compared_with_its_own_kernel_only():
    docs = [guest("k6.1"), guest("k6.1-nomitigations", "mitigations=off", getppid=300.0)]
    glance = glance_of(render_report(docs))
    assert "takes 300 ns against 350 ns in k6.1" in glance
    assert "1.17× as long with the mitigations" in glance
    assert "change for spectre_v2" in glance


def test_seccomp_cost_needs_the_allow_all_twin():
    filtered = native("trixie")
    bare = native("trixie-seccomp-allow-all")
    bare["environment"]["seccomp"] = {"profile": "allow-all (measurement only)"}
    bare["calls"][0] = ok("getppid", "syscall", 110.0, 1)
    assert "adds 30 ns to a system call" in glance_of(render_report([filtered, bare]))
    assert "Docker's seccomp filter" not in glance_of(render_report([filtered]))


def test_time_namespace_table_compares_with_the_plain_twin():
    applied = {"requested": True, "entered": True, "how": "unshare(CLONE_NEWTIME)",
               "offsets_ns": {"monotonic": 864000 * 10**9, "boottime": 1728000 * 10**9},
               "observed_shift_ns": {"monotonic": 864000 * 10**9 + 5_000_000,
                                     "boottime": 1728000 * 10**9 + 5_000_000},
               "offsets_applied": True}
    docs = [guest("k6.1"), guest("k6.1-timens", timens=applied),
            guest("k6.1-hpet", "clocksource=hpet")]
    page = render_report(docs)
    section = page.split('<a id="recent-vdso"></a>', 1)[1].split("## vDSO symbols", 1)[0]
    tables = markdown_tables(section)
    timens_lines = next(t for t in tables if "compared with" in t[0])
    header, row = markdown_cells(timens_lines[0]), markdown_cells(timens_lines[2])
    cells = {h: c.replace("\\_", "_").replace("\\+", "+")
             for h, c in zip(header, row, strict=True)}
    assert cells["compared with"] == "k6.1 †"
    assert cells["offsets seen (d)"] == "+10.000, +20.000 applied"
    assert cells["MONOTONIC"] == "60 ns user" and cells["its MONOTONIC"] == "60 ns user"
    assert cells["unshare"] == "NEWTIME"
    glance = glance_of(page)
    assert "k6.1-timens †: user, 60 ns against 60 ns without (k6.1 †), offsets applied" \
        in glance


def test_a_namespace_that_was_refused_is_said_not_hidden():
    refused = {"requested": True, "entered": False,
               "reason": "not offered by this kernel: no /proc/self/ns/time"}
    page = flat(render_report([guest("k5.4"), guest("k5.4-timens", timens=refused)]))
    assert "k5.4-timens † could not enter one (not offered by this kernel" in page
