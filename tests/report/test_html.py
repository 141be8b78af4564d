"""The HTML report: one self-contained page, escaped, with checked SVG figures, sortable tables,
and a real browser that loads it without errors or injected script.

The browser tests drive Debian's chromium through chromium-driver (selenium, headless, both
given by path so that selenium-manager fetches nothing; ``VDSOMATRIX_CHROMIUM`` and
``VDSOMATRIX_CHROMEDRIVER`` point elsewhere). Where either is missing they are skipped on a
developer's machine and fail in CI (``CI=true``), whose machine ``.ci/setup-machine`` equips.
They render the report of the two fixture results and, when a full run's results are at hand
(``VDSOMATRIX_REPORT_RESULTS``, default ``reports/results``), of those too, and save a full-page
screenshot (printed path; the last one also at ``/tmp/vdsomatrix-report.png``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import require
from fakes import report_fixtures as fixtures

from vdsomatrix.report import build_report, plots
from vdsomatrix.report import html as report_html
from vdsomatrix.report.html import render_html
from vdsomatrix.report.model import Subject, Value

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(os.environ.get("VDSOMATRIX_REPORT_RESULTS", ROOT / "reports" / "results"))
SCREENSHOT = Path("/tmp/vdsomatrix-report.png")
# Debian's chromium and chromium-driver (.ci/setup-machine installs them); elsewhere the first
# on PATH, or the paths in these variables. Both are always given to selenium by path.
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
FIGURES = 3  # latency, speed-up, mechanism
HOSTILE = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "<a href=\"javascript:alert(1)\">click</a>",
    "ctl\x00\x07\x1b[31mred\x9b2J\u202eevil\u2028end",
    "</style></script><svg onload=alert(1)><script>alert(2)</script>",
    "{{ 7*7 }} {% if 1 %}jinja{% endif %} $\\alpha^2$ &amp; &lt;b&gt;",
    "' onmouseover='alert(1)",
)
# The only elements the page writes itself (the figures' SVG elements among them).
OWN_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p",
            "div", "span", "nav", "a", "main", "section", "ul", "li", "dl", "dt", "dd", "strong",
            "figure", "figcaption", "table", "thead", "tbody", "tr", "th", "td", "i", "details",
            "summary", "pre", "footer", "script", "svg", "g", "defs", "path", "use", "clippath",
            "rect", "text", "pattern"}


# ------------------------------------------------------------------ documents ---------------

def full_run() -> list[dict]:
    files = sorted(RESULTS.glob("*.json")) if RESULTS.is_dir() else []
    if not files:
        pytest.skip(f"no results of a full run in {RESULTS} (set VDSOMATRIX_REPORT_RESULTS)")
    return [json.loads(f.read_text("utf-8")) for f in files]


# Fields whose words the report matches on (call and path names, statuses, the backend and the
# accelerator): left as they are in the "labels" variant, so that tables and figures still fill
# and carry the hostile labels.
STRUCTURE = {"schema", "call", "path", "status", "backend", "accel", "type", "role"}


def hostilise(value, strings, keep=STRUCTURE, key=None):
    """Every string of a document replaced by the next hostile one (keys in ``keep`` aside)."""
    if isinstance(value, dict):
        return {k: hostilise(v, strings, keep, k) for k, v in value.items()}
    if isinstance(value, list):
        return [hostilise(v, strings, keep, key) for v in value]
    if isinstance(value, str) and key not in keep:
        return next(strings)
    return value


def hostile_docs() -> list[dict]:
    def cycle():
        while True:
            yield from HOSTILE

    docs = []
    for i, doc in enumerate(fixtures()):
        doc = hostilise(doc, cycle())
        doc["environment"]["name"] = f"{HOSTILE[i]} {HOSTILE[i + 1]} #{i}"
        docs.append(doc)
    # Everything replaced, structure too, and numbers no measurement gives.
    wrecked = hostilise(fixtures()[1], cycle(), keep={"schema"})
    wrecked["environment"]["name"] = HOSTILE[4] + " wrecked"
    calls = fixtures()[0]["calls"]
    calls[0]["ns"] = {"min": -5, "median": 1e308, "p90": float("inf")}
    calls[1]["ns"] = {"min": "<b>", "median": float("nan"), "p90": None}
    calls[2]["environment"] = {"name": HOSTILE[1]}
    odd = fixtures()[0]
    odd["environment"]["name"] = HOSTILE[5]
    odd["calls"] = calls
    return [*docs, wrecked, odd]


class Tags(HTMLParser):
    """The start tags of a page, with their attributes, and the text of its scripts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.in_script = False
        self.scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        self.in_script = tag == "script"
        if self.in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self.in_script = False

    def handle_data(self, data):
        if self.in_script:
            self.scripts[-1] += data


def tags_of(page: str) -> Tags:
    parser = Tags()
    parser.feed(page)
    parser.close()
    return parser


# ------------------------------------------------------------------ the page, without a browser

@functools.cache
def fixture_page() -> str:
    return render_html(build_report(fixtures()))


