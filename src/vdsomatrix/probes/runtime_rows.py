"""The runtime mode of probe.py: the language runtimes of this environment, timed and counted.

It finds the runtimes (every JVM under /usr/lib/jvm, this python3, node, the Go and Rust programs
built by probes/runtimes/build.sh), runs each call as `PROGRAM time CALL ITERATIONS ROUNDS`, counts
its system calls as the difference of `syscount -- PROGRAM loop CALL N` and `... 2N`, and returns
one row per runtime and call (a runtime that is missing is a row too, saying why).

Like probe.py, which imports it (never the reverse): standard library only, Python 3.9 compatible.
The timing programs of probes/runtimes/ share one command line (issue 11: "does Java use the fast
syscalls?"):  PROGRAM time CALL ITERATIONS ROUNDS | PROGRAM loop CALL ITERATIONS | PROGRAM calls
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

RUNTIME_ROUNDS = 7
PROCESS_CAP = 120        # seconds one runtime process may take at most (a JVM under TCG included)
COUNT_N = 10000          # syscount runs `loop CALL N` and `loop CALL 2N`
COUNT_MIN_N = 2000
MIN_ITERATIONS = 1000
BY_NAME_MIN = 0.05       # syscalls_by_name keeps numbers with at least this many per call
TAIL_CHARS = 300
JVM_ROOT = "/usr/lib/jvm"  # Debian's JVMs, one directory each (plus symlinks naming them)

# CALL ids, their clock, and the iterations of one round natively (a round of ~20-100 ms); the
# probe divides them by how slow this machine is (see speed_factor: QEMU TCG is 20-50x slower).
RUNTIME_CALLS = {
    "java": [("System.nanoTime()", "monotonic", 1000000),
             ("System.currentTimeMillis()", "realtime", 1000000),
             ("Instant.now()", "realtime", 1000000),
             ("Thread.yield()", "baseline", 100000)],
    "python": [("time.monotonic_ns()", "monotonic", 500000),
               ("time.time_ns()", "realtime", 500000),
               ("time.perf_counter_ns()", "monotonic", 500000),
               ("os.getppid()", "baseline", 200000)],
    "node": [("process.hrtime.bigint()", "monotonic", 1000000),
             ("Date.now()", "realtime", 1000000),
             ("performance.now()", "monotonic", 1000000),
             ("process.ppid", "baseline", 200000)],
    "go": [("time.Now()", "realtime", 1000000),
           ("syscall.Getppid()", "baseline", 300000)],
    "rust": [("Instant::now()", "monotonic", 2000000),
             ("SystemTime::now()", "realtime", 2000000),
             ("std::os::unix::process::parent_id()", "baseline", 300000)],
}
RUNTIME_PACKAGES = {"java": "default-jre-headless", "python": "python3", "node": "nodejs",
                    "go": "golang-go", "rust": "rustc"}
RUNTIME_NAMES = {"java": "Java", "python": "Python", "node": "Node.js", "go": "Go", "rust": "Rust"}

# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl): those these runtimes make.
SYSCALL_NAMES = {
    0: "read", 1: "write", 2: "open", 3: "close", 4: "stat", 5: "fstat", 6: "lstat", 7: "poll",
    8: "lseek", 9: "mmap", 10: "mprotect", 11: "munmap", 12: "brk", 13: "rt_sigaction",
    14: "rt_sigprocmask", 15: "rt_sigreturn", 16: "ioctl", 17: "pread64", 18: "pwrite64",
    19: "readv", 20: "writev", 21: "access", 22: "pipe", 23: "select", 24: "sched_yield",
    25: "mremap", 26: "msync", 27: "mincore", 28: "madvise", 32: "dup", 33: "dup2", 35: "nanosleep",
    39: "getpid", 41: "socket", 42: "connect", 44: "sendto", 45: "recvfrom", 56: "clone",
    57: "fork", 58: "vfork", 59: "execve", 60: "exit", 61: "wait4", 62: "kill", 63: "uname",
    72: "fcntl", 78: "getdents", 79: "getcwd", 89: "readlink", 96: "gettimeofday",
    97: "getrlimit", 98: "getrusage", 99: "sysinfo", 102: "getuid", 104: "getgid", 107: "geteuid",
    108: "getegid", 110: "getppid", 131: "sigaltstack", 137: "statfs", 138: "fstatfs",
    143: "sched_getparam", 144: "sched_setscheduler", 145: "sched_getscheduler", 149: "mlock",
    157: "prctl", 158: "arch_prctl", 186: "gettid", 200: "tkill", 201: "time", 202: "futex",
    203: "sched_setaffinity", 204: "sched_getaffinity", 213: "epoll_create", 217: "getdents64",
    218: "set_tid_address", 228: "clock_gettime", 229: "clock_getres", 230: "clock_nanosleep",
    231: "exit_group", 232: "epoll_wait", 233: "epoll_ctl", 234: "tgkill", 257: "openat",
    262: "newfstatat", 267: "readlinkat", 270: "pselect6", 271: "ppoll", 273: "set_robust_list",
    281: "epoll_pwait", 283: "timerfd_create", 286: "timerfd_settime", 290: "eventfd2",
    291: "epoll_create1", 292: "dup3", 293: "pipe2", 302: "prlimit64", 309: "getcpu",
    318: "getrandom", 319: "memfd_create", 324: "membarrier", 332: "statx", 334: "rseq",
    425: "io_uring_setup", 426: "io_uring_enter", 435: "clone3", 436: "close_range",
    439: "faccessat2", 441: "epoll_pwait2",
}

RUNTIMES_METHOD = (
    "Each runtime times its own calls with its own monotonic clock (Java System.nanoTime, Python "
    "time.perf_counter_ns, Node.js process.hrtime.bigint, Go time.Since, Rust Instant) around "
    "rounds of ITERATIONS calls in a plain loop whose results are summed into a sink, after a "
    "warm-up of at least 0.5 s and 5 rounds (at most 3 s) so that JIT compilers settle; ns is the "
    "min, median and p90 over %d rounds of the time per call, loop overhead included, in a "
    "process that is not pinned to a CPU. System calls are counted, not inferred: syscount runs "
    "`PROGRAM loop CALL N` and `PROGRAM loop CALL 2N` under ptrace, following every thread, and "
    "the difference of the two counts per system call number, divided by N, is the system calls "
    "per call: start-up, the fixed warm-up and background threads cancel out. A call with fewer "
    "than 0.5 per call does not enter the kernel (the vDSO or the runtime answered); the baseline "
    "call of each runtime always does, which proves the count." % RUNTIME_ROUNDS)


# ----------------------------------------------------------------------------- helpers --------
# dpkg_version is probe.py's too: it lives here because probe.py imports this module, never
# the reverse.

def dpkg_version(package, status_path="/var/lib/dpkg/status"):
    """The installed version of a Debian package, from dpkg's database, or None."""
    try:
        with open(status_path, encoding="utf-8", errors="replace") as fh:
            blocks = fh.read().split("\n\n")
    except OSError:
        return None
    for block in blocks:
        fields = {}
        for line in block.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package") == package and "installed" in fields.get("Status", ""):
            return fields.get("Version")
    return None


