"""The matrix file: the real one loads; every malformed entry is a clear BadInput."""

import pytest

from vdsomatrix.errors import BadInput
from vdsomatrix.matrix import KernelSpec, load_matrix, parse_matrix


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
I386 = {"suites": {"bookworm": {}, "bookworm-i386": {"release": "bookworm", "arch": "i386"}},
        "environment": [{"name": "host", "backend": "host"}]}


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
        ({"suites": {"bookworm-riscv": {"arch": "riscv64"}}},
         r"`arch` must be one of: amd64, i386, arm64 \(got 'riscv64'\)"),
        ({"suites": {"bookworm-i386": {"arch": 32}}}, "`arch` must be one of"),
        ({"suites": {"b-i386": {"release": "Bookworm"}}}, "`release` must be a Debian codename"),
        ({"suites": {"b-i386": {"release": 12}}}, "`release` must be a Debian codename"),
        ({**I386, "docker_grid": [{"suites": ["bookworm-i386"], "builds": ["runtimes"]}]},
         "runtimes build is for amd64 suites only"),
        ({**I386, "environment": [{"name": "r", "backend": "docker", "suite": "bookworm-i386",
                                   "build": "runtimes"}]}, "runtimes build is for amd64"),
        ({**I386, "environment": [{"name": "k", "backend": "qemu", "suite": "bookworm-i386",
                                   "kernel": "bookworm"}]},
         "kernel of 'bookworm' is amd64 but the userland 'bookworm-i386' is i386.*name an i386"),
        ({**I386, "environment": [{"name": "k", "backend": "qemu", "suite": "bookworm",
                                   "kernel": "bookworm-i386"}]},
         "kernel of 'bookworm-i386' is i386 but the userland 'bookworm' is amd64"),
        ({**I386, "environment": [{"name": "k", "backend": "qemu", "suite": "bookworm-i386",
                                   "kernel": "bookworm-i386", "build": "runtimes"}]},
         "runtimes build is for amd64"),
    ],
)
def test_malformed_entries(raw, message):
    with pytest.raises(BadInput, match=message) as info:
        parse_matrix(raw)
    assert "\n" not in str(info.value)


def test_suites_have_an_arch_and_a_release():
    m = parse_matrix({**I386, "suites": {**I386["suites"], "forky-i386": {
        "release": "forky", "arch": "i386", "script": "sid"}},
        "docker_grid": [{"suites": ["bookworm-i386", "forky-i386"],
                         "builds": ["dynamic", "static", "musl"]}]})
    plain, i386 = m.suites["bookworm"], m.suites["bookworm-i386"]
    assert (plain.arch, plain.release, plain.script) == ("amd64", "bookworm", "bookworm")
    # the script defaults to the release, not to the matrix's name for the suite
    assert (i386.arch, i386.release, i386.script) == ("i386", "bookworm", "bookworm")
    assert m.suites["forky-i386"].script == "sid"
    assert {"bookworm-i386", "bookworm-i386-static", "bookworm-i386-musl",
            "forky-i386-musl"} <= set(m.environments)
    assert m.environments["bookworm-i386-static"].arch == "i386"
    assert m.environments["host"].arch == "amd64"


def test_a_suite_without_release_is_its_own_release():
    from vdsomatrix.matrix import Suite

    assert Suite("bookworm", "bookworm").release == "bookworm"
    assert Suite("bookworm", "bookworm") == Suite("bookworm", "bookworm", "amd64", "bookworm")


def test_the_shipped_matrix_has_i386_containers_of_every_suite():
    m = load_matrix()
    codenames = ["bullseye", "bookworm", "trixie", "forky", "sid"]
    for codename in codenames:
        suite = m.suites[f"{codename}-i386"]
        assert (suite.arch, suite.release) == ("i386", codename)
        assert suite.script == m.suites[codename].script
        for suffix in ("", "-static", "-musl"):
            env = m.environments[f"{codename}-i386{suffix}"]
            assert env.backend == "docker" and env.arch == "i386"
        assert f"{codename}-i386-runtimes" not in m.environments
    assert m.environments["host"].arch == "amd64"


