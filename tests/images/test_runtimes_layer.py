"""The runtime image layer (images/runtimes.py): which packages a suite's index gives,
the content hash, and one real build (bookworm) checked the way probe containers run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vdsomatrix.debian import packages
from vdsomatrix.images import probe_image as images
from vdsomatrix.images import runtimes
from vdsomatrix.matrix import Suite
from vdsomatrix.paths import project_root

BOOKWORM = Suite("bookworm", "bookworm")


def index(*paragraphs: str) -> bytes:
    return ("\n\n".join(p.strip() for p in paragraphs) + "\n").encode()


def pkg(name: str, version: str = "1.0", depends: str = "", arch: str = "amd64") -> str:
    text = f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\nSection: misc\n"
    if depends:
        text += f"Depends: {depends}\n"
    return text + "Description: something\n two lines\n"


def select(suite: str, *paragraphs: str) -> runtimes.Selection:
    return runtimes.select_packages(
        suite, packages.scan(index(*paragraphs), runtimes.RUNTIME_PACKAGES))


SID_LIKE = (
    pkg("openjdk-8-jre-headless", "8u504-ga-1"),
    pkg("openjdk-11-jre-headless", "11.0.33~8ea-1"),
    pkg("openjdk-17-jre-headless", "17.0.21+1-1"),
    pkg("openjdk-25-jre-headless", "25.0.5+1-1"),
    pkg("openjdk-28-jre-headless", "28~18ea-1"),
    pkg("openjdk-17-jre", "17.0.21+1-1"),  # not headless: never a candidate
    pkg("default-jre-headless", "2:1.25-77", "openjdk-25-jre-headless, java-common"),
    pkg("default-jdk-headless", "2:1.25-77",
        "default-jre-headless (= 2:1.25-77), openjdk-25-jdk-headless"),
    pkg("nodejs", "24.1-1", "libc6 (>= 2.34), libnode137"),
    pkg("golang-go", "2:1.27~1", "golang-1.27-go"),
    pkg("rustc", "1.97.1+dfsg1-1", "libc6"),
    pkg("libc6", "2.42-1"),
)


def test_default_oldest_and_newest_jre_are_measured_the_rest_recorded():
    sel = select("sid", *SID_LIKE)
    assert sel.java_shipped == (8, 11, 17, 25, 28)
    assert sel.java_default == 25
    assert sel.java_measured == (8, 25, 28)
    assert sel.java_not_measured == ["openjdk-11-jre-headless", "openjdk-17-jre-headless"]
    assert "not measured" in sel.java_not_measured_why
    assert sel.install() == ["openjdk-8-jre-headless", "openjdk-25-jre-headless",
                             "openjdk-28-jre-headless", "default-jdk-headless", "nodejs",
                             "golang-go", "rustc"]
    assert sel.keep() == ["openjdk-8-jre-headless", "openjdk-25-jre-headless",
                          "openjdk-28-jre-headless", "nodejs"]
    assert sel.build_only() == ["default-jdk-headless", "golang-go", "rustc"]
    assert sel.not_shipped == {}


def test_one_jre_is_default_oldest_and_newest_at_once():
    sel = select("bookworm", pkg("openjdk-17-jre-headless"),
                 pkg("default-jre-headless", "2:1.17-74", "openjdk-17-jre-headless"),
                 pkg("default-jdk-headless"), pkg("nodejs"), pkg("golang-go"), pkg("rustc"))
    assert sel.java_measured == (17,) and sel.java_default == 17
    assert sel.java_not_measured == [] and sel.java_not_measured_why is None


def test_the_newest_version_of_a_package_counts_and_other_architectures_do_not():
    sel = select("sid",
                 pkg("default-jre-headless", "2:1.17-1", "openjdk-17-jre-headless"),
                 pkg("default-jre-headless", "2:1.21-2", "openjdk-21-jre-headless"),
                 pkg("openjdk-17-jre-headless"), pkg("openjdk-21-jre-headless"),
                 pkg("openjdk-99-jre-headless", arch="arm64"), pkg("default-jdk-headless"))
    assert sel.java_default == 21 and sel.java_shipped == (17, 21)


def test_a_suite_without_openjdk_or_nodejs_says_not_shipped():
    sel = select("oldstable", pkg("golang-go"), pkg("rustc"), pkg("libc6"))
    assert sel.java_shipped == () and sel.java_measured == ()
    assert sel.not_shipped == {"java": "not shipped by oldstable (no openjdk-N-jre-headless)",
                               "node": "not shipped by oldstable"}
    assert sel.install() == ["golang-go", "rustc"]
    assert sel.keep() == [] and sel.build_only() == ["golang-go", "rustc"]


def test_jres_without_a_jdk_to_compile_with_are_not_measured():
    sel = select("odd", pkg("openjdk-17-jre-headless"), pkg("nodejs"))
    assert sel.java_measured == () and "default-jdk-headless" in sel.not_shipped["java"]
    assert sel.not_shipped["go"] == "not shipped by odd"
    assert sel.not_shipped["rust"] == "not shipped by odd"


def test_selection_round_trips_through_json():
    sel = select("sid", *SID_LIKE)
    assert runtimes.Selection.from_json(json.loads(json.dumps(sel.to_json()))) == sel


def test_the_runtime_stanzas_are_the_candidates_and_no_lookalike():
    data = index(*SID_LIKE, pkg("nodejs-doc"), pkg("openjdk-17-jre-headless-dbg"))
    found = [p["Package"] for p in packages.scan(data, runtimes.RUNTIME_PACKAGES)]
    assert "nodejs-doc" not in found and "openjdk-17-jre-headless-dbg" not in found
    assert "openjdk-17-jre" not in found and "libc6" not in found
    assert len(found) == len(SID_LIKE) - 2


def test_the_runtime_debs_keep_their_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path))
    assert runtimes.debs_dir(BOOKWORM) == tmp_path / "debs" / "bookworm" / "runtimes"


def test_the_old_apt_state_in_the_runtimes_folder_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path))
    root = runtimes._apt_root(BOOKWORM)
    (root / "state" / "lists").mkdir(parents=True)
    (root / "apt.conf").write_text("")
    (root / "selection.json").write_text("{}")
    runtimes._remove_old_apt_state(BOOKWORM)
    assert sorted(p.name for p in root.iterdir()) == ["selection.json"]


# ---------------------------------------------------------------------------------------------
# The hash.


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the checkout's probe image context (with probes/runtimes/)."""
    from fakes import copy_probe_context

    root = copy_probe_context(tmp_path / "checkout")
    (root / "probes" / "runtimes").mkdir(exist_ok=True)
    (root / "probes" / "runtimes" / "timing.py").write_text("print(1)\n")
    return root


