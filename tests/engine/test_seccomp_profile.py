"""The probe containers' seccomp profile (engine/seccomp.py).

Unit tests build it from a default.json of the real shape and check that exactly the two rules
are added and nothing else changes, and that every way the base can be unusable falls back to
the engine's default with a reason saying what to install. The ``engine`` tests run containers
through container_kwargs, as the backend does, and show on the real engine what the profile
allows (perf_event_open, unshare of a user+time namespace) and what it still refuses.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
from conftest import require

from vdsomatrix.engine import seccomp
from vdsomatrix.engine.container import container_kwargs, probe_confinement, run_container
from vdsomatrix.images import probe_image as images
from vdsomatrix.matrix import load_matrix

ENGINE = "20.10.24+dfsg1"
DEB = "20.10.24+dfsg1-1+deb12u1"
VERSIONS = {seccomp.BASE_PACKAGE: {"version": DEB, "source_version": DEB},
            seccomp.ENGINE_PACKAGE: {"version": DEB + "+b6", "source_version": DEB}}
# The shape of Docker's default.json, abridged: what the builder must keep as it is.
BASE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                 "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
    "syscalls": [
        {"names": ["read", "write", "getppid"], "action": "SCMP_ACT_ALLOW", "args": [],
         "comment": "", "includes": {}, "excludes": {}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "args": None, "comment": "",
         "includes": {"minKernel": "4.8"}, "excludes": {}},
        {"names": ["perf_event_open", "unshare", "mount"], "action": "SCMP_ACT_ALLOW",
         "args": [], "comment": "", "includes": {"caps": ["CAP_SYS_ADMIN"]}, "excludes": {}},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "args": [],
         "comment": "ENOSYS", "includes": {}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    ],
}


@pytest.fixture
def base_file(tmp_path) -> Path:
    path = tmp_path / "default.json"
    path.write_text(json.dumps(BASE, indent="\t"))
    return path


def make(kind="probe", *, time_namespace=False, engine=ENGINE, versions=VERSIONS, base=None):
    return seccomp.build(kind, time_namespace=time_namespace, engine_version=engine,
                         versions=versions, base_path=base or seccomp.BASE_PATH)


def test_upstream_version_drops_epoch_and_debian_revision():
    assert seccomp.upstream(DEB) == ENGINE
    assert seccomp.upstream("5:27.3.1-1~debian.12~bookworm") == "27.3.1"
    assert seccomp.upstream("20.10.24+dfsg1") == ENGINE


def test_probe_profile_adds_perf_event_open_and_nothing_else(base_file):
    profile = make(base=base_file)
    made = json.loads(profile.text)
    assert made["syscalls"][:-1] == BASE["syscalls"]
    assert made["syscalls"][-1] == {
        "names": ["perf_event_open"], "action": "SCMP_ACT_ALLOW", "args": [],
        "comment": seccomp.PERF_RULE["comment"], "includes": {}, "excludes": {}}
    assert {k: v for k, v in made.items() if k != "syscalls"} == {
        k: v for k, v in BASE.items() if k != "syscalls"}
    assert profile.identity == {
        "profile": "docker-default+perf_event_open", "base": str(base_file),
        "base_version": DEB, "engine_version": ENGINE, "added": [seccomp.PERF_RULE],
        "sha256": hashlib.sha256(profile.text.encode()).hexdigest(), "reason": None}
    assert profile.security_opt == [f"seccomp={profile.text}"]


def test_time_namespace_profile_adds_unshare_of_exactly_newuser_newtime(base_file):
    profile = make(base=base_file, time_namespace=True)
    made = json.loads(profile.text)
    assert made["syscalls"][:-2] == BASE["syscalls"]
    perf, unshare = made["syscalls"][-2:]
    assert perf["names"] == ["perf_event_open"] and perf["args"] == []
    assert unshare["names"] == ["unshare"] and unshare["action"] == "SCMP_ACT_ALLOW"
    assert unshare["args"] == [{"index": 0, "value": 0x10000080, "op": "SCMP_CMP_EQ"}]
    assert unshare["includes"] == unshare["excludes"] == {}
    assert profile.identity["profile"] == (
        "docker-default+perf_event_open+unshare(NEWUSER|NEWTIME)")
    assert profile.identity["added"] == [seccomp.PERF_RULE, seccomp.UNSHARE_TIMENS_RULE]


def test_allow_all_allows_everything_and_needs_no_base(tmp_path):
    profile = make("allow-all", base=tmp_path / "missing.json", versions={})
    assert json.loads(profile.text) == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                     "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}]}
    assert profile.identity["profile"] == "allow-all (measurement only)"
    assert profile.identity["reason"] is None and profile.identity["added"] == []


def test_unknown_kind_is_a_bug_not_a_fallback(base_file):
    with pytest.raises(ValueError):
        make("unconfined", base=base_file)


def engine_default(profile: seccomp.Profile) -> str:
    """The reason of a fallback to the engine's default profile (and that it is one)."""
    assert profile.text is None and profile.security_opt == []
    assert profile.identity["profile"] == "engine default"
    assert profile.identity["added"] == [] and profile.identity["sha256"] is None
    reason = profile.identity["reason"]
    assert "\n" not in reason and "engine's default seccomp profile" in reason
    return reason