def test_an_i386_guest_boots_the_i386_kernel_of_its_kernel_suite():
    m = parse_matrix({**I386, "environment": [
        {"name": "k", "backend": "qemu", "suite": "bookworm-i386", "kernel": "bookworm-i386",
         "cmdline": "vdso32=0"}]})
    guest = m.environments["k"]
    assert guest.arch == "i386" and guest.cmdline == "vdso32=0"
    assert guest.kernel == KernelSpec("bookworm-i386", "linux-image-686-pae", "i386", "bookworm")
    amd64 = parse_matrix({**BASE, "environment": [
        {"name": "k", "backend": "qemu", "suite": "bookworm", "kernel": "bookworm"}]})
    assert amd64.environments["k"].kernel == KernelSpec("bookworm", "linux-image-amd64",
                                                        "amd64", "bookworm")


def test_the_shipped_matrix_has_32_bit_guests_on_bullseye_and_bookworm_kernels():
    m = load_matrix()
    i386_guests = {name: env for name, env in m.environments.items()
                   if env.backend == "qemu" and env.arch == "i386"}
    assert set(i386_guests) == {"k5.10-i386", "k6.1-i386", "k6.1-i386-vdso0"}
    for name, release in (("k5.10-i386", "bullseye"), ("k6.1-i386", "bookworm"),
                          ("k6.1-i386-vdso0", "bookworm")):
        env = i386_guests[name]
        assert env.kernel == KernelSpec(f"{release}-i386", "linux-image-686-pae", "i386", release)
        assert env.userland == m.suites[f"{release}-i386"] and env.build == "dynamic"
        assert env.description
    assert i386_guests["k6.1-i386-vdso0"].cmdline == "vdso32=0"
    assert i386_guests["k6.1-i386"].cmdline == i386_guests["k5.10-i386"].cmdline == ""
    # every other guest stays 64-bit on both sides
    for env in m.environments.values():
        if env.backend == "qemu" and env.name not in i386_guests:
            assert env.kernel.arch == env.arch in ("amd64", "arm64")


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
    assert {f"{name}-runtimes" for name, suite in m.suites.items() if suite.arch == "amd64"
            } <= runtimes


DOCKER = {"name": "d", "backend": "docker", "suite": "bookworm"}
QEMU = {"name": "k", "backend": "qemu", "suite": "bookworm", "kernel": "bookworm"}


@pytest.mark.parametrize(
    "entry,message",
    [
        ({**DOCKER, "time_namespace": "yes"}, "`time_namespace` must be true or false"),
        ({**DOCKER, "time_namespace": 1}, "`time_namespace` must be true or false"),
        ({"name": "h", "backend": "host", "time_namespace": True},
         "`time_namespace` is for the docker and qemu backends only"),
        ({**DOCKER, "time_namespace": True, "build": "runtimes"},
         "not offered for the runtimes build in docker"),
        ({**QEMU, "seccomp": "allow-all"}, "`seccomp` is for the docker backend only"),
        ({"name": "h", "backend": "host", "seccomp": "allow-all"}, "docker backend only"),
        ({**DOCKER, "seccomp": "unconfined"}, r"`seccomp` must be one of: probe, allow-all"),
        ({**DOCKER, "seccomp": True}, "`seccomp` must be one of"),
    ],
)
def test_time_namespace_and_seccomp_misuse(entry, message):
    with pytest.raises(BadInput, match=message):
        parse_matrix({**BASE, "environment": [entry]})


def test_time_namespace_and_seccomp_are_resolved():
    m = parse_matrix({**BASE, "environment": [
        {**DOCKER, "time_namespace": True}, {**QEMU, "time_namespace": True},
        {**DOCKER, "name": "all", "seccomp": "allow-all"}, DOCKER | {"name": "plain"},
        {"name": "host", "backend": "host", "time_namespace": False}]})
    envs = m.environments
    assert envs["d"].time_namespace and envs["k"].time_namespace
    assert (envs["d"].seccomp, envs["all"].seccomp) == ("probe", "allow-all")
    assert not envs["plain"].time_namespace and envs["plain"].seccomp == "probe"
    assert not envs["all"].time_namespace
    assert not m.environments["host"].time_namespace


