"""Time namespaces and the CPU's vulnerability facts (issue 13): the probe's
``environment.cpu_security`` and ``--time-namespace``, the guest /init's ``vdsomatrix.timens=1``,
the contract's command line, the matrix entries, and real runs: on this machine (as root and as
an unprivileged user), in a container with the probe's seccomp profile, and in QEMU guests.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fakes import load_probe

from vdsomatrix import contract
from vdsomatrix.backends.host import HostBackend
from vdsomatrix.errors import BadInput
from vdsomatrix.images import guest_init as guest
from vdsomatrix.images.guest_init import kernel_cmdline
from vdsomatrix.matrix import BackendName, Build, Environment, KernelSpec, Suite, load_matrix
from vdsomatrix.paths import probes_dir
from vdsomatrix.results import check_document

probe, _ = load_probe()

BOOKWORM = Suite("bookworm", "bookworm")
OFFSETS = {"monotonic": 10 * 86400 * 10**9, "boottime": 20 * 86400 * 10**9}
CLOCKS = ("clock_gettime(CLOCK_MONOTONIC)", "clock_gettime(CLOCK_BOOTTIME)")
VULNERABILITIES = Path("/sys/devices/system/cpu/vulnerabilities")


def qemu_env(*, time_namespace=False, build="dynamic", cmdline="", name="k6.1-timens"):
    return Environment(name=name, backend=BackendName.QEMU, userland=BOOKWORM, build=Build(build),
                       kernel=KernelSpec("bookworm"), cmdline=cmdline,
                       time_namespace=time_namespace)


def row(doc, call, path):
    (found,) = [r for r in doc["calls"] if r["call"] == call and r["path"] == path]
    return found


# --- the contract and the guest's /init ------------------------------------------------------


def test_probe_argv_appends_the_flag_only_when_asked():
    common = dict(python="python3", probe="p.py", helper="h", name="n", backend="docker",
                  budget=10)
    plain = contract.probe_argv(**common)
    assert "--time-namespace" not in plain
    assert contract.probe_argv(**common, time_namespace=True) == [*plain, "--time-namespace"]


def test_the_backend_asks_the_guest_for_a_time_namespace():
    words = kernel_cmdline(qemu_env(time_namespace=True), 180).split()
    assert words[-1] == "vdsomatrix.timens=1"
    assert "vdsomatrix.timens=1" not in kernel_cmdline(qemu_env(), 180).split()


def test_a_time_namespace_with_the_runtimes_build_is_refused():
    with pytest.raises(BadInput, match="time_namespace.*runtimes build"):
        guest.check_cmdline(qemu_env(time_namespace=True, build="runtimes"))


def _sh(script: str) -> list[str]:
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("words, expected", [
    ("vdsomatrix.timens=1", "1"),
    ("", "0"),
    ("vdsomatrix.timens=0", "0"),
    ("vdsomatrix.timens=2", "0"),
    ("vdsomatrix.timens=1x", "0"),
    ("vdsomatrix.timens=", "0"),
    ("vdsomatrix.timens=*", "0"),
    ("vdsomatrix.timens=1;reboot", "0"),
])
def test_init_reads_timens(words, expected):
    script = ("say() { :; }\ncmdline='console=ttyS0 vdsomatrix.env=k6.1 " + words + " quiet'\n"
              + guest.READ_PARAMETERS + 'echo "$timens"\n')
    assert _sh(script) == [expected]


def _init_dispatch() -> str:
    """The part of the real /init that picks the probe's command line (if ... fi)."""
    script = guest.INIT_SCRIPT
    start = script.index('if [ "$build" =')
    return script[start : script.index("\nfi\n", start) + 4]