def one_line(text, limit=TAIL_CHARS):
    """Untrusted text as one bounded line: control characters become spaces, runs collapse."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = re.sub(r"[\x00-\x1f\x7f-\x9f]+", " ", text or "")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def stderr_tail(data, lines=3):
    """The last few lines a program wrote to stderr, as one line (its "sink" line left out)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")
    kept = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("sink ")]
    return one_line(" | ".join(kept[-lines:]))


def how_it_ended(returncode):
    if returncode < 0:
        try:
            return "killed by %s" % signal.Signals(-returncode).name
        except ValueError:
            return "killed by signal %d" % -returncode
    return "exited %d" % returncode


_PRCTL = []  # [libc's prctl] once looked up; [None] where ctypes is missing


def _die_with_parent():
    """In the child, between fork and exec: die with the probe (PR_SET_PDEATHSIG, SIGKILL)."""
    if _PRCTL and _PRCTL[0] is not None:
        _PRCTL[0](1, signal.SIGKILL)


def _prepare_die_with_parent():
    if not _PRCTL:
        try:
            import ctypes
            _PRCTL.append(ctypes.CDLL(None, use_errno=True).prctl)
        except (ImportError, OSError, AttributeError):
            _PRCTL.append(None)


def run_bounded(argv, timeout):
    """Run argv in a session of its own; kill the whole group at the timeout.

    Returns (returncode or None when it timed out, stdout bytes, stderr bytes, seconds).
    Raises OSError when argv cannot be started.
    """
    _prepare_die_with_parent()
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_die_with_parent)
    try:
        out, err = proc.communicate(timeout=max(0.1, timeout))
        code = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        out, err = proc.communicate()
        code = None
    return code, out[-65536:], err[-65536:], time.monotonic() - start


