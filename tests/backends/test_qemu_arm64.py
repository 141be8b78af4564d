"""arm64 under full-system emulation (issue 15): the infrastructure half.

Unit tests of what an arm64 guest is made of (the kernel image formats, the QEMU command, the
result port on the `virt` board, the guest's command line and /init's reading of it), of the
checks that arm64 programs can run on this host at all (qemu-user through binfmt_misc), of the
refusals (no arm64 container), and one real boot of the shipped ``k6.1-arm64`` environment.
"""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import subprocess

import pytest
from conftest import require
from elftools.elf.elffile import ELFFile

from vdsomatrix.backends import qemu as qb
from vdsomatrix.backends.docker import DockerBackend
from vdsomatrix.backends.qemu import QemuBackend, qemu_argv
from vdsomatrix.engine.guest import Guest
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.images import foreign, initramfs, kernels
from vdsomatrix.images import guest_init as guest
from vdsomatrix.images import initramfs_contents as contents
from vdsomatrix.images import probe_image as docker_images
from vdsomatrix.matrix import BackendName, Environment, KernelSpec, Suite, load_matrix

BOOKWORM_ARM64 = Suite("bookworm-arm64", "bookworm", "arm64", "bookworm")


def arm64_env(cmdline: str = "", name: str = "k-arm64") -> Environment:
    return Environment(name=name, backend=BackendName.QEMU, userland=BOOKWORM_ARM64,
                       kernel=KernelSpec("bookworm-arm64", arch="arm64", release="bookworm"),
                       cmdline=cmdline)


# --- kernel images ---------------------------------------------------------------------------

BANNER = (b"Linux version 6.1.0-50-arm64 (debian-kernel@lists.debian.org) "
          b"#1 SMP Debian 6.1.176-1\n\0")


def fake_image(body: bytes = b"") -> bytes:
    """An arm64 Image as far as its header goes (booting.rst): two code words, text offset,
    image size, flags, three reserved words, the magic at 0x38, a PE offset; then ``body``."""
    header = struct.pack("<IIQQQQQQ4sI", 0x91005A4D, 0x14000000, 0, 0x100000, 0xA, 0, 0, 0,
                         b"ARM\x64", 0x40)
    return header + body


def zboot(payload: bytes, method: bytes = b"gzip", *, size: int | None = None) -> bytes:
    """An EFI zboot image: "MZ", "zimg", payload offset and size, the compression's name."""
    offset = 0x100
    head = struct.pack("<4s4sII8s", b"MZ\0\0", b"zimg", offset, len(payload) if size is None
                       else size, bytes(8)) + method.ljust(32, b"\0")
    return head.ljust(offset, b"\0") + payload + struct.pack("<I", 12345)  # zboot's size word


def test_the_image_formats_are_told_apart():
    assert kernels.image_format(fake_image()) == "arm64-image"
    assert kernels.image_format(gzip.compress(fake_image())) == "gzip"
    assert kernels.image_format(zboot(gzip.compress(fake_image()))) == "efi-zboot"
    bzimage = bytearray(0x400)
    bzimage[0x202:0x206] = b"HdrS"
    assert kernels.image_format(bytes(bzimage)) == "bzImage"
    assert kernels.image_format(b"\x7fELF" + bytes(100)) == "unknown"


@pytest.mark.parametrize("pack, kind", [
    (lambda image: image, "arm64-image"),
    (gzip.compress, "gzip"),
    (lambda image: zboot(gzip.compress(image)), "efi-zboot"),
])
def test_every_arm64_format_becomes_the_raw_image_qemu_7_2_boots(pack, kind):
    image = fake_image(b"\0" * 4096 + BANNER)
    unpacked, found = kernels.unpack_arm64_image(pack(image))
    assert (unpacked, found) == (image, kind)