def test_the_shipped_matrix_has_the_seccomp_and_time_namespace_variants():
    envs = load_matrix().environments
    timens, allow_all = envs["trixie-timens"], envs["trixie-seccomp-allow-all"]
    assert timens.backend == allow_all.backend == "docker"
    assert timens.suite == allow_all.suite == "trixie"
    assert timens.time_namespace and timens.seccomp == "probe"
    assert allow_all.seccomp == "allow-all" and not allow_all.time_namespace
    assert "measurement only" in allow_all.description
    # the allow-all profile is one environment of its own, never what the others run with
    assert [e.name for e in envs.values() if e.seccomp != "probe"] == [allow_all.name]


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


ARM64 = {"suites": {"bookworm": {}, "bookworm-arm64": {"release": "bookworm", "arch": "arm64"}},
         "environment": [{"name": "host", "backend": "host"}]}


@pytest.mark.parametrize("raw", [
    {**ARM64, "docker_grid": [{"suites": ["bookworm", "bookworm-arm64"]}]},
    {**ARM64, "environment": [{"name": "c", "backend": "docker", "suite": "bookworm-arm64"}]},
    {**ARM64, "environment": [{"name": "c", "backend": "docker", "suite": "bookworm-arm64",
                               "build": "static"}]},
])
def test_an_arm64_suite_is_refused_in_a_container_with_the_reason(raw):
    """Under qemu-user the kernel and the vDSO would be QEMU's: such rows would be wrong."""
    with pytest.raises(BadInput, match=r"'bookworm-arm64' is arm64: .*qemu-user.*qemu guests "
                       r"only") as info:
        parse_matrix(raw)
    assert "\n" not in str(info.value)


def test_an_arm64_guest_boots_the_arm64_kernel_and_is_tagged_arm64():
    m = parse_matrix({**ARM64, "environment": [
        {"name": "k", "backend": "qemu", "suite": "bookworm-arm64", "kernel": "bookworm-arm64"}]})
    guest = m.environments["k"]
    assert guest.arch == "arm64"
    assert guest.kernel == KernelSpec("bookworm-arm64", "linux-image-arm64", "arm64", "bookworm")
    assert guest.tags == ["qemu", "arm64"]
    with pytest.raises(BadInput, match="kernel of 'bookworm' is amd64 but the userland "
                       "'bookworm-arm64' is arm64"):
        parse_matrix({**ARM64, "environment": [
            {"name": "k", "backend": "qemu", "suite": "bookworm-arm64", "kernel": "bookworm"}]})
    with pytest.raises(BadInput, match="runtimes build is for amd64"):
        parse_matrix({**ARM64, "environment": [
            {"name": "k", "backend": "qemu", "suite": "bookworm-arm64",
             "kernel": "bookworm-arm64", "build": "runtimes"}]})


def test_the_shipped_matrix_has_arm64_guests_of_bookworm_and_sid():
    m = load_matrix()
    for codename in ("bookworm", "sid"):
        suite = m.suites[f"{codename}-arm64"]
        assert (suite.arch, suite.release) == ("arm64", codename)
    arm64 = {name: env for name, env in m.environments.items() if env.arch == "arm64"}
    assert {"k6.1-arm64", "k7.2-arm64"} <= set(arm64)
    for name, codename in (("k6.1-arm64", "bookworm"), ("k7.2-arm64", "sid")):
        env = arm64[name]
        assert env.backend == "qemu" and env.cmdline == "" and env.build == "dynamic"
        assert env.kernel == KernelSpec(f"{codename}-arm64", "linux-image-arm64", "arm64",
                                        codename)
        assert env.userland == m.suites[f"{codename}-arm64"]
        assert "arm64" in env.tags and env.description
    # arm64 userlands run only in guests
    assert all(env.backend == "qemu" for env in arm64.values())