def last_json_object(data, key=None):
    """The last line of output that is a JSON object (with ``key``, if given), or None."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and (key is None or key in value):
            return value
    return None


def percentile(values, fraction):
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-int(round(fraction * 1000)) * len(ordered) // 1000))
    return ordered[min(len(ordered), rank) - 1]


def ns_summary(per_call):
    ordered = sorted(per_call)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
    return {"min": round(ordered[0], 3), "median": round(median, 3),
            "p90": round(percentile(ordered, 0.9), 3)}


def syscall_name(number):
    try:
        return SYSCALL_NAMES.get(int(number), "syscall_%d" % int(number))
    except (TypeError, ValueError):
        return "syscall_%s" % one_line(str(number), 20)


def count_diff(counts_n, counts_2n, n):
    """System calls per call from two syscount runs (N and 2N calls after the same warm-up).

    Returns (syscalls_per_call, syscalls_by_name): the total difference over every number
    divided by N (never below 0: noise of background threads can make it slightly negative),
    and, per name, the numbers with at least BY_NAME_MIN per call.
    """
    numbers = set(counts_n) | set(counts_2n)
    per_name = {}
    total = 0
    for number in numbers:
        diff = int(counts_2n.get(number, 0)) - int(counts_n.get(number, 0))
        total += diff
        per_call = diff / float(n)
        if per_call >= BY_NAME_MIN:
            name = syscall_name(number)
            per_name[name] = round(per_name.get(name, 0.0) + per_call, 3)
    return round(max(0.0, total / float(n)), 3), dict(sorted(per_name.items()))


def read_json_file(path, errors, limit=1 << 20):
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        errors.append("cannot read %s: %s" % (path, exc.strerror or exc))
        return None
    if len(data) > limit:
        errors.append("%s is larger than %d bytes: ignored" % (path, limit))
        return None
    try:
        value = json.loads(data.decode("utf-8", "replace"))
    except ValueError as exc:
        errors.append("%s is no valid JSON: %s" % (path, one_line(str(exc))))
        return None
    if not isinstance(value, dict):
        errors.append("%s is no JSON object: ignored" % path)
        return None
    return value


def speed_factor():
    """How much slower than a native x86_64 machine this one runs (1.0 at best, at most 100).

    A loop of time.monotonic_ns() in this Python, against ~60 ns natively: under QEMU TCG it is
    20-50 times slower, and where the clock is a real system call (vdso=0) slower too, which is
    right as well: the runtimes' clock calls are then as slow, and their rounds get shorter.
    """
    clock = time.monotonic_ns
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(20000):
            clock()
        spent = (time.perf_counter() - t0) / 20000 * 1e9
        best = spent if best is None else min(best, spent)
    return max(1.0, min(100.0, best / 60.0))


def java_major(home, java):
    """The JVM's major version: its release file's JAVA_VERSION, or `java -version`."""
    text = ""
    try:
        with open(os.path.join(home, "release"), encoding="utf-8", errors="replace") as fh:
            text = fh.read(65536)
    except OSError:
        pass
    match = re.search(r'^JAVA_VERSION="?([0-9][0-9._]*)', text, re.M)
    version = match.group(1) if match else None
    if version is None:
        try:
            code, out, err, _ = run_bounded([java, "-version"], 30)
            match = re.search(r'version "([0-9][0-9._]*)', (err + out).decode("utf-8", "replace"))
            version = match.group(1) if match and code == 0 else None
        except OSError:
            version = None
    if not version:
        return None
    parts = version.split(".")
    return parts[1] if parts[0] == "1" and len(parts) > 1 else parts[0]


def java_package(home, major, manifest_java):
    real = os.path.realpath(home)
    for entry in manifest_java:
        if isinstance(entry, dict) and os.path.realpath(str(entry.get("home") or "")) == real:
            return entry.get("package")
    if os.path.basename(real).startswith("java-%s-openjdk" % major):
        for package in ("openjdk-%s-jre-headless" % major, "openjdk-%s-jre" % major,
                        "openjdk-%s-jdk-headless" % major):
            if dpkg_version(package):
                return package
    return None


def manifest_package(manifest, runtime):
    entry = manifest.get(runtime)
    return entry.get("package") if isinstance(entry, dict) else None


class _Targets:
    """The targets found so far, and the manifest and build.json facts that say why a runtime
    is absent or unbuilt."""

    def __init__(self, manifest, build):
        self.manifest = manifest
        self.list = []
        self.not_shipped = (manifest.get("not_shipped")
                            if isinstance(manifest.get("not_shipped"), dict) else {})
        self.missing_build = build.get("missing") if isinstance(build.get("missing"), dict) else {}
        self.suite = manifest.get("suite")

    def add(self, runtime, variant, label, argv, package=None, version=None, status=None,
            reason=None):
        self.list.append({"runtime": runtime, "variant": variant, "label": label,
                          "version": version, "package": package, "argv": argv,
                          "status": status, "reason": reason})

    def absent(self, runtime, variant, label, detail=None):
        if runtime in self.not_shipped:
            self.add(runtime, variant, label, None, status="not_shipped",
                     reason=one_line(str(self.not_shipped[runtime])))
            return
        where = ("this host" if not self.suite else one_line(str(self.suite), 40))
        reason = "not installed on %s: apt-get install %s" % (where, RUNTIME_PACKAGES[runtime])
        if detail:
            reason += " (%s)" % detail
        self.add(runtime, variant, label, None, status="not_installed", reason=one_line(reason))

    def unbuilt(self, runtime, variant, label, program, key):
        why = self.missing_build.get(key)
        reason = "%s was not built here%s" % (program, (": %s" % why) if why else "")
        self.add(runtime, variant, label, None, manifest_package(self.manifest, runtime),
                 status="error", reason=one_line(reason))


def installed_jvms(manifest_java, skip):
    """Every JVM under /usr/lib/jvm (once, however many symlinks name it), oldest first:
    (homes found, [(major as a number, home, java, major, package)])."""
    homes = {}
    for java in sorted(glob.glob(os.path.join(JVM_ROOT, "*", "bin", "java"))):
        home = os.path.realpath(os.path.dirname(os.path.dirname(java)))
        if home not in homes and os.access(os.path.join(home, "bin", "java"), os.X_OK):
            homes[home] = os.path.join(home, "bin", "java")
    jvms = []
    for home, java in homes.items():
        major = java_major(home, java)
        package = java_package(home, major, manifest_java)
        if package and package in skip:
            continue
        jvms.append((int(major) if major and major.isdigit() else 0, home, java, major, package))
    jvms.sort()
    return homes, jvms


def java_targets(targets, rdir):
    manifest = targets.manifest
    manifest_java = [e for e in manifest.get("java") or [] if isinstance(e, dict)]
    skip = set(str(p) for p in manifest.get("java_not_measured") or [])
    homes, jvms = installed_jvms(manifest_java, skip)
    used = set()
    have_class = os.path.isfile(os.path.join(rdir, "Timing.class"))
    for _, home, java, major, package in jvms:
        variant = "openjdk-%s" % (major or "unknown")
        label = "Java %s" % (major or "?")
        if variant in used:  # two JVMs of one major version (Debian's and another build)
            variant += "-" + os.path.basename(home)
            label += " (%s)" % os.path.basename(home)
        used.add(variant)
        if have_class:
            targets.add("java", variant, label, [java, "-cp", rdir, "Timing"], package)
        else:
            why = targets.missing_build.get("java")
            targets.add("java", variant, label, None, package, status="error",
                        reason=one_line("Timing.class was not built here%s" %
                                        ((": %s" % why) if why else "")))
    for entry in manifest_java:
        home = os.path.realpath(str(entry.get("home") or ""))
        if entry.get("home") and home not in homes and entry.get("package") not in skip:
            targets.add("java", "openjdk-%s" % entry.get("major"), "Java %s" % entry.get("major"),
                        None, entry.get("package"), status="error",
                        reason=one_line("the manifest lists %s at %s, but it has no bin/java" %
                                        (entry.get("package"), entry.get("home"))))
    if not jvms and not any(t["runtime"] == "java" for t in targets.list):
        targets.absent("java", "openjdk", "Java")


def python_target(targets, rdir, python):
    """The python3 this probe runs with."""
    manifest = targets.manifest
    python = python or sys.executable or shutil.which("python3")
    script = os.path.join(rdir, "timing.py")
    version = platform.python_version()
    label = "Python %s" % ".".join(version.split(".")[:2])
    entry = manifest.get("python") if isinstance(manifest.get("python"), dict) else {}
    package = entry.get("package") if entry.get("path") and python and os.path.realpath(
        str(entry["path"])) == os.path.realpath(python) else None
    if package is None and python and os.path.realpath(python).startswith("/usr/bin/"):
        package = "python3" if dpkg_version("python3") else None
    if not python:
        targets.absent("python", "python3", "Python")
    elif not os.path.isfile(script):
        targets.unbuilt("python", "python3", label, "timing.py", "python")
    else:
        targets.add("python", "python3", label, [python, "-I", script], package, version)


def node_target(targets, rdir):
    """The manifest's node, else node (or nodejs) on PATH."""
    manifest = targets.manifest
    entry = manifest.get("node") if isinstance(manifest.get("node"), dict) else {}
    node = entry.get("path") if entry.get("path") and os.access(str(entry["path"]), os.X_OK) \
        else (shutil.which("node") or shutil.which("nodejs"))
    if not node:
        targets.absent("node", "node", "Node.js")
    elif not os.path.isfile(os.path.join(rdir, "timing.js")):
        targets.unbuilt("node", "node", "Node.js", "timing.js", "node")
    else:
        package = entry.get("package") or (
            "nodejs" if os.path.realpath(node).startswith("/usr/bin/") and dpkg_version("nodejs")
            else None)
        targets.add("node", "node", "Node.js", [node, os.path.join(rdir, "timing.js")], package)