FIX = f"`apt-get install golang-github-docker-docker-dev={DEB}`"


def test_missing_default_json_falls_back_with_the_install_command(tmp_path):
    reason = engine_default(make(base=tmp_path / "default.json"))
    assert f"{tmp_path / 'default.json'} is missing" in reason and FIX in reason


def test_package_not_installed_falls_back_with_the_install_command(base_file):
    versions = {k: v for k, v in VERSIONS.items() if k != seccomp.BASE_PACKAGE}
    reason = engine_default(make(base=base_file, versions=versions))
    assert "golang-github-docker-docker-dev (Docker's default.json) is not installed" in reason
    assert FIX in reason


def test_a_base_of_another_engine_version_is_not_used(base_file):
    old = {**VERSIONS, seccomp.BASE_PACKAGE: {"version": "20.10.5+dfsg1-1+deb11u2",
                                              "source_version": "20.10.5+dfsg1-1+deb11u2"}}
    reason = engine_default(make(base=base_file, versions=old))
    assert "20.10.5+dfsg1-1+deb11u2 is not of the engine's version 20.10.24+dfsg1" in reason
    assert FIX in reason
    # Same upstream version, another Debian revision than the installed docker.io's.
    other = {**VERSIONS, seccomp.BASE_PACKAGE: {"version": "20.10.24+dfsg1-1",
                                                "source_version": "20.10.24+dfsg1-1"}}
    reason = engine_default(make(base=base_file, versions=other))
    assert "not of the same source as docker.io" in reason and FIX in reason


def test_an_engine_that_is_not_debians_says_so(base_file):
    versions = {seccomp.BASE_PACKAGE: VERSIONS[seccomp.BASE_PACKAGE]}  # docker-ce, say
    reason = engine_default(make(base=base_file, versions=versions, engine="28.1.1"))
    assert "not of the engine's version 28.1.1" in reason
    assert "not Debian's docker.io" in reason


def test_an_engine_without_a_version_gets_its_default(base_file):
    assert "did not say its version" in engine_default(make(base=base_file, engine=None))


@pytest.mark.parametrize(
    "content,fragment",
    [(b"{" * 10, "is not JSON"),
     (b"\xff\xfe", "is not JSON"),
     (b"[]", "not an object"),
     (b'{"syscalls": []}', "no defaultAction"),
     (b'{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}', "no syscalls list"),
     (b'{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"]}]}',
      "syscalls[0] has no action"),
     (b'{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "A", "names": [1]}]}',
      "syscalls[0] has no list of names"),
     (b" " * (seccomp.MAX_BASE_BYTES + 1), "is larger than 512 KiB")],
)
def test_a_broken_default_json_falls_back(tmp_path, content, fragment):
    path = tmp_path / "default.json"
    path.write_bytes(content)
    reason = engine_default(make(base=path))
    assert fragment in reason and FIX in reason


