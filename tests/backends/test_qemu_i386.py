"""32-bit kernels under QEMU (issue 12): Debian's 686-pae kernels booted with an i386 userland.

Unit tests of what the backend chooses for an i386 guest (the QEMU binary, the initramfs
exclusions, the availability of a suite without an i386 kernel), and one real boot of the
shipped ``k6.1-i386`` environment.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from conftest import require

from vdsomatrix.backends import qemu as qb
from vdsomatrix.backends.qemu import QemuBackend
from vdsomatrix.images import guest_init as guest
from vdsomatrix.images import initramfs, kernels
from vdsomatrix.images import initramfs_contents as contents
from vdsomatrix.images.initramfs import CacheKey, InitramfsCache
from vdsomatrix.matrix import BackendName, Environment, KernelSpec, Suite, load_matrix

BOOKWORM_I386 = Suite("bookworm-i386", "bookworm", "i386", "bookworm")
TRIXIE_I386 = Suite("trixie-i386", "trixie", "i386", "trixie")


def i386_env(suite: Suite = BOOKWORM_I386, cmdline: str = "", name: str = "k-i386"):
    return Environment(name=name, backend=BackendName.QEMU, userland=suite,
                       kernel=KernelSpec(suite.name, arch="i386", release=suite.release),
                       cmdline=cmdline)


def test_an_i386_kernel_boots_under_qemu_system_i386():
    backend = QemuBackend()
    assert backend.qemu_for(KernelSpec("bookworm-i386", arch="i386", release="bookworm")) == (
        "qemu-system-i386")
    assert backend.qemu_for(KernelSpec("bookworm")) == "qemu-system-x86_64"
    custom = QemuBackend(qemu="/x/q64", qemu_i386="/x/q32")
    assert custom.qemu_for(i386_env().kernel) == "/x/q32"


def test_a_missing_qemu_system_i386_makes_only_the_i386_guests_unavailable(tmp_path):
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    backend = QemuBackend(qemu=str(fake), qemu_i386="/nonexistent/qemu-system-i386")
    assert backend.can_start().ok  # the amd64 guests still run
    verdict = backend.availability(i386_env())
    assert not verdict.ok and "qemu-system-i386 not found" in verdict.reason
    assert "qemu-system-x86" in verdict.reason  # the package that has both
    out = backend.run_probe(i386_env(), deadline=5, log=lambda m: None)
    assert out.status == "failed" and "qemu-system-i386 not found" in out.errors[0]


def test_a_suite_without_an_i386_kernel_is_listed_unavailable_with_the_reason(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path))
    if not shutil.which(qb.QEMU) or not shutil.which(qb.QEMU_I386):
        pytest.skip("needs qemu-system-x86 for availability to look at the kernel")
    verdict = QemuBackend().availability(i386_env(TRIXIE_I386))
    assert not verdict.ok
    assert "bullseye and bookworm only" in verdict.reason and "trixie" in verdict.reason
    # preparing it is the same verdict, as EnvironmentUnavailable (the runner: unavailable)
    with pytest.raises(kernels.EnvironmentUnavailable, match="no i386 kernel"):
        QemuBackend().prepare(i386_env(TRIXIE_I386), log=lambda m: None)


def test_the_i386_initramfs_strips_the_i386_toolchain_and_amd64_keeps_its_recipe():
    i386 = initramfs.strip_patterns("i386")
    assert initramfs.strip_patterns() == initramfs.STRIP
    for pattern in ("usr/bin/i686-linux-gnu-*", "usr/lib/i386-linux-gnu/*.a",
                    "usr/lib/i386-linux-musl/*.a", "usr/lib/i386-linux-gnu/libisl.so*",
                    "usr/lib/gcc", "usr/bin/*gcc*"):
        assert pattern in i386
    assert not any("x86_64" in pattern for pattern in i386)
    # The whole (runtime) amd64 recipe hash is the one from before userlands had an
    # architecture and before the others were reduced: the runtime initramfs files already
    # built stay valid; the reduced ones hash their selection rules too.
    digest = hashlib.sha256()
    digest.update(f"recipe {initramfs.INITRAMFS_RECIPE}\n".encode())
    digest.update("\n".join(initramfs.STRIP).encode() + b"\n")
    digest.update(guest.INIT_SCRIPT.encode())
    assert initramfs.initramfs_recipe_hash(whole=True) == digest.hexdigest()[:12]
    digest.update(contents.recipe_text().encode())
    assert initramfs.initramfs_recipe_hash() == digest.hexdigest()[:12]
    assert initramfs.initramfs_recipe_hash("i386") != initramfs.initramfs_recipe_hash()


def test_the_i386_initramfs_is_cached_under_the_suite_name(tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path))
    key = CacheKey("bookworm-i386", "a" * 12, initramfs.initramfs_recipe_hash("i386"))
    assert CacheKey.parse(key.file_name) == key
    arches = []

    def build(client, image, dest, *, arch="amd64", whole=False, log=print):
        arches.append((image, arch))
        dest.write_bytes(b"07070100")
        return {"bytes": 8, "seconds": 0.0}

    class FakeDocker:
        images = type("Images", (), {"get": staticmethod(
            lambda tag: type("Image", (), {"id": "sha256:" + "a" * 64}))})

        def close(self):
            pass

    monkeypatch.setattr(initramfs, "build_initramfs", build)
    cache = InitramfsCache(image_for=lambda suite, rebuild, log: f"probe:{suite.name}",
                           client_factory=FakeDocker)
    path = cache.prepare(BOOKWORM_I386, log=lambda m: None)
    assert path.name == key.file_name and arches == [("probe:bookworm-i386", "i386")]
    assert json.loads(cache.pointer("bookworm-i386").read_text())["file"] == key.file_name


# --- a real boot -------------------------------------------------------------------------------


def _row(doc, call, path):
    (found,) = [r for r in doc["calls"] if r["call"] == call and r["path"] == path]
    return found


@pytest.mark.qemu
@pytest.mark.slow
def test_real_boot_of_the_32_bit_6_1_kernel(tmp_path):
    """k6.1-i386 as the matrix ships it: the probe is a native i386 process on an i686 kernel,
    int $0x80 costs one system call, and there is no vsyscall page."""
    if not shutil.which(qb.QEMU_I386):
        require("QEMU (i386)", qb.install_qemu(qb.QEMU_I386))
    env = load_matrix().get("k6.1-i386")
    backend = QemuBackend()
    try:
        backend.prepare(env, log=lambda m: None)
    except Exception as exc:  # no engine, no mirror, ...
        require("32-bit QEMU guest (i386 kernel + initramfs)", str(exc))
    out = backend.run_probe(env, deadline=240, log=lambda m: None)
    assert out.status == "ok", (out.errors, out.log_tail)
    assert out.identity["qemu"]["binary"] == "qemu-system-i386"
    assert out.identity["kernel_package"].startswith("linux-image-6.1.")
    assert "-686-pae=" in out.identity["kernel_package"]
    doc = out.document
    facts = doc["environment"]
    assert facts["abi"] == "i386"
    assert facts["kernel"]["machine"] == "i686"
    assert facts["kernel"]["release"].endswith("-686-pae")
    int80 = _row(doc, "getppid", "int80")
    assert int80["status"] == "ok" and int80["syscalls_per_call"] == 1
    assert _row(doc, "getppid", "kernel_vsyscall")["syscalls_per_call"] == 1
    assert doc["vdso"]["present"] and doc["vdso"]["kernel_vsyscall_address"]
    assert doc["vsyscall"]["mode"] == "none"
    assert _row(doc, "gettimeofday", "vsyscall")["status"] == "unsupported"
    # The 32-bit kernel's own vDSO, as the guest copied it: its symbols are objdump -T's, and
    # its __kernel_vsyscall is patched (sysenter or syscall before the int $0x80 pad).
    import base64

    from analysis_support import objdump_T

    from vdsomatrix.analysis import analyse_result

    image = base64.b64decode(doc["vdso"]["image"])
    path = tmp_path / "vdso32-guest.so"
    path.write_bytes(image)
    vdso = analyse_result(doc)["vdso"]
    assert [(s["name"], s["version"]) for s in vdso["symbols"]] == \
        [(r["name"], r["version"]) for r in objdump_T(path)]
    assert vdso["kernel_vsyscall"]["enters_with"] in ("sysenter", "syscall")


@pytest.mark.qemu
@pytest.mark.slow
def test_real_boot_with_ia32_emulation_off():
    """k6.12-ia32off: the 64-bit kernel refuses to exec a 32-bit program, and an int $0x80 from
    a 64-bit process is no system call at all there (it is counted and measured elsewhere)."""
    env = load_matrix().get("k6.12-ia32off")
    backend = QemuBackend()
    try:
        backend.prepare(env, log=lambda m: None)
    except Exception as exc:  # no engine, no mirror, ...
        require("QEMU guest (trixie kernel + initramfs)", str(exc))
    out = backend.run_probe(env, deadline=240, log=lambda m: None)
    assert out.status == "ok", (out.errors, out.log_tail)
    doc = out.document
    assert "ia32_emulation=0" in doc["environment"]["kernel"]["cmdline"].split()
    assert doc["environment"]["ia32"]["runs"] is False
    assert doc["environment"]["ia32"]["error"].startswith("ENOEXEC")
    int80 = _row(doc, "getppid", "int80")
    assert int80["status"] != "ok" or int80["syscalls_per_call"] == 0, int80
    # the way 64-bit programs enter is untouched
    assert _row(doc, "getppid", "syscall")["syscalls_per_call"] == 1