def compiled_targets(targets, rdir):
    """Go and Rust: programs compiled in this environment by build.sh."""
    manifest = targets.manifest
    compiled = [("go", "go-static", "Go static", "timing-go-static"),
                ("go", "go-dynamic", "Go dynamic", "timing-go-dynamic"),
                ("rust", "rust", "Rust", "timing-rust")]
    for runtime, variant, label, program in compiled:
        path = os.path.join(rdir, program)
        key = variant if runtime == "go" else runtime
        if os.path.isfile(path) and os.access(path, os.X_OK):
            targets.add(runtime, variant, label, [path], manifest_package(manifest, runtime))
        elif runtime in targets.not_shipped or not isinstance(manifest.get(runtime), dict):
            targets.absent(runtime, variant, label, ("build.json: %s" % targets.missing_build[key])
                           if key in targets.missing_build else None)
        else:
            targets.unbuilt(runtime, variant, label, program, key)


def discover_runtimes(rdir, manifest, build, python=None):
    """Every runtime variant this environment could run, or why it cannot, as targets:
    {runtime, variant, label, version, package, argv (None when it cannot run), status, reason}.
    """
    targets = _Targets(manifest, build)
    java_targets(targets, rdir)
    python_target(targets, rdir, python)
    node_target(targets, rdir)
    compiled_targets(targets, rdir)
    return targets.list