def test_hash_follows_the_runtime_sources_and_the_selection(tree):
    sel = select("bookworm", *SID_LIKE)
    before = runtimes.runtime_hash(BOOKWORM, sel, root=tree)
    assert runtimes.runtime_hash(BOOKWORM, sel, root=tree) == before
    (tree / "probes" / "runtimes" / "timing.py").write_text("print(2)\n")
    changed = runtimes.runtime_hash(BOOKWORM, sel, root=tree)
    assert changed != before
    fewer = select("bookworm", *[p for p in SID_LIKE if "nodejs" not in p])
    assert runtimes.runtime_hash(BOOKWORM, fewer, root=tree) != changed
    # Versions do not count: the tag names what was asked for, as the base image's does.
    newer = select("bookworm", *[p.replace("24.1-1", "24.2-1") for p in SID_LIKE])
    assert runtimes.runtime_hash(BOOKWORM, newer, root=tree) == changed


def test_hash_ignores_files_that_are_not_built(tree):
    sel = select("bookworm", *SID_LIKE)
    before = runtimes.runtime_hash(BOOKWORM, sel, root=tree)
    (tree / "README.md").write_text("docs\n")
    (tree / "probes" / "runtimes" / "NOTES.md").write_text("notes\n")
    (tree / "probes" / "runtimes" / "__pycache__").mkdir()
    (tree / "probes" / "runtimes" / "__pycache__" / "timing.cpython-311.pyc").write_bytes(b"x")
    assert runtimes.runtime_hash(BOOKWORM, sel, root=tree) == before