@pytest.mark.parametrize("timens, build, flagged", [
    ("vdsomatrix.timens=1", "dynamic", True), ("", "dynamic", False),
    ("vdsomatrix.timens=1", "runtimes", False),
])
def test_the_init_runs_the_contract_command_line_with_a_time_namespace(timens, build, flagged):
    """The real /init text, its python3 replaced by a function printing its arguments."""
    script = ("say() { :; }\npython3() { printf '%s\\n' \"$@\"; }\nout=/dev/stdout\n"
              f"cmdline='vdsomatrix.env=k6.1-x vdsomatrix.build={build} "
              f"vdsomatrix.budget=42 {timens}'\n" + guest.READ_PARAMETERS + _init_dispatch())
    words = _sh(script)
    if build == "runtimes":
        assert words == contract.runtimes_argv(
            python="python3", probe=contract.PROBE_IN_IMAGE, runtimes=contract.RUNTIMES_IN_IMAGE,
            syscount=contract.SYSCOUNT_IN_IMAGE, name="k6.1-x", backend="qemu", budget=42,
            artefacts_by_digest=True)[1:]
        return
    assert words == contract.probe_argv(
        python="python3", probe=contract.PROBE_IN_IMAGE,
        helper=contract.HELPER_IN_IMAGE.format(build=build), name="k6.1-x", backend="qemu",
        budget=42, time_namespace=flagged, artefacts_by_digest=True)[1:]


def test_matrix_has_the_timens_and_mitigations_off_guests():
    matrix = load_matrix()
    timens, off, plain = (matrix.get(n) for n in ("k6.1-timens", "k6.1-nomitigations", "k6.1"))
    for env in (timens, off):
        assert (env.backend, env.kernel, env.userland) == (plain.backend, plain.kernel,
                                                           plain.userland)
        assert env.build == plain.build and env.description
    assert timens.time_namespace and timens.cmdline == "" and not plain.time_namespace
    assert off.cmdline == "mitigations=off" and not off.time_namespace


# --- cpu_security -----------------------------------------------------------------------------


@pytest.mark.parametrize("cmdline, value", [
    ("", None), ("quiet", None), ("mitigations=off", "off"),
    ("a mitigations=auto,nosmt b mitigations=off", "off"), ("xmitigations=off", None),
])
def test_mitigations_word_is_the_last_one(cmdline, value):
    assert probe.mitigations_word(cmdline) == value


def test_cpu_security_reads_are_bounded(tmp_path, monkeypatch):
    for i in range(70):
        (tmp_path / f"v{i:02d}").write_text("Mitigation: x\n")
    (tmp_path / "v00").write_text("Vulnerable" + "x" * 10000)
    monkeypatch.setattr(probe, "VULNERABILITIES", str(tmp_path))
    facts = probe.cpu_security("mitigations=off", {})
    assert len(facts["vulnerabilities"]) == probe.MAX_VULNERABILITIES
    assert len(facts["vulnerabilities"]["v00"]) == probe.SMALL_READ
    assert "70 files, only the first 64 read" in facts["vulnerabilities_reason"]
    assert facts["mitigations_cmdline"] == "off"


def test_cpu_security_without_the_folder_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "VULNERABILITIES", str(tmp_path / "missing"))
    facts = probe.cpu_security("", {})
    assert facts["vulnerabilities"] is None
    assert "predates 4.15" in facts["vulnerabilities_reason"]
    assert facts["mitigations_cmdline"] is None and facts["cmdline_source"] == "/proc/cmdline"