def runtime_label(target):
    """"Java 17", "Python 3.11", "Go 1.19 static", "Node.js 20", "Rust 1.63" from the version."""
    runtime, version = target["runtime"], target.get("version") or ""
    if runtime == "go":
        match = re.match(r"go(\d+)\.(\d+)", version)
        kind = target["variant"].split("-", 1)[-1]
        return "Go %s.%s %s" % (match.group(1), match.group(2), kind) if match else target["label"]
    if runtime == "node":
        match = re.match(r"v?(\d+)\.", version)
        return "Node.js %s" % match.group(1) if match else target["label"]
    if runtime == "rust":
        match = re.search(r"(\d+)\.(\d+)\.\d+", version)
        return "Rust %s.%s" % (match.group(1), match.group(2)) if match else target["label"]
    return target["label"]


class Budget:
    """The runtime mode's share of --helper-timeout: each process gets min(remaining, cap)."""

    def __init__(self, seconds, cap=None):
        self.deadline = time.monotonic() + seconds
        self.total = seconds
        self.cap = PROCESS_CAP if cap is None else cap

    def remaining(self):
        return self.deadline - time.monotonic()

    def for_process(self):
        return max(0.0, min(self.remaining(), self.cap))


def time_call(argv, call, iterations, budget):
    """Run `PROGRAM time CALL ITERATIONS ROUNDS`: (fields of the row, reported version)."""
    timeout = budget.for_process()
    what = "time %s %d %d" % (call, iterations, RUNTIME_ROUNDS)
    if timeout < 1:
        return {"status": "timeout", "reason": "the runtime budget (--helper-timeout %d s) was "
                "spent before this row" % budget.total}, None
    try:
        code, out, err, _ = run_bounded(argv + ["time", call, str(iterations),
                                                str(RUNTIME_ROUNDS)], timeout)
    except OSError as exc:
        return {"status": "error", "reason": one_line("cannot run %s: %s" %
                                                      (argv[0], exc.strerror or exc))}, None
    if code is None:
        return {"status": "timeout", "reason": "%s did not finish within %d s" %
                (what, timeout)}, None
    if code != 0:
        return {"status": "crashed", "reason": one_line("%s %s: %s" % (
            what, how_it_ended(code), stderr_tail(err) or "no stderr"))}, None
    result = last_json_object(out, "ns_per_call")
    per_call = result.get("ns_per_call") if result else None
    if (not isinstance(per_call, list) or not per_call or result.get("call") != call or
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                    for v in per_call)):
        return {"status": "error", "reason": one_line("%s printed no valid result: %s" % (
            what, out.decode("utf-8", "replace")[-200:] or "nothing"))}, None
    warm_calls = result.get("warmup_calls")
    warm_ns = result.get("warmup_ns")
    warmup = None
    if isinstance(warm_calls, int) and isinstance(warm_ns, (int, float)):
        if warm_calls and warm_calls % iterations == 0:
            warmup = "%d rounds of %d calls (%.1f s)" % (warm_calls // iterations, iterations,
                                                         warm_ns / 1e9)
        else:
            warmup = "%d calls (%.1f s)" % (warm_calls, warm_ns / 1e9)
    version = result.get("version")
    fields = {"status": "ok", "reason": None, "ns": ns_summary(per_call),
              "rounds": len(per_call), "iterations": iterations, "warmup": warmup}
    return fields, (one_line(version, 120) if isinstance(version, str) and version else None)