def test_container_kwargs_pass_the_profile_inline_next_to_no_new_privileges(base_file):
    profile = make(base=base_file)
    kwargs = container_kwargs("t", "img", ["true"], lifetime=10,
                              confinement=probe_confinement(seccomp=profile.text))
    assert kwargs["security_opt"] == ["no-new-privileges", f"seccomp={profile.text}"]
    assert container_kwargs("t", "img", ["true"], lifetime=10)["security_opt"] == [
        "no-new-privileges"]


def installed_base() -> dict:
    """Docker's real default.json, as the package installs it (or skip/fail: see require)."""
    try:
        return seccomp.load_base(seccomp.BASE_PATH)
    except seccomp.BaseUnusable as exc:
        require("Docker's default seccomp profile", f"{exc}; run `bash .ci/setup-machine`")


def test_the_real_default_json_gains_only_the_added_rules():
    base = installed_base()
    made = json.loads(make(time_namespace=True, base=seccomp.BASE_PATH).text)
    assert made["syscalls"][:-2] == base["syscalls"]
    assert made == {**base, "syscalls": [*base["syscalls"], seccomp.PERF_RULE,
                                         seccomp.UNSHARE_TIMENS_RULE]}
    # Why the rules are needed: the default allows neither call without CAP_SYS_ADMIN.
    for rule in base["syscalls"]:
        if {"perf_event_open", "unshare"} & set(rule["names"]):
            assert rule["includes"].get("caps") == ["CAP_SYS_ADMIN"], rule


# ----------------------------------------------------------------------- real engine -------

# In the container, as nobody: a user-space page-fault counter of its own process (the helper's
# perf_event_attr: PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS, disabled|exclude_kernel|
# exclude_hv), and unshare() with each set of flags, in a child each.
INSIDE = r"""
import ctypes, json, os, struct
libc = ctypes.CDLL(None, use_errno=True)
out = {"uid": os.getuid()}
attr = ctypes.create_string_buffer(
    struct.pack("<IIQQQQQII", 1, 64, 2, 0, 0, 0, 1 | 1 << 5 | 1 << 6, 0, 0), 64)
fd = libc.syscall(298, attr, 0, -1, -1, 0)  # SYS_perf_event_open, x86_64
out["perf_event_open"] = "ok" if fd >= 0 else os.strerror(ctypes.get_errno())
def unshare(flags):
    pid = os.fork()
    if pid == 0:
        os._exit(0 if libc.unshare(ctypes.c_int(flags)) == 0 else ctypes.get_errno())
    _, status = os.waitpid(pid, 0)
    return "ok" if os.WEXITSTATUS(status) == 0 else os.strerror(os.WEXITSTATUS(status))
for name, flags in (("newuser", 0x10000000), ("newuser|newtime", 0x10000080),
                    ("newuser|newns", 0x10020000), ("newuser|newtime|newnet", 0x50000080)):
    out[name] = unshare(flags)
# int $0x80 (the i386 ABI) from this 64-bit process: getpid, nr 20 there. A filter that names
# only the native ABI kills it with SIGSYS.
import mmap, signal
code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
code.write(bytes.fromhex("b814000000" "cd80" "c3"))  # mov $20, %eax; int $0x80; ret
getpid80 = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(code)))
pid = os.fork()
if pid == 0:
    os._exit(0 if getpid80() == os.getpid() else 1)
_, status = os.waitpid(pid, 0)
out["int80"] = ("ok" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else
                signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else "wrong")
out["seccomp"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")]
print(json.dumps(out))
"""
EPERM = "Operation not permitted"


