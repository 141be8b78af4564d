"""vdsomatrix's sessions. Plain `nox` runs the matrix (every environment that can run here) and
renders reports/REPORT.md.

    nox                      every runnable environment (building images as needed), the report
    nox -s images            build or refresh the Docker images (-- --rebuild forces it)
    nox -s "probe(bookworm)" one environment (for fanning the matrix out over CI jobs)
    nox -s report            re-render the report from reports/results/ without probing
    nox -s tests             unit tests and the real-engine / real-QEMU integration tests
    nox -s lint              ruff
    nox -s bench             the probe against an independent reference (benchmarks/)
    nox -s clean             remove what killed runs left behind (-- --images: old images too)
"""

import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT / "src"))
from vdsomatrix.matrix import load_matrix  # noqa: E402  (stdlib-only module)

# The matrix session builds what it needs itself (in parallel), so images is not in the default.
nox.options.sessions = ["matrix", "report"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

ENVIRONMENTS = list(load_matrix(ROOT / "images" / "matrix.toml").environments)


def install(session: nox.Session, extras: str = "") -> None:
    session.install("-e", f".{extras}")


@nox.session
def images(session: nox.Session) -> None:
    """Build the Docker images of every suite (cached by content hash)."""
    install(session)
    session.run("vdsomatrix", "images", *session.posargs)


@nox.session
def matrix(session: nox.Session) -> None:
    """Probe every environment that can run here, in parallel where it keeps numbers honest."""
    install(session)
    session.run("vdsomatrix", "run", *session.posargs)


@nox.session
@nox.parametrize("env", ENVIRONMENTS, ids=ENVIRONMENTS)
def probe(session: nox.Session, env: str) -> None:
    """Probe one environment: writes reports/results/<env>.json."""
    install(session)
    session.run("vdsomatrix", "probe", "--env", env, *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """Render reports/REPORT.md from the result files."""
    install(session)
    session.run("vdsomatrix", "report", *session.posargs)


@nox.session
def clean(session: nox.Session) -> None:
    """Remove containers and files that killed runs left behind (-- --images: old images too)."""
    install(session)
    session.run("vdsomatrix", "clean", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """pytest: unit tests, then the real engine and real QEMU (which fail, not skip, in CI)."""
    install(session, "[test]")
    session.run("pytest", *(session.posargs or ["-ra"]))


@nox.session
def bench(session: nox.Session) -> None:
    """The probe's system-call cost against perf bench, side by side in one run."""
    install(session)
    session.run("python", "benchmarks/syscall_cost.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the host side, tests, benchmarks and this file."""
    install(session, "[lint]")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