def syscount_run(syscount, argv, call, n, budget):
    """One `syscount -- PROGRAM loop CALL n`: (counts {number: count}, total, method) or error."""
    timeout = budget.for_process()
    what = "loop %s %d" % (call, n)
    if timeout < 2:
        return None, "the runtime budget was spent before counting %s" % what
    inner = max(1, int(timeout) - 1)
    try:
        code, out, err, _ = run_bounded([syscount, "--timeout", str(inner), "--"] + argv +
                                        ["loop", call, str(n)], timeout)
    except OSError as exc:
        return None, one_line("cannot run %s: %s" % (syscount, exc.strerror or exc))
    if code is None:
        return None, "syscount %s did not finish within %d s" % (what, timeout)
    report = last_json_object(out, "counts")
    if report is None or not isinstance(report.get("counts"), dict):
        return None, one_line("syscount %s (%s) printed no counts: %s" % (
            what, how_it_ended(code), stderr_tail(err) or "no stderr"))
    if report.get("error"):
        return None, one_line("syscount %s: %s" % (what, report["error"]))
    if report.get("timed_out"):
        return None, "syscount %s timed out after %d s" % (what, inner)
    if report.get("signal") or report.get("exit_code") not in (0, None):
        ended = ("killed by %s" % report["signal"]) if report.get("signal") else \
            "exited %s" % report.get("exit_code")
        return None, one_line("%s under syscount %s: %s" % (what, ended, stderr_tail(err)))
    counts = {}
    for number, count in report["counts"].items():
        if isinstance(count, int) and not isinstance(count, bool):
            counts[str(number)] = count
    total = report.get("total") if isinstance(report.get("total"), int) else sum(counts.values())
    return (counts, total, report.get("method")), None


