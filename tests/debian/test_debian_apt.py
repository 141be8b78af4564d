"""The private apt client (src/vdsomatrix/debian/apt.py): its configuration keeps apt's state
and sources private, and apt-get (here a stand-in on PATH) is run bounded, with one-line errors.
The real archive is used by the kernel and runtime-image integration tests."""

from __future__ import annotations

import sys
import time

import pytest

from vdsomatrix.debian import apt

# A stand-in for apt-get: records its arguments, answers update, -s install, -d install and
# download the way apt does (files named name_version_arch.deb), or fails as told.
FAKE_APT_GET = f"""#!{sys.executable}
import os, sys, time
from pathlib import Path
args = sys.argv[1:]
Path(os.environ["FAKE_APT_LOG"]).open("a").write(" ".join(args) + "\\n")
mode = os.environ.get("FAKE_APT_MODE", "")
if mode == "fail":
    print("Err:1 http://mirror.invalid/debian sid InRelease", file=sys.stderr)
    print("E: The repository 'http://mirror.invalid/debian sid InRelease' is not signed.",
          file=sys.stderr)
    sys.exit(100)
if mode == "hang":
    time.sleep(60)
options = dict(a.split("=", 1) for a in args if "=" in a and "::" in a)
conf = Path(args[args.index("-c") + 1])
if "update" in args:
    lists = conf.parent / "lists"
    (lists / "mirror.invalid_debian_dists_sid_main_binary-amd64_Packages").write_text("x")
elif "-s" in args:
    print("NOTE: This is only a simulation!")
    print("Inst libfoo1 (1.0-1 Debian:unstable [amd64])")
    print("Inst default-jre-headless (2:1.25-77 Debian:unstable [all])")
elif "-d" in args:
    into = Path(options["Dir::Cache::archives"])
    for name in ("libfoo1_1.0-1_amd64.deb", "default-jre-headless_2%3a1.25-77_all.deb"):
        (into / name).write_text("deb")
elif "download" in args:
    for ref in args[args.index("download") + 1:]:
        name, version = ref.split("=")
        Path(f"{{name}}_{{version.replace(':', '%3a')}}_amd64.deb").write_text("deb")
"""


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(FAKE_APT_GET)
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_APT_LOG", str(tmp_path / "calls"))
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"")
    client = apt.PrivateApt("sid", mirror="http://mirror.invalid/debian/", keyring=keyring)
    client.calls = tmp_path / "calls"
    return client


def test_the_configuration_clears_hooks_and_keeps_state_private(tmp_path):
    text = apt.apt_conf(tmp_path)
    assert "#clear APT::Update::Post-Invoke;" in text
    assert f'Dir::State::lists "{tmp_path}/lists";' in text
    assert f'Dir::State::status "{tmp_path}/status";' in text
    assert 'Acquire::Check-Valid-Until "false";' in text
    assert 'Acquire::GzipIndexes "false";' in text  # the index is read as plain bytes
    assert "Translation" not in text


def test_the_configuration_reads_the_index_of_one_architecture(tmp_path):
    assert 'APT::Architecture "amd64";' in apt.apt_conf(tmp_path)
    text = apt.apt_conf(tmp_path, "i386")
    assert 'APT::Architecture "i386";' in text and 'APT::Architectures { "i386"; };' in text
    assert "amd64" not in text
    # The index is still read through apt's Release check: binary-$(ARCHITECTURE)/Packages.
    assert 'MetaKey "$(COMPONENT)/binary-$(ARCHITECTURE)/Packages";' in text


def test_the_state_is_per_suite_and_architecture_and_signed_by_the_keyring(fake_apt, tmp_path):
    assert fake_apt.root == tmp_path / "cache" / "apt" / "sid-amd64"
    fake_apt.update()
    assert (fake_apt.root / "sources.list").read_text() == (
        f"deb [signed-by={fake_apt.keyring}] http://mirror.invalid/debian sid main\n")
    assert fake_apt.packages_index().name.endswith("_dists_sid_main_binary-amd64_Packages")
    assert fake_apt.calls.read_text().split()[-1] == "update"


def test_download_install_resolves_against_the_status_and_fills_the_cache(fake_apt, tmp_path):
    status = tmp_path / "status"
    status.write_text("Package: libc6\nStatus: install ok installed\n")
    into = tmp_path / "cache" / "debs" / "sid" / "runtimes"
    debs = fake_apt.download_install(["default-jre-headless"], status, into)
    assert debs == ["libfoo1_1.0-1_amd64.deb", "default-jre-headless_2%3a1.25-77_all.deb"]
    calls = fake_apt.calls.read_text().splitlines()
    assert len(calls) == 2 and " -s install " in calls[0] and " -y -d install " in calls[1]
    assert all(f"Dir::State::status={status}" in call for call in calls)


def test_download_fetches_exact_versions_into_the_folder(fake_apt, tmp_path):
    into = tmp_path / "kernels"
    files = fake_apt.download([("linux-image-6.1.0-50-amd64", "6.1.176-1")], into)
    assert files == [into / "linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb"]
    assert "download linux-image-6.1.0-50-amd64=6.1.176-1" in fake_apt.calls.read_text()


def test_a_failure_is_one_line_saying_what_to_check(fake_apt, monkeypatch):
    monkeypatch.setenv("FAKE_APT_MODE", "fail")
    with pytest.raises(apt.AptFailed) as info:
        fake_apt.update()
    message = str(info.value)
    assert "apt-get update of sid amd64 from http://mirror.invalid/debian failed" in message
    assert "is not signed" in message and "check the mirror" in message
    assert "\n" not in message
    with pytest.raises(apt.AptFailed, match="no amd64 Packages index of sid"):
        fake_apt.packages_index()


def test_apt_runs_to_a_deadline(fake_apt, monkeypatch):
    monkeypatch.setenv("FAKE_APT_MODE", "hang")
    fake_apt.timeout = 1.0
    started = time.monotonic()
    with pytest.raises(apt.AptFailed, match="took longer than 1 s"):
        fake_apt.update()
    assert time.monotonic() - started < 10
