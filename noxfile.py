"""vdsomatrix's sessions. Plain `nox` runs the matrix (every environment that can run here) and
renders reports/REPORT.md.

    nox                      every runnable environment (building images as needed), the report
    nox -s images            build or refresh the Docker images (-- --rebuild forces it)
    nox -s "probe(bookworm)" one environment (for fanning the matrix out over CI jobs)
    nox -t docker            every environment of one backend (tags: host, docker, qemu)
    nox -t runtimes          the language-runtime environments only
    nox -s report            re-render the report from reports/results/ without probing
    nox -s tests             unit tests and the real-engine / real-QEMU integration tests
    nox -s lint              ruff
    nox -s bench             the probe against an independent reference (benchmarks/;
                             -- runtimes: the language-runtime rows; -- fidelity: every
                             native row against a reference loop, one ratio per row;
                             -- wall: phase timings of the matrix, warm, cold or scaling;
                             -- guest-boot: where a guest's seconds go;
                             -- image-build: a probe image's build and size against a revision;
                             -- correctness: what the helper's correctness checks cost)
    nox -s clean             remove what killed runs left behind (-- --images: old images too)
    nox -s docs              the documentation site (docs/, mkdocs.yml) built with --strict
"""

import fcntl
import hashlib
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

MATRIX = load_matrix(ROOT / "src" / "vdsomatrix" / "images" / "matrix.toml")


def install(session: nox.Session, extras: str = "") -> None:
    session.install("-e", f".{extras}")


def shared_probe_venv(session: nox.Session) -> Path:
    """The bin folder of the one virtualenv every probe(<env>) session runs vdsomatrix from.

    nox gives each session a virtualenv of its own (it has no option to share one), so every
    probe session would install the package again. This one lives in nox's cache folder,
    which nox keeps for use across sessions; it is made again when pyproject.toml or the Python
    running nox changes (the install is editable, so source edits need nothing). A lock keeps
    parallel sessions from building it twice.
    """
    venv = session.cache_dir / "probe-venv"
    python = venv / "bin" / "python"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()
                            + sys.version.encode()).hexdigest()
    stamp = venv / "vdsomatrix-install"
    with open(session.cache_dir / "probe-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
            session.run(sys.executable, "-m", "venv", "--clear", str(venv), external=True)
            session.run(str(python), "-m", "pip", "install", "-q", "-e", str(ROOT),
                        external=True)
            stamp.write_text(wanted)
    return venv / "bin"


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


# One probe(<env>) session per environment, tagged with its backend (`nox -t qemu`) and, for
# the language-runtime environments, `runtimes` (`nox -t runtimes`).
@nox.session(venv_backend="none")
@nox.parametrize("env", [nox.param(name, id=name, tags=env.tags)
                         for name, env in MATRIX.environments.items()])
def probe(session: nox.Session, env: str) -> None:
    """Probe one environment: writes reports/results/<env>.json."""
    vdsomatrix = shared_probe_venv(session) / "vdsomatrix"
    session.run(str(vdsomatrix), "probe", "--env", env, *session.posargs, external=True)


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


BENCHMARKS = {"syscalls": "benchmarks/syscall_cost.py", "runtimes": "benchmarks/runtime_cost.py",
              "fidelity": "benchmarks/fidelity.py", "wall": "benchmarks/matrix_wall.py",
              "guest-boot": "benchmarks/guest_boot.py", "image-build": "benchmarks/image_build.py",
              "correctness": "benchmarks/correctness_cost.py"}


@nox.session
def bench(session: nox.Session) -> None:
    """The probe against independent references, side by side in one run: `-- syscalls`
    (perf bench, the default), `-- runtimes` (timeit, go test -bench, other loops) or
    `-- fidelity` (every native row against benchmarks/references/reference_loop.c); and
    where the time of a run goes: `-- wall` (the matrix's phases), `-- guest-boot`,
    `-- image-build` and `-- correctness` (the helper's correctness checks)."""
    install(session)
    args = list(session.posargs)
    script = BENCHMARKS[args.pop(0)] if args and args[0] in BENCHMARKS else BENCHMARKS["syscalls"]
    session.run("python", script, *args)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site: docs/ with the exported tables of reports/tables/ included."""
    install(session, "[test]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the host side, tests, benchmarks and this file."""
    install(session, "[lint]")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