def expected_tables(report) -> int:
    return sum(len(report_html.table_view(t).grids) for t in report.tables())


def test_page_has_every_table_and_figure():
    report = build_report(fixtures())
    page = fixture_page()
    tags = [t for t, _ in tags_of(page).tags]
    assert page.startswith("<!DOCTYPE html>")
    assert tags.count("table") == expected_tables(report) >= len(report.tables()) > 10
    assert tags.count("svg") == FIGURES
    assert tags.count("script") == 1
    for name in ("bookworm-musl", "k6.1-hpet"):
        assert name in page
    assert 'id="figure-latency"' in page and 'id="figure-speedup"' in page
    assert "could not be drawn" not in page


def test_page_is_self_contained():
    page = fixture_page()
    tags = tags_of(page).tags
    assert not [t for t, _ in tags if t in ("link", "img", "iframe", "object", "embed")]
    for _, attrs in tags:
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action"):
                assert (value or "").startswith("#"), (name, value)
    assert "@import" not in page and "@font-face" not in page
    assert not re.search(r"url\((?!#)", page)
    assert "default-src 'none'" in page


def test_script_runs_by_its_hash_only():
    import base64
    import hashlib

    page = fixture_page()
    (script,) = tags_of(page).scripts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page


def test_page_is_reproducible():
    assert render_html(build_report(fixtures())) == fixture_page()


def test_numbers_sort_by_their_value():
    page = fixture_page()
    cells = re.findall(r'<td class="num[^"]*" data-sort="([^"]+)"', page)
    assert cells and all(float(c) == float(c) for c in cells)


def test_ids_are_unique_across_figures():
    ids = re.findall(r'\sid="([^"]+)"', fixture_page())
    assert len(ids) == len(set(ids))


def test_columns_layout_renders_tables_and_figures():
    report = build_report(fixtures(), layout="columns")
    page = render_html(report)
    tags = [t for t, _ in tags_of(page).tags]
    assert tags.count("table") == expected_tables(report)
    assert tags.count("svg") == FIGURES


def test_a_failing_figure_leaves_the_page(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("<b>no</b> figure")

    monkeypatch.setattr(plots, "latency_plot", broken)
    page = render_html(build_report(fixtures()))
    assert "A figure could not be drawn: &lt;b&gt;no&lt;/b&gt; figure" in page
    assert [t for t, _ in tags_of(page).tags].count("svg") == FIGURES - 1


def test_hostile_results_stay_text():
    page = render_html(build_report(hostile_docs()))
    parsed = tags_of(page)
    assert {t for t, _ in parsed.tags} <= OWN_TAGS
    assert [t for t, _ in parsed.tags].count("script") == 1
    for tag, attrs in parsed.tags:
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, value)
            assert "javascript:" not in (value or "").lower() or name == "title", (tag, name)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x00" not in page and "\x1b" not in page and "\u202e" not in page
    assert "<svg onload" not in page


def test_hostile_labels_are_text_in_the_svg():
    """matplotlib writes label text escaped, and checked_svg writes it escaped again after
    parsing: a label is one text node, equal to the label."""
    labels = ["<script>alert(1)</script>$x^2$&amp;", '"><img src=x onerror=alert(1)>']
    value = Value("1 ns", number=100.0, unit="ns", mechanism="user", status="ok", low=90.0,
                  high=120.0)
    cells = [plots.Cell(Subject(label, None, "docker", False, "native", label), value)
             for label in labels]
    plot = plots.latency_plot("figure-t", "t", "c", [plots.Panel("p", cells)])
    assert "<script" not in plot.svg and "<img" not in plot.svg
    root = ET.fromstring(plot.svg)
    texts = ["".join(e.itertext()) for e in root.iter(f"{{{plots.SVG_NS}}}text")]
    for label in labels:
        assert label in texts  # whole: no math text, no markup


@pytest.mark.parametrize("bad", [
    '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><foreignObject><p>x</p></foreignObject></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
    '<use xlink:href="http://evil.example/x.svg#a"/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><path style="fill: url(http://evil.example/)"/>'
    '</svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><a href="javascript:alert(1)"><path/></a></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><image href="x.png"/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><path d="M 0 0">text</path></svg>',
    '<html><body/></html>',
    '<svg xmlns="http://www.w3.org/2000/svg"><g>',
])
def test_checked_svg_refuses_what_a_chart_does_not_need(bad):
    with pytest.raises(plots.UnsafeSvg):
        plots.checked_svg(bad, "figure-x")


def test_checked_svg_prefixes_ids_and_references():
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
           '<defs><path id="m1" d="M 0 0"/><clipPath id="c1"><rect x="0"/></clipPath></defs>'
           '<use xlink:href="#m1" clip-path="url(#c1)"/></svg>')
    out = plots.checked_svg(svg, "figure-a")
    assert 'id="figure-a-m1"' in out and 'id="figure-a-c1"' in out
    assert '"#figure-a-m1"' in out and "url(#figure-a-c1)" in out


# ------------------------------------------------------------------ in a real browser ---------