@pytest.mark.skipif(not shutil.which("zstd"), reason="needs the zstd tool")
def test_a_zstd_zboot_image_is_unpacked_with_zstd():
    image = fake_image(BANNER)
    packed = subprocess.run(["zstd", "-q", "-c"], input=image, capture_output=True,
                            check=True).stdout
    assert kernels.unpack_arm64_image(zboot(packed, b"zstd")) == (image, "efi-zboot")


@pytest.mark.parametrize("data, message", [
    (b"\x7fELF" + bytes(200), "no arm64 kernel image"),
    (zboot(b"x" * 64, b"lzma"), "compressed with 'lzma'.*only gzip, zstd"),
    (zboot(b"x" * 64, size=1 << 30), "out of the file's bounds"),
    (zboot(gzip.compress(b"not an image" * 10)), "payload is no arm64 Image"),
    (b"\x1f\x8b" + bytes(100), "not valid gzip"),
])
def test_what_is_not_a_bootable_arm64_image_is_refused_in_one_line(data, message):
    with pytest.raises(EnvironmentUnavailable, match=message) as info:
        kernels.unpack_arm64_image(data, "the vmlinuz")
    assert "\n" not in str(info.value)


def test_a_gzip_bomb_stops_at_the_image_limit(monkeypatch):
    monkeypatch.setattr(kernels, "MAX_IMAGE", 1 << 16)
    with pytest.raises(EnvironmentUnavailable, match="more than"):
        kernels.unpack_arm64_image(gzip.compress(fake_image(bytes(1 << 20))))


def test_the_banner_is_the_one_with_the_build_number(tmp_path):
    path = tmp_path / "Image"
    path.write_bytes(fake_image(b"Linux version 6.1.0-50-arm64 (x) # SMP Debian 6.1\0"
                                + bytes(64) + BANNER))
    assert kernels.image_banner(path) == (
        "6.1.0-50-arm64 (debian-kernel@lists.debian.org) #1 SMP Debian 6.1.176-1")
    path.write_bytes(fake_image(bytes(64)))
    assert kernels.image_banner(path) == ""


def test_an_arm64_kernel_needs_the_pl011_console_and_a_pci_16550_built_in():
    required = kernels.required_builtins("arm64")
    for symbol in ("CONFIG_SERIAL_AMBA_PL011", "CONFIG_SERIAL_AMBA_PL011_CONSOLE",
                   "CONFIG_SERIAL_8250", "CONFIG_SERIAL_8250_PCI", "CONFIG_PCI_HOST_GENERIC",
                   "CONFIG_BLK_DEV_INITRD", "CONFIG_DEVTMPFS"):
        assert symbol in required
    assert kernels.required_builtins("amd64") == kernels.REQUIRED_BUILTINS
    config = "\n".join(f"{s}=y" for s in required if s != "CONFIG_SERIAL_8250_PCI")
    assert kernels.missing_builtins(config + "\nCONFIG_SERIAL_8250_PCI=m\n", required) == [
        "CONFIG_SERIAL_8250_PCI"]


def test_linux_image_arm64_resolves_to_the_arm64_flavour():
    paragraphs = kernels.parse_paragraphs(
        "Package: linux-image-arm64\nVersion: 6.1.176-1\n"
        "Depends: linux-image-6.1.0-50-arm64 (= 6.1.176-1)\n\n"
        "Package: linux-image-6.1.0-50-arm64\nVersion: 6.1.176-1\n")
    assert kernels.resolve_kernel_package(paragraphs, "linux-image-arm64", "arm64") == (
        "linux-image-6.1.0-50-arm64", "6.1.176-1")
    split = kernels.parse_paragraphs(
        "Package: linux-image-7.2.13+deb14-arm64\nVersion: 7.2.13-1\n"
        "Depends: linux-binary-7.2.13+deb14-arm64 (= 7.2.13-1), "
        "linux-base-7.2.13+deb14-arm64 (= 7.2.13-1)\n")
    assert kernels.payload_packages(split, "linux-image-7.2.13+deb14-arm64", "7.2.13-1",
                                    "arm64")[1:] == [
        ("linux-binary-7.2.13+deb14-arm64", "7.2.13-1"),
        ("linux-base-7.2.13+deb14-arm64", "7.2.13-1")]