def own_cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo, read here independently of the probe."""
    fields = {}
    for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def test_cpu_security_on_this_machine_is_what_the_kernel_says():
    done = subprocess.run([sys.executable, str(probes_dir() / "probe.py"), "--name", "t"],
                          capture_output=True, timeout=120, check=True)
    facts = json.loads(done.stdout)["environment"]["cpu_security"]
    if VULNERABILITIES.is_dir():
        expected = {p.name: p.read_text().strip() for p in VULNERABILITIES.iterdir()}
        assert facts["vulnerabilities"] == expected and facts["vulnerabilities_reason"] is None
    else:
        assert facts["vulnerabilities"] is None and facts["vulnerabilities_reason"]
    words = [w for w in Path("/proc/cmdline").read_text().split() if w.startswith("mitigations=")]
    assert facts["mitigations_cmdline"] == (words[-1].split("=", 1)[1] if words else None)
    cpu = own_cpuinfo()
    assert facts["hypervisor"] == ("hypervisor" in cpu.get("flags", "").split())
    assert facts["cpu_vendor"] == cpu.get("vendor_id")
    assert facts["cpu_model"] == cpu.get("model name")
    assert facts["cpu_bugs"] == (cpu["bugs"].split() if "bugs" in cpu else None)


# --- the time namespace: unit tests (nothing is unshared in this process) ---------------------


def test_a_kernel_without_time_namespaces_is_a_reason_not_a_failure(monkeypatch):
    real = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: p != "/proc/self/ns/time" and real(p))
    monkeypatch.setattr(probe, "_unshare", lambda flags: pytest.fail("unshare attempted"))
    result = probe.enter_time_namespace()
    assert result["entered"] is False and result["reason"] == probe.NO_TIMENS
    assert result["requested"] is True and result["offsets_applied"] is False


def test_a_refused_unshare_is_a_reason(monkeypatch):
    tried = []

    def refuse(flags):
        tried.append(flags)
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(probe, "_unshare", refuse)
    monkeypatch.setattr(os.path, "exists", lambda p: True)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = probe.enter_time_namespace()
    assert tried == [0x10000080]  # the one form the container profile lets through
    assert result["entered"] is False
    assert result["reason"].startswith("unshare refused: EPERM")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    tried.clear()
    probe.enter_time_namespace()
    assert tried == [0x80, 0x10000080]  # root: the time namespace alone first


def test_any_failure_is_a_reason(monkeypatch):
    monkeypatch.setattr(os.path, "exists", lambda p: True)
    monkeypatch.setattr(probe, "_unshare", lambda flags: 1 / 0)
    result = probe.enter_time_namespace()
    assert not result["entered"] and "ZeroDivisionError" in result["reason"]


# --- the time namespace, for real: on this machine -------------------------------------------


def run_probe_script(argv, **kwargs) -> dict:
    done = subprocess.run(argv, capture_output=True, timeout=300, **kwargs)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout)


def check_entered(tns: dict, how: str) -> None:
    assert tns["requested"] and tns["how"] == how, tns
    assert tns["entered"] and tns["offsets_applied"] and tns["reason"] is None, tns
    assert tns["offsets_ns"] == OFFSETS
    for name, offset in OFFSETS.items():
        # The child's clock less the parent's reading before it: the offset plus start-up.
        assert offset <= tns["observed_shift_ns"][name] <= offset + tns["bracket_ns"], tns


@pytest.fixture(scope="module")
def host_helper() -> str:
    backend = HostBackend()
    env = Environment(name="host", backend=BackendName.HOST, build=Build.DYNAMIC)
    if not backend.availability(env).ok:
        pytest.fail(backend.availability(env).reason)
    backend.prepare(env, log=lambda m: None)
    return str(backend.helper_path(Build.DYNAMIC))


@pytest.mark.slow
def test_time_namespace_on_this_machine_as_root(host_helper):
    if os.geteuid() != 0:
        pytest.skip("the root path (unshare(CLONE_NEWTIME) alone) needs root")
    doc = run_probe_script([sys.executable, str(probes_dir() / "probe.py"), "--helper",
                            host_helper, "--name", "host-timens", "--time-namespace"])
    tns = doc["environment"]["time_namespace"]
    if not Path("/proc/self/ns/time").exists():
        assert not tns["entered"] and tns["reason"] == probe.NO_TIMENS
        return
    check_entered(tns, "unshare(CLONE_NEWTIME)")
    assert doc["errors"] == []
    for call in CLOCKS:
        for path in ("libc", "vdso"):
            assert row(doc, call, path)["syscalls_per_call"] == 0, (call, path)
    doc["run"] = {"status": "ok"}
    assert check_document(doc) == []


@pytest.mark.slow
def test_time_namespace_on_this_machine_unprivileged():
    """As nobody: a user namespace with the time namespace, its own ids mapped."""
    setpriv, python = shutil.which("setpriv"), "/usr/bin/python3"
    if os.geteuid() != 0 or not setpriv or not os.access(python, os.X_OK):
        pytest.skip("needs root, setpriv and /usr/bin/python3 to become nobody")
    with tempfile.TemporaryDirectory() as folder:
        for name in ("probe.py", "runtime_rows.py"):
            shutil.copy(probes_dir() / name, folder)
        os.chmod(folder, 0o755)
        doc = run_probe_script([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                                python, f"{folder}/probe.py", "--name", "t", "--time-namespace"])
    tns = doc["environment"]["time_namespace"]
    if not Path("/proc/self/ns/time").exists():
        assert tns["reason"] == probe.NO_TIMENS
    elif not tns["entered"]:  # user namespaces switched off here: said, not crashed
        assert tns["reason"].startswith("unshare refused:"), tns
    else:
        check_entered(tns, "unshare(CLONE_NEWUSER|CLONE_NEWTIME)")
        assert tns["id_map_problem"] is None


# --- the time namespace, for real: a container and QEMU guests -------------------------------


@pytest.mark.engine
@pytest.mark.slow
def test_time_namespace_in_a_container(engine):
    """trixie-timens through the docker backend: nobody, no capabilities, the profile that
    allows unshare(CLONE_NEWUSER|CLONE_NEWTIME) and nothing more."""
    from vdsomatrix.backends.docker import DockerBackend

    env = load_matrix().get("trixie-timens")
    backend = DockerBackend()
    if not backend.availability(env).ok:
        backend.prepare(env, log=lambda m: None)
    out = backend.run_probe(env, deadline=300, log=lambda m: None)
    assert out.status == "ok", (out.errors, out.log_tail)
    doc = out.document
    tns = doc["environment"].get("time_namespace")
    assert tns is not None, "the docker backend did not pass --time-namespace"
    check_entered(tns, "unshare(CLONE_NEWUSER|CLONE_NEWTIME)")
    assert tns["id_map_problem"] is None
    for call in CLOCKS:
        for path in ("libc", "vdso"):
            assert row(doc, call, path)["syscalls_per_call"] == 0, (call, path)
        assert row(doc, call, "syscall")["syscalls_per_call"] == 1  # ptrace still counts
    assert doc["environment"]["cpu_security"]["vulnerabilities"] is not None


@pytest.mark.qemu
@pytest.mark.slow
def test_real_guests_timens_and_mitigations_off(real_qemu):
    """The matrix's two guests, one after the other: the time namespace is entered by root
    (unshare(CLONE_NEWTIME) alone), and mitigations=off is what the kernel read."""
    matrix = load_matrix()
    timens = real_qemu.run_probe(matrix.get("k6.1-timens"), deadline=180, log=lambda m: None)
    assert timens.status == "ok", (timens.errors, timens.log_tail)
    doc = timens.document
    assert "vdsomatrix.timens=1" in doc["environment"]["kernel"]["cmdline"].split()
    check_entered(doc["environment"]["time_namespace"], "unshare(CLONE_NEWTIME)")
    for call in CLOCKS:
        assert row(doc, call, "vdso")["syscalls_per_call"] == 0, call

    off = real_qemu.run_probe(matrix.get("k6.1-nomitigations"), deadline=180,
                              log=lambda m: None)
    assert off.status == "ok", (off.errors, off.log_tail)
    facts = off.document["environment"]
    assert "time_namespace" not in facts
    security = facts["cpu_security"]
    assert security["mitigations_cmdline"] == "off"
    assert security["vulnerabilities"], security
    # Spectre v2 (a bug of every CPU model the guests get) is left unmitigated.
    if "spectre_v2" in (security["cpu_bugs"] or []):
        assert security["vulnerabilities"]["spectre_v2"].startswith("Vulnerable"), security