def find_program(variable: str, debian: str, names: tuple[str, ...]) -> Path | None:
    if os.environ.get(variable):
        chosen = Path(os.environ[variable])
        return chosen if chosen.exists() else None
    if Path(debian).exists():
        return Path(debian)
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    return Path(found) if found else None


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        require("selenium", f"{exc} (pip install -e '.[test]')")
    chromium = find_program("VDSOMATRIX_CHROMIUM", "/usr/bin/chromium", BROWSERS)
    chromedriver = find_program("VDSOMATRIX_CHROMEDRIVER", "/usr/bin/chromedriver", DRIVERS)
    for path, package in ((chromium, "chromium"), (chromedriver, "chromium-driver")):
        if path is None:
            require(package, "not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,2000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both paths are given, so selenium-manager has nothing to look up; offline, it could not
    # download a driver or a browser even if it tried.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")
        try:
            driver = webdriver.Chrome(service=Service(str(chromedriver)), options=options)
        except Exception as exc:  # a broken install: the browser does not start
            require("chromium", f"does not start: {exc}")
        yield driver
        driver.quit()


def open_page(driver, page: str, tmp_path: Path) -> Path:
    path = tmp_path / "REPORT.html"
    path.write_text(page, "utf-8")
    driver.get_log("browser")  # what an earlier page logged is not this page's
    driver.get(path.as_uri())
    return path


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def no_alert(driver) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert.dismiss()
    except NoAlertPresentException:
        return True
    return False


def screenshot(driver, target: Path) -> Path:
    """The whole page (up to a height Chromium can capture in one image) as a PNG."""
    import base64

    width = driver.execute_script("return document.documentElement.scrollWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": max(width, 1400), "height": min(height, 16000),
                 "scale": 1},
    })
    target.write_bytes(base64.b64decode(shot["data"]))
    return target


def sorted_column(driver, table_id: str, column: int) -> list[list[float]]:
    """The data-sort numbers of one column, body by body, in page order."""
    return driver.execute_script(
        """
        const table = document.querySelector(`table[data-table="${arguments[0]}"]`);
        return Array.from(table.tBodies).map(body => Array.from(body.rows)
            .filter(row => !row.classList.contains("group"))
            .map(row => row.cells[arguments[1]].getAttribute("data-sort"))
            .filter(v => v !== null).map(Number));
        """, table_id, column)


@pytest.fixture(params=["fixtures", "full-run"])
def docs(request) -> tuple[str, list[dict]]:
    return request.param, fixtures() if request.param == "fixtures" else full_run()


@pytest.mark.slow
def test_report_in_browser(browser, docs, tmp_path, capsys):
    from selenium.webdriver.common.by import By

    source, documents = docs
    report = build_report(documents)
    page = render_html(report)
    open_page(browser, page, tmp_path)

    assert console_errors(browser) == []
    assert no_alert(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, "table")) == expected_tables(report)
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.plot svg")) == FIGURES
    for figure in browser.find_elements(By.CSS_SELECTOR, "figure.plot svg"):
        assert figure.size["width"] > 600 and figure.size["height"] > 200
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "bookworm-musl" in body if source == "fixtures" else "host" in body
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1

    # A numeric column (getppid by the raw syscall instruction, in the table on the page about
    # what a system call costs) sorts by number, each group of rows on its own: ascending on
    # the first click, descending on the second.
    column = 3
    header = browser.find_elements(By.CSS_SELECTOR,
                                   'table[data-table="entry-cost"] thead th')[column]
    before = sorted_column(browser, "entry-cost", column)
    header.click()
    ascending = sorted_column(browser, "entry-cost", column)
    assert header.get_attribute("aria-sort") == "ascending"
    assert ascending == [sorted(b) for b in before]
    header.click()
    assert sorted_column(browser, "entry-cost", column) == [sorted(b, reverse=True)
                                                            for b in before]
    assert console_errors(browser) == []

    target = screenshot(browser, tmp_path / f"vdsomatrix-report-{source}.png")
    shutil.copyfile(target, SCREENSHOT)
    with capsys.disabled():
        print(f"\n  screenshot ({source}, {len(page):,} bytes of HTML): {target} "
              f"(copied to {SCREENSHOT})")


@pytest.mark.slow
def test_hostile_report_in_browser(browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = render_html(build_report(hostile_docs()))
    open_page(browser, page, tmp_path)
    assert no_alert(browser)
    assert console_errors(browser) == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.find_elements(By.CSS_SELECTOR, "iframe, object, embed, foreignObject") == []
    with_handlers = browser.execute_script(
        "return Array.from(document.querySelectorAll('*')).filter(e => "
        "Array.from(e.attributes).some(a => a.name.startsWith('on'))).length")
    assert with_handlers == 0
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('[href]')).map(e => e.getAttribute('href'))")
    assert all(link.startswith("#") for link in links)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "<script>alert(1)</script>" in body  # shown as text, where it was written
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.plot svg")) == FIGURES
    assert no_alert(browser)