@pytest.fixture(scope="module")
def trixie_image(engine):
    return images.ensure_probe_image(load_matrix().suites["trixie"], client=engine)


def run_inside(engine, image, profile: seccomp.Profile) -> dict:
    run = run_container(engine, image, ["python3", "-c", INSIDE], name="test-seccomp",
                        lifetime=70, confinement=probe_confinement(seccomp=profile.text),
                        timeout=60, stdout_cap=1 << 16)
    assert run.exit_code == 0, (run.errors, run.stderr.decode(errors="replace")[-2000:])
    return json.loads(run.stdout)


def real_profile(engine, *, time_namespace: bool) -> seccomp.Profile:
    """The profile from the installed default.json, whatever engine version it is of: what the
    rules allow does not depend on it (the version check has its own tests above)."""
    installed_base()
    version = engine.version()["Version"]
    versions = {seccomp.BASE_PACKAGE: {"version": f"{version}-1", "source_version": ""}}
    profile = seccomp.build("probe", time_namespace=time_namespace, engine_version=version,
                            versions=versions)
    assert profile.text is not None, profile.identity["reason"]
    return profile


@pytest.mark.engine
@pytest.mark.slow
def test_the_probe_profile_allows_the_fault_counter_and_no_namespace(engine, trixie_image):
    inside = run_inside(engine, trixie_image, real_profile(engine, time_namespace=False))
    assert inside["uid"] == 65534 and inside["seccomp"] == ["2"]
    assert inside["perf_event_open"] == "ok" and inside["int80"] == "ok"
    for flags in ("newuser", "newuser|newtime", "newuser|newns", "newuser|newtime|newnet"):
        assert inside[flags] == EPERM, flags


@pytest.mark.engine
@pytest.mark.slow
def test_the_time_namespace_profile_allows_exactly_a_user_and_time_namespace(
        engine, trixie_image):
    inside = run_inside(engine, trixie_image, real_profile(engine, time_namespace=True))
    assert inside["uid"] == 65534 and inside["seccomp"] == ["2"]
    assert inside["perf_event_open"] == "ok"
    assert inside["newuser|newtime"] == "ok"
    for flags in ("newuser", "newuser|newns", "newuser|newtime|newnet"):
        assert inside[flags] == EPERM, flags


@pytest.mark.engine
@pytest.mark.slow
def test_the_engines_default_profile_refuses_the_counter(engine, trixie_image):
    # What containers ran with before, and still do when the base cannot be had.
    inside = run_inside(engine, trixie_image, seccomp.Profile(None))
    assert inside["seccomp"] == ["2"] and inside["perf_event_open"] == EPERM
    assert inside["newuser|newtime"] == EPERM


@pytest.mark.engine
@pytest.mark.slow
def test_allow_all_filters_nothing_but_keeps_the_rest_of_the_confinement(engine, trixie_image):
    inside = run_inside(engine, trixie_image, make("allow-all"))
    assert inside["uid"] == 65534 and inside["perf_event_open"] == "ok"
    assert inside["int80"] == "ok"  # the i386 ABI is allowed too, not killed as a foreign one
    # A filter is still installed (it allows everything): no capability came with it, so
    # what the kernel itself refuses stays refused.
    assert inside["seccomp"] == ["2"]
    assert inside["newuser|newtime"] == "ok"


def test_profiles_are_not_shared_between_builds(base_file):
    # Each build returns its own copies: changing one profile's rules leaves the next intact.
    first = make(base=base_file, time_namespace=True)
    first.identity["added"][0]["names"].append("mount")
    assert seccomp.PERF_RULE["names"] == ["perf_event_open"]
    assert json.loads(make(base=base_file).text)["syscalls"][-1]["names"] == ["perf_event_open"]
    assert copy.deepcopy(BASE) == json.loads(base_file.read_text())