def test_hash_follows_the_probe_image(tree):
    sel = select("bookworm", *SID_LIKE)
    before = runtimes.runtime_hash(BOOKWORM, sel, root=tree)
    (tree / "images" / "Dockerfile").write_text(
        (tree / "images" / "Dockerfile").read_text() + "# edited\n")
    assert runtimes.runtime_hash(BOOKWORM, sel, root=tree) != before


def test_tag_names_the_suite_and_a_hash(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))
    sel = select("bookworm", *SID_LIKE)
    path = runtimes._selection_file(BOOKWORM)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(sel.to_json()))
    tag = runtimes.runtime_image_tag(BOOKWORM, root=tree)  # no index fetch: it is cached
    digest = runtimes.runtime_hash(BOOKWORM, sel, root=tree)
    assert tag == f"vdsomatrix-runtimes:bookworm-{digest[:12]}"
    assert runtimes.image_tag is runtimes.runtime_image_tag


def test_status_without_a_fetched_index_is_not_built(tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))

    class NoImages:
        class images:  # noqa: N801 - the SDK's attribute name
            @staticmethod
            def get(tag):
                import docker.errors
                raise docker.errors.ImageNotFound(tag)

    built, reason = runtimes.runtime_image_status(BOOKWORM, client=NoImages())
    assert not built and reason.startswith("image not built")


# ---------------------------------------------------------------------------------------------
# One real build.


@pytest.mark.engine
def test_bookworm_runtime_image_runs_as_nobody_without_its_build_tools(engine):
    from vdsomatrix.engine.container import Container

    if not (project_root() / "probes" / "runtimes" / "build.sh").is_file():
        pytest.skip("probes/runtimes/build.sh is not in this checkout")
    tag = runtimes.ensure_runtime_image(BOOKWORM, client=engine, log=lambda line: None)
    image = engine.images.get(tag)
    labels = image.labels
    assert labels["org.vdsomatrix.kind"] == "runtimes"
    assert labels["org.vdsomatrix.base"] == images.probe_image_tag(BOOKWORM)
    assert labels["org.vdsomatrix.owner.pid"] == ""  # the build run's labels are blanked
    # One layer on the probe image.
    probe = engine.images.get(labels["org.vdsomatrix.base"])
    assert len(image.attrs["RootFS"]["Layers"]) == len(probe.attrs["RootFS"]["Layers"]) + 1

    script = (
        "set -e; d=/opt/vdsomatrix/runtimes; id -u; java -version 2>&1 | head -1; "
        "node --version; test -x $d/timing-go-static; $d/timing-go-static calls; "
        "test -r $d/Timing.class; cat $d/manifest.json; "
        "for t in go javac rustc; do if command -v $t; then echo \"$t present\"; exit 3; fi; done; "
        "echo done"
    )
    box = Container(engine, tag, ["sh", "-c", script], name="bookworm-runtimes-test",
                    lifetime=100)
    assert box.kwargs["user"] == "65534:65534" and box.kwargs["read_only"]
    assert box.kwargs["network_mode"] == "none"
    with box:
        run = box.run(90, stdout_cap=1 << 20)
    out = run.stdout.decode()
    assert run.exit_code == 0, (out, run.stderr.decode()[-2000:])
    lines = out.splitlines()
    assert lines[0] == "65534" and lines[-1] == "done"
    assert 'openjdk version "17.' in out
    assert lines[2].startswith("v")  # node --version
    assert "time.Now()" in out  # timing-go-static calls
    manifest = json.loads(out[out.index("{\n"): out.rindex("}") + 1])
    assert manifest["suite"] == "bookworm"
    assert [j["major"] for j in manifest["java"]] == ["17"] and manifest["java"][0]["default"]
    assert manifest["java"][0]["home"] == "/usr/lib/jvm/java-17-openjdk-amd64"
    assert manifest["node"]["package"] == "nodejs"
    assert manifest["go"]["version"].startswith("1.19")
    assert manifest["rust"]["version"].startswith("1.63")
    assert manifest["not_shipped"] == {} and manifest["java_not_measured"] == []
