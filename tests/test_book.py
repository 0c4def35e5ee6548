"""The executed book (tools/build_book.py): built from the lessons nbval executed in this session,
then opened in a real headless browser.

These tests run last (conftest.py sorts them to the end) so that the lessons are already
executed in ``runs/<profile>/``; run alone, the builder executes the lessons it lacks. The
browser test needs Chromium and its driver from the system's packages (``apt-get install
chromium chromium-driver``); without them it is skipped, unless ``MINSEG_REQUIRE_BROWSER=1``
(set by CI), which turns a missing browser into a failure.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PROFILE = os.environ.get("MINSEG_PROFILE", "smoke")
LESSONS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

pytest.importorskip("myst_nb", reason="the book needs pip install -e '.[book]'")


def _builder():
    spec = importlib.util.spec_from_file_location("build_book", ROOT / "tools" / "build_book.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_book"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The whole book, built once in this profile."""
    out = tmp_path_factory.mktemp("book")
    index = _builder().build(PROFILE, out=out, quiet=True, timeout=600)
    return index.parent


def test_every_lesson_has_a_page_with_its_run_card(book):
    index = (book / "index.html").read_text()
    for stem in LESSONS:
        page = book / "lessons" / f"{stem}.html"
        assert page.is_file(), f"no page for {stem}"
        assert f'href="lessons/{stem}.html"' in index, f"the contents do not link {stem}"
        html = page.read_text()
        assert "minseg-run" in html and f"profile <strong>{PROFILE}</strong>" in html, stem
        assert "minseg-failed" not in html, f"{stem} failed to execute"
        assert "<img" in html, f"{stem} shows no figure"
    assert (book / "search.html").is_file() and (book / "searchindex.js").is_file()
    assert (book / "_static" / "mathjax.js").is_file()


def _broken_lessons(tmp_path: Path) -> Path:
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · A fine lesson\n\n$a^2$"),
                                           nbformat.v4.new_code_cell("print(1 + 1)")])
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 02 · A broken lesson"),
                                          nbformat.v4.new_code_cell("x = 1"),
                                          nbformat.v4.new_code_cell("1 / 0")])
    nbformat.write(good, nbs / "01_fine.ipynb")
    nbformat.write(bad, nbs / "02_broken.ipynb")
    return nbs


def test_a_failing_lesson_stops_the_build_with_its_name_and_error(tmp_path):
    bb = _builder()
    nbs = _broken_lessons(tmp_path)
    runs = tmp_path / "runs"
    with pytest.raises(bb.LessonFailed, match=r"02_broken.*cell 2 raised ZeroDivisionError"):
        bb.build("smoke", notebooks=nbs, runs=runs, out=tmp_path / "out", quiet=True, timeout=120)
    # --keep-going: every page is built, the failed one says so in red at the top
    index = bb.build("smoke", notebooks=nbs, runs=runs, out=tmp_path / "out", quiet=True,
                     keep_going=True, timeout=120)
    broken = (index.parent / "lessons" / "02_broken.html").read_text()
    assert "minseg-failed" in broken and "ZeroDivisionError" in broken
    assert broken.index("minseg-failed") < broken.index("<h1")      # at the top of the page
    assert "minseg-failed" not in (index.parent / "lessons" / "01_fine.html").read_text()
    assert "1 lesson(s) failed to execute" in index.read_text()
    # the executed copies are reused while their sources do not change
    assert bb.is_fresh(nbs / "01_fine.ipynb", runs / "01_fine.ipynb", "smoke")
    nb = nbformat.read(nbs / "01_fine.ipynb", as_version=4)
    nb.cells[1].source = "print(2 + 2)"
    nbformat.write(nb, nbs / "01_fine.ipynb")
    assert not bb.is_fresh(nbs / "01_fine.ipynb", runs / "01_fine.ipynb", "smoke")


# ------------------------------------------------------------------------------------------
# in a real browser
# ------------------------------------------------------------------------------------------
def _browser_paths() -> tuple[str, str] | None:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


@pytest.fixture(scope="module")
def browser():
    paths = _browser_paths()
    if paths is None:
        if os.environ.get("MINSEG_REQUIRE_BROWSER") == "1":
            pytest.fail("MINSEG_REQUIRE_BROWSER=1 but chromium / chromedriver are not installed")
        pytest.skip("no chromium + chromedriver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.binary_location = paths[0]
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(paths[1]), options=opts)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


WAIT_FOR_MATH = """
const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.startup) { MathJax.startup.promise.then(() => done(true), () => done(false)); }
else { done(false); }
"""


def _open(driver, page: Path) -> dict:
    driver.get(page.as_uri())
    typeset = driver.execute_async_script(WAIT_FOR_MATH)
    return {
        "typeset": typeset,
        "errors": [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"],
        "figures": driver.execute_script(
            "return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length"),
        "math": driver.execute_script("return document.querySelectorAll('mjx-container svg').length"),
        "raw_tex": driver.execute_script(
            "return document.querySelectorAll('.math:not(:has(mjx-container))').length"),
    }


def test_the_book_in_a_browser(book, browser, tmp_path):
    # the contents: every lesson link resolves to a page that exists and has the lesson's title
    browser.get((book / "index.html").as_uri())
    links = browser.execute_script(
        "return [...document.querySelectorAll('.toctree-wrapper a')].map(a => a.href)")
    lesson_links = [u for u in links if "/lessons/" in u]
    assert len(lesson_links) == len(LESSONS)
    for url in lesson_links:
        path = Path(re.sub(r"^file://", "", url).split("#")[0])
        assert path.is_file(), f"contents link {url} does not resolve"
    problems = {}
    for stem in LESSONS:
        seen = _open(browser, book / "lessons" / f"{stem}.html")
        if seen["errors"] or not seen["typeset"] or seen["figures"] < 1 or seen["math"] < 1 \
                or seen["raw_tex"]:
            problems[stem] = seen
        if stem in (LESSONS[0], LESSONS[7]):           # two screenshots for the record
            browser.save_screenshot(str(tmp_path / f"{stem}.png"))
    assert not problems, json.dumps(problems, indent=1)
    search = _open(browser, book / "search.html")
    assert not search["errors"], search["errors"]
    shots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(shots) == 2 and all((tmp_path / s).stat().st_size > 10_000 for s in shots)
