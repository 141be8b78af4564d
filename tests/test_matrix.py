"""The matrix file: the real one loads; every malformed entry is a clear BadInput."""

import pytest

from vdsomatrix.errors import BadInput
from vdsomatrix.matrix import load_matrix, parse_matrix


def test_real_matrix_loads_with_host_first():
    matrix = load_matrix()
    names = list(matrix.environments)
    assert names[0] == "host"
    for suite in matrix.suites:
        for suffix in ("", "-static", "-musl"):
            if f"{suite}{suffix}" in names:
                assert matrix.environments[f"{suite}{suffix}"].backend == "docker"
    assert matrix.suites["forky"].script == "sid"


def test_unknown_environment_says_what_to_run():
    with pytest.raises(BadInput, match="vdsomatrix list"):
        load_matrix().get("no-such-env")


BASE = {"suites": {"bookworm": {}}, "environment": [{"name": "host", "backend": "host"}]}


@pytest.mark.parametrize(
    "raw,message",
    [
        ({}, "no environments"),
        ({"bogus": 1, **BASE}, "unknown table"),
        ({"suites": {"Bad Name": {}}, "environment": []}, "lower-case"),
        ({"suites": {"bookworm": {"script": 3}}}, "debootstrap script"),
        ({"suites": {"bookworm": {"mirror": "x"}}}, "unknown key"),
        ({"environment": [{"name": "x", "backend": "podman"}]}, "backend"),
        ({"environment": [{"name": "Has Space", "backend": "host"}]}, "name"),
        ({"environment": [{"backend": "host"}]}, "name"),
        ({"environment": [{"name": "a", "backend": "host"}, {"name": "a", "backend": "host"}]},
         "defined twice"),
        ({"environment": [{"name": "a", "backend": "host", "build": "dietlibc"}]}, "build"),
        ({"environment": [{"name": "a", "backend": "docker", "suite": "jessie"}]}, "suite"),
        ({**BASE, "environment": [{"name": "k", "backend": "qemu", "suite": "bookworm"}]},
         "kernel"),
        ({**BASE, "environment": [{"name": "k", "backend": "qemu", "suite": "bookworm",
                                   "kernel": "bookworm", "cmdline": "a;reboot"}]},
         "not allowed"),
        ({**BASE, "environment": [{"name": "k", "backend": "docker", "suite": "bookworm",
                                   "cmdline": "vdso=0"}]}, "qemu backend only"),
        ({**BASE, "docker_grid": [{"suites": ["bookworm"], "builds": ["x"]}]}, "build"),
        ({**BASE, "docker_grid": [{"suites": []}]}, "non-empty"),
        ({**BASE, "docker_grid": {"suites": ["bookworm"]}}, "array of tables"),
        ({**BASE, "environment": [{"name": "h", "backend": "host", "suite": "bookworm"}]},
         "takes no suite"),
        ({**BASE, "docker_grid": [{"suites": [["bookworm"]]}]}, "is not one of"),
        ({**BASE, "docker_grid": [{"suites": ["bookworm"], "builds": [["static"]]}]},
         "is not one of"),
        ({"environment": [{"name": "host\n", "backend": "host"}]}, "name"),
        ({"environment": [{"name": "h", "backend": ["host"]}]}, "must be a string"),
    ],
)
def test_malformed_entries(raw, message):
    with pytest.raises(BadInput, match=message):
        parse_matrix(raw)


def test_cmdline_words_are_normalised():
    m = parse_matrix({**BASE, "environment": [
        {"name": "k", "backend": "qemu", "suite": "bookworm", "kernel": "bookworm",
         "cmdline": "  vsyscall=emulate   clocksource=hpet "}]})
    assert m.environments["k"].cmdline == "vsyscall=emulate clocksource=hpet"


def test_environments_are_resolved_for_the_backends():
    m = parse_matrix({"suites": {"forky": {"script": "sid"}}, "environment": [
        {"name": "k", "backend": "qemu", "suite": "forky", "kernel": "forky"}],
        "docker_grid": [{"suites": ["forky"], "builds": ["musl"]}]})
    guest, container = m.environments["k"], m.environments["forky-musl"]
    assert guest.userland.script == "sid" and guest.kernel.suite == "forky"
    assert container.userland.script == "sid" and container.build == "musl"
    assert container.backend == "docker" and container.kernel is None


def test_runtime_environments_are_a_build_of_their_own():
    m = parse_matrix({**BASE, "docker_grid": [{"suites": ["bookworm"], "builds": ["runtimes"]}],
                      "environment": [
                          {"name": "h", "backend": "host", "build": "runtimes"},
                          {"name": "k", "backend": "qemu", "suite": "bookworm",
                           "kernel": "bookworm", "build": "runtimes", "cmdline": "vdso=0"}]})
    container, host, guest = (m.environments[n] for n in ("bookworm-runtimes", "h", "k"))
    assert all(env.runtimes for env in (container, host, guest))
    assert (container.tags, host.tags, guest.tags) == (
        ["docker", "runtimes"], ["host", "runtimes"], ["qemu", "runtimes"])
    plain = parse_matrix({**BASE, "docker_grid": [{"suites": ["bookworm"]}]})
    assert not plain.environments["bookworm"].runtimes
    assert plain.environments["bookworm"].tags == ["docker"]


def test_the_shipped_matrix_has_the_runtime_environments_the_report_compares():
    m = load_matrix()
    runtimes = {name for name, env in m.environments.items() if env.runtimes}
    # the host, a container of every suite, and 6.1 with and without a usable vDSO clock
    assert {"host-runtimes", "k6.1-runtimes", "k6.1-vdso0-runtimes", "k6.1-hpet-runtimes"
            } <= runtimes
    assert {f"{suite}-runtimes" for suite in m.suites} <= runtimes


def test_file_errors(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_matrix(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[environment]\nname=")
    with pytest.raises(BadInput, match="not valid TOML"):
        load_matrix(bad)

    with pytest.raises(BadInput, match="is a folder"):
        load_matrix(tmp_path)
    unreadable = tmp_path / "secret.toml"
    unreadable.write_text("")
    unreadable.chmod(0)
    import os

    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(BadInput, match="not readable"):
            load_matrix(unreadable)