def count_call(syscount, argv, call, n, budget):
    """Row fields from counting `loop CALL N` and `loop CALL 2N` under syscount."""
    fields = {"syscalls_per_call": None, "syscalls_by_name": None, "counted": None,
              "count_error": None}
    if not syscount:
        fields["count_error"] = "not counted: no syscall counter given (--syscount)"
        return fields
    first, error = syscount_run(syscount, argv, call, n, budget)
    second = None
    if error is None:
        second, error = syscount_run(syscount, argv, call, 2 * n, budget)
    if error is not None:
        fields["count_error"] = error
        return fields
    per_call, by_name = count_diff(first[0], second[0], n)
    fields.update({"syscalls_per_call": per_call, "syscalls_by_name": by_name,
                   "counted": {"n": n, "total_n": first[1], "total_2n": second[1],
                               "method": first[2] if isinstance(first[2], str) else None}})
    return fields


def collect(rdir, syscount, budget_seconds, errors, factor=None, python=None):
    """The runtime mode's entry point: (the "runtimes" rows, the "runtimes_method" text).

    Every call of every runtime found in this environment (or its absence, as rows too), timed
    and counted within budget_seconds; what cannot be read goes to ``errors``. ``factor`` (how
    slow this machine is) and ``python`` (the python3 to measure) are for the tests.
    """
    budget = Budget(budget_seconds)
    manifest = read_json_file(os.path.join(rdir, "manifest.json"), errors) or {}
    build = read_json_file(os.path.join(rdir, "build.json"), errors) or {}
    if syscount and not os.access(syscount, os.X_OK):
        errors.append("syscount %s is not executable here: runtime calls not counted" % syscount)
        syscount = None
    factor = speed_factor() if factor is None else factor
    count_n = max(COUNT_MIN_N, int(COUNT_N / factor))
    rows = []
    for target in discover_runtimes(rdir, manifest, build, python):
        for call, clock, native_iterations in RUNTIME_CALLS[target["runtime"]]:
            row = {"runtime": target["runtime"], "variant": target["variant"],
                   "label": target["label"], "version": target["version"],
                   "package": target["package"], "call": call, "clock": clock,
                   "status": target["status"], "reason": target["reason"], "ns": None,
                   "rounds": None, "iterations": None, "warmup": None,
                   "syscalls_per_call": None, "syscalls_by_name": None, "counted": None,
                   "count_error": None, "seconds": None}
            rows.append(row)
            if target["argv"] is None:
                continue
            start = time.monotonic()
            iterations = max(MIN_ITERATIONS, int(native_iterations / factor))
            fields, version = time_call(target["argv"], call, iterations, budget)
            row.update(fields)
            if version:
                target["version"] = version
                target["label"] = runtime_label(target)
            if row["status"] == "ok":
                row.update(count_call(syscount, target["argv"], call, count_n, budget))
            else:
                row["count_error"] = "not counted: the timing run did not succeed"
            row["seconds"] = round(time.monotonic() - start, 3)
        # What a later call learned (the version) belongs to every row of the variant.
        for row in rows:
            if row["variant"] == target["variant"] and row["runtime"] == target["runtime"]:
                row["version"], row["label"] = target["version"], target["label"]
    return rows, RUNTIMES_METHOD