# --- the guest -------------------------------------------------------------------------------


def test_an_arm64_guest_is_the_virt_board_with_its_result_port_on_pci(tmp_path):
    work = tmp_path / "a,b"  # a comma would end the chardev's path
    argv = qemu_argv(qemu="qemu-system-aarch64", accel="tcg", vmlinuz=work / "Image",
                     initrd=work / "i.cpio", append="console=ttyAMA0", console=work / "c.log",
                     result=work / "r.log", arch="arm64")
    joined = " ".join(argv)
    assert argv[1:3] == ["-machine", "virt"]
    assert argv[argv.index("-cpu") + 1] == "max,pauth-impdef=on"
    for part in ("-nodefaults", "-no-reboot", "-nic none", "-accel tcg", "-smp 1"):
        assert part in joined
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"] == [f"file:{work}/c.log"]
    chardev = argv[argv.index("-chardev") + 1]
    assert chardev == f"file,id=result,path={tmp_path}/a,,b/r.log"
    assert argv[argv.index("-device") + 1] == "pci-serial,chardev=result"
    # the x86 guests are as they were: two serial ports, no machine option
    x86 = qemu_argv(qemu="qemu-system-x86_64", accel="tcg", vmlinuz=work / "v", initrd=None,
                    append="", console=work / "c.log", result=work / "r.log")
    assert "-machine" not in x86 and "-chardev" not in x86 and x86.count("-serial") == 2
    assert x86[x86.index("-cpu") + 1] == "max"


def test_the_arm64_command_line_names_its_console_and_result_port():
    words = guest.kernel_cmdline(arm64_env("nokaslr"), 100).split()
    assert words[0] == "console=ttyAMA0"
    assert "vdsomatrix.port=ttyS0" in words and "nokaslr" in words
    x86 = guest.kernel_cmdline(Environment(
        name="k", backend=BackendName.QEMU, userland=Suite("bookworm", "bookworm"),
        kernel=KernelSpec("bookworm")), 100).split()
    assert x86[0] == "console=ttyS0" and not any(w.startswith("vdsomatrix.port=") for w in x86)
    with pytest.raises(guest.BadInput, match="set by the qemu backend"):
        guest.kernel_cmdline(arm64_env("vdsomatrix.port=ttyS1"), 100)


def _port(cmdline: str) -> str:
    script = ("say() { :; }\ncmdline='" + cmdline + "'\n" + guest.READ_PARAMETERS
              + 'echo "$port"\n')
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("words, port", [
    ("", "ttyS1"),
    ("vdsomatrix.port=ttyS0", "ttyS0"),
    ("vdsomatrix.port=ttyAMA0", "ttyAMA0"),
    ("vdsomatrix.port=hvc0", "hvc0"),
    ("vdsomatrix.port=../sda", "ttyS1"),
    ("vdsomatrix.port=ttyS10", "ttyS1"),
    ("vdsomatrix.port=ttyS0;reboot", "ttyS1"),
    ("vdsomatrix.port=*", "ttyS1"),
])
def test_init_writes_only_to_a_tty_it_knows(words, port):
    assert _port(f"console=ttyAMA0 {words} quiet") == port


def test_an_arm64_kernel_boots_under_qemu_system_aarch64():
    backend = QemuBackend()
    assert backend.qemu_for(arm64_env().kernel) == "qemu-system-aarch64"
    assert QemuBackend(qemu_aarch64="/x/qa").qemu_for(arm64_env().kernel) == "/x/qa"


def test_a_missing_qemu_system_aarch64_makes_only_the_arm64_guests_unavailable(tmp_path):
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    backend = QemuBackend(qemu=str(fake), qemu_aarch64="/nonexistent/qemu-system-aarch64")
    assert backend.can_start().ok
    verdict = backend.availability(arm64_env())
    assert not verdict.ok and "qemu-system-aarch64 not found" in verdict.reason
    assert "install qemu-system-arm" in verdict.reason
    out = backend.run_probe(arm64_env(), deadline=5, log=lambda m: None)
    assert out.status == "failed" and "install qemu-system-arm" in out.errors[0]


def test_without_qemu_user_an_arm64_guest_still_to_be_built_says_what_to_install(
        tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "qemu-system-aarch64"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setattr(foreign, "emulation_support", lambda arch: (
        False, "this x86_64 machine cannot run arm64 programs; install qemu-user-static"))
    backend = QemuBackend(qemu=str(fake), qemu_aarch64=str(fake))
    verdict = backend.availability(arm64_env())
    assert not verdict.ok
    assert verdict.reason.startswith("cannot build the bookworm-arm64 userland: ")
    assert "install qemu-user-static" in verdict.reason
    # once its initramfs is built, the guest boots without qemu-user
    monkeypatch.setattr(backend.initramfs, "cached", lambda suite, runtimes=False: tmp_path)
    assert "qemu-user" not in backend.availability(arm64_env()).reason


def test_the_arm64_initramfs_keeps_aarch64_libraries_and_strips_its_toolchain():
    patterns = initramfs.strip_patterns("arm64")
    for pattern in ("usr/bin/aarch64-linux-gnu-*", "usr/lib/aarch64-linux-gnu/*.a",
                    "usr/lib/aarch64-linux-musl/*.a", "usr/lib/aarch64-linux-gnu/libisl.so*"):
        assert pattern in patterns
    assert not any("x86_64" in pattern for pattern in patterns)
    assert contents.LIBRARY_DIRS["arm64"][:2] == ("lib/aarch64-linux-gnu",
                                                  "usr/lib/aarch64-linux-gnu")


# --- arm64 programs on this host: qemu-user ---------------------------------------------------


def test_the_arm64_check_program_is_an_aarch64_exit0():
    elf = ELFFile(io.BytesIO(foreign.AARCH64_EXIT0))
    assert elf["e_machine"] == "EM_AARCH64" and elf["e_type"] == "ET_EXEC"
    (segment,) = list(elf.iter_segments())
    assert segment["p_type"] == "PT_LOAD" and segment["p_filesz"] == len(foreign.AARCH64_EXIT0)
    code = foreign.AARCH64_EXIT0[elf["e_entry"] - segment["p_vaddr"]:]
    # mov x0, #0; mov x8, #93 (exit); svc #0
    assert struct.unpack("<III", code) == (0xD2800000, 0xD2800BA8, 0xD4000001)


def test_only_a_foreign_architecture_needs_emulation(monkeypatch):
    monkeypatch.setattr(foreign, "host_machine", lambda: "x86_64")
    assert not foreign.emulated("amd64") and not foreign.emulated("i386")
    assert foreign.emulated("arm64")
    monkeypatch.setattr(foreign, "host_machine", lambda: "aarch64")
    assert not foreign.emulated("arm64") and foreign.emulated("amd64")


def test_without_qemu_user_arm64_userlands_cannot_be_built_and_say_what_to_install(
        monkeypatch, tmp_path):
    monkeypatch.setattr(foreign, "host_machine", lambda: "x86_64")
    monkeypatch.setattr(foreign, "BINFMT", tmp_path / "no-binfmt")
    monkeypatch.setattr(foreign, "_run", lambda folder, program: (
        False, "the kernel refuses to exec them (Exec format error)"))
    foreign.emulation_support.cache_clear()
    try:
        runs, why = foreign.emulation_support("arm64")
        assert not runs
        assert "cannot run arm64 programs" in why and "binfmt_misc is not mounted" in why
        assert "qemu-user-static" in why and "setup-machine" in why and "\n" not in why
        with pytest.raises(EnvironmentUnavailable, match="qemu-user-static"):
            docker_images.ensure_probe_image(BOOKWORM_ARM64, client=_NoImages(),
                                             log=lambda m: None)
        monkeypatch.setattr(docker_images, "built_status", lambda *a, **k: (
            False, f"{docker_images.NOT_BUILT} (x missing)"))
        built, reason = docker_images.image_status(BOOKWORM_ARM64)
        assert not built and "qemu-user-static" in reason
        assert foreign.emulation_support("i386") == (True, "")
    finally:
        foreign.emulation_support.cache_clear()


class _NoImages:
    class images:  # noqa: N801 (the SDK's attribute name)
        @staticmethod
        def get(tag):
            import docker.errors

            raise docker.errors.ImageNotFound(tag)


def test_a_binfmt_entry_without_the_f_flag_is_named(monkeypatch, tmp_path):
    """Without F, the kernel looks for the interpreter inside the chroot or container."""
    (tmp_path / "status").write_text("enabled\n")
    (tmp_path / "qemu-aarch64").write_text(
        "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: OC\noffset 0\n"
        "magic 7f454c460201010000000000000000000200b700\n"
        "mask ffffffffffffff00fffffffffffffffffeffffff\n")
    (tmp_path / "qemu-arm").write_text(  # another machine's entry: never named
        "enabled\ninterpreter /usr/bin/qemu-arm\nflags: \noffset 0\n"
        "magic 7f454c4601010100000000000000000002002800\n"
        "mask ffffffffffffff00fffffffffffffffffeffffff\n")
    monkeypatch.setattr(foreign, "BINFMT", tmp_path)
    assert foreign._registered_without_fix(foreign.AARCH64_EXIT0[:20]) == ["qemu-aarch64"]
    fixed = (tmp_path / "qemu-aarch64").read_text().replace("flags: OC", "flags: POCF")
    (tmp_path / "qemu-aarch64").write_text(fixed)
    assert foreign._registered_without_fix(foreign.AARCH64_EXIT0[:20]) == []


def test_a_docker_environment_of_an_arm64_suite_is_never_run():
    env = Environment(name="bookworm-arm64", backend=BackendName.DOCKER, userland=BOOKWORM_ARM64)
    with pytest.raises(EnvironmentUnavailable, match="qemu-user.*qemu guests only"):
        DockerBackend(ia32_check=lambda: (True, ""))._check_arch(env)


# --- a real arm64 guest ----------------------------------------------------------------------


@pytest.mark.qemu
@pytest.mark.slow
def test_real_boot_of_the_arm64_6_1_kernel(tmp_path):
    """k6.1-arm64 as the matrix ships it: Debian's arm64 kernel on the virt board under TCG,
    the probe an aarch64 process of the bookworm arm64 userland, its result out through the
    PCI 16550."""
    if not shutil.which(qb.QEMU_AARCH64):
        require("QEMU (aarch64)", qb.install_qemu(qb.QEMU_AARCH64))
    runs, why = foreign.emulation_support("arm64")
    if not runs:
        require("arm64 userland builds (qemu-user)", why)
    env = load_matrix().get("k6.1-arm64")
    backend = QemuBackend()
    try:
        backend.prepare(env, log=lambda m: None)
    except Exception as exc:  # no engine, no mirror, ...
        require("arm64 QEMU guest (arm64 kernel + initramfs)", str(exc))
    out = backend.run_probe(env, deadline=backend.default_deadline, log=lambda m: None)
    assert out.status == "ok", (out.errors, out.log_tail)
    assert out.identity["accel"] == "tcg"
    assert out.identity["qemu"]["binary"] == "qemu-system-aarch64"
    assert out.identity["kernel_package"].startswith("linux-image-6.1.")
    assert "-arm64=" in out.identity["kernel_package"]
    facts = out.document["environment"]
    assert facts["abi"] == "aarch64"  # the helper is an aarch64 program
    assert facts["kernel"]["machine"] == "aarch64"
    assert facts["kernel"]["release"].endswith("-arm64")
    assert "console=ttyAMA0" in facts["kernel"]["cmdline"].split()
    assert out.document["vdso"]["present"]
    kernel = kernels.cached_kernel(env.kernel)
    assert kernel.image_format == "arm64-image" and "#1 SMP" in kernel.version_string
    # No initramfs: the arm64 kernel panics, and that is a crashed row with the console tail.
    with Guest("panic", folder=tmp_path) as vm:
        argv = qemu_argv(qemu=qb.QEMU_AARCH64, accel="tcg", vmlinuz=kernel.vmlinuz,
                         initrd=None, append="console=ttyAMA0 panic=-1", console=vm.console,
                         result=vm.result, arch="arm64")
        crashed = backend._boot(vm, argv, deadline=120)
    assert crashed.status == "crashed", (crashed.errors, crashed.log_tail)
    assert "panicked" in crashed.errors[-1] and crashed.log_tail


FAKE_AARCH64 = """#!{python}
import hashlib, sys
argv = sys.argv[1:]
console = [argv[i + 1][len("file:"):] for i, a in enumerate(argv) if a == "-serial"][0]
chardev = argv[argv.index("-chardev") + 1]
assert argv[argv.index("-device") + 1] == "pci-serial,chardev=result"
path = chardev.split(",path=", 1)[1].replace(",,", ",")  # QEMU's unescaping
open(console, "ab").write(b"Booting Linux on physical CPU 0x0000000000 [0x000f0510]\\r\\n")
payload = b'{{"schema": "vdsomatrix/1", "environment": {{"name": "fake-arm64"}}}}\\n'
with open(path, "ab") as port:
    port.write(b"VDSOMATRIX-BEGIN v1 rc=0 len=%d sha256=%s\\n" % (
        len(payload), hashlib.sha256(payload).hexdigest().encode()))
    port.write(payload + b"\\nVDSOMATRIX-END\\n")
"""


def test_the_result_comes_through_the_pci_serial_file(tmp_path):
    """The backend reads the frame from the chardev's file (a comma in its path included)."""
    import sys

    fake = tmp_path / "qemu-system-aarch64"
    fake.write_text(FAKE_AARCH64.format(python=sys.executable))
    fake.chmod(0o755)
    with Guest("work,1", folder=tmp_path) as vm:
        assert "," in str(vm.result)
        argv = qemu_argv(qemu=str(fake), accel="tcg", vmlinuz=vm.work / "Image", initrd=None,
                         append="", console=vm.console, result=vm.result, arch="arm64")
        out = QemuBackend(qemu_aarch64=str(fake))._boot(vm, argv, 20.0)
    assert out.status == "ok", (out.errors, out.log_tail)
    assert out.document["environment"]["name"] == "fake-arm64"


def test_images_builds_the_suites_only_guests_boot(monkeypatch):
    """`vdsomatrix images` (nox -s images) covers the arm64 suites, which no container runs,
    by preparing one of their guests; a suite with containers is prepared as a container."""
    from vdsomatrix import cli, runner
    from vdsomatrix.backends.base import Availability

    prepared = []
    monkeypatch.setattr(runner, "prepare", lambda env, rebuild, log: prepared.append(env))
    monkeypatch.setattr(cli, "get_backend", lambda name: type(
        "Gate", (), {"can_start": lambda self: Availability(True)})())
    assert cli.main(["images", "--jobs", "1", "--suite", "bookworm-arm64", "--suite",
                     "sid-arm64", "--suite", "bookworm"]) == 0
    by_suite = {env.suite: env for env in prepared}
    assert set(by_suite) == {"bookworm-arm64", "sid-arm64", "bookworm"}
    assert by_suite["bookworm-arm64"].backend == "qemu" and not by_suite["sid-arm64"].runtimes
    assert by_suite["bookworm"].backend == "docker"
