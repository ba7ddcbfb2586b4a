"""End to end in a real browser: `streamlit run app.py`, headless Chromium clicks the quick demo.

Needs Debian's Chromium (``apt-get install chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package; it never downloads a browser. Skips, saying why, without them.

The home page screenshot is saved under the test's tmp folder. With
``ACCELVIT_SCREENSHOTS=docs`` it also captures every page into that folder (how
``docs/*.png`` are made)::

    ACCELVIT_SCREENSHOTS=docs python -m pytest tests/test_browser.py

``ACCELVIT_SCREENSHOTS_HOME=DIR`` starts the server on a copy of the run store ``DIR``
(e.g. one holding a finished sweep) so the pictures show more than one run. The Compare page
(``compare.png``) is taken by ``test_compare_page_url_round_trip`` with that store's three newest
finished runs; for that picture alone::

    ACCELVIT_SCREENSHOTS=docs ACCELVIT_SCREENSHOTS_HOME=DIR python -m pytest tests/test_browser.py -k compare
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.live_watch import CHROMIUM_ARGS, start_server  # one way to start the app and the browser



def _chromium() -> str | None:
    for cand in (os.environ.get("ACCELVIT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


CHROMIUM = _chromium()
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the dev requirements install it
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium; .ci/run does it)"),
    pytest.mark.skipif(sync_playwright is None, reason="the playwright Python package is not installed"),
]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    home: Path
    log: Path

    def __str__(self) -> str:
        return self.url


@pytest.fixture
def server(tmp_path):
    seed_home = os.environ.get("ACCELVIT_SCREENSHOTS_HOME")  # a store with more runs, for the docs pictures
    if seed_home:
        shutil.copytree(seed_home, tmp_path / "home")
    try:
        proc, url = start_server(tmp_path / "home", tmp_path / "streamlit.log", env={"OMP_NUM_THREADS": "1"},
                                 timeout=90)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield Server(url, proc, tmp_path / "home", tmp_path / "streamlit.log")
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _settle(page, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit finished its script run (no 'running' indicator)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout_ms)
    page.wait_for_timeout(500)


def test_quick_demo_in_a_real_browser(server, tmp_path):
    shots = os.environ.get("ACCELVIT_SCREENSHOTS")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.url, wait_until="domcontentloaded")
            button = page.get_by_role("button", name="Run the quick demo")
            expect(button).to_be_visible(timeout=60_000)
            button.click()
            # the live view appears, then the run finishes (about half a minute on 2 CPU cores)
            expect(page.get_by_text("Cancel this run")).to_be_visible(timeout=60_000)
            # a second tab opened during the job shows the same live run (read from the store)
            other = browser.new_page(viewport={"width": 1400, "height": 1000})
            other.goto(server.url, wait_until="domcontentloaded")
            expect(other.get_by_text(re.compile(r"overall \d+% · stage: \w+")).first).to_be_visible(timeout=60_000)
            other.close()
            _table_and_card_agree(page, server.home)
            if shots:  # the live view mid-run: progress, curves (switched on), throughput, time left
                try:
                    page.get_by_text("Live training curves").click()
                    expect(page.get_by_text("training loss")).to_be_visible(timeout=60_000)
                    page.wait_for_timeout(3000)
                    Path(shots).mkdir(parents=True, exist_ok=True)
                    _shot(page, Path(shots) / "live.png", 1100)
                    page.set_viewport_size({"width": 1400, "height": 1000})
                    if not page.get_by_text("Cancel this run").is_visible():  # it finished meanwhile
                        (Path(shots) / "live.png").unlink()
                except AssertionError:
                    pass  # finished before the curves showed: no live picture this time
            expect(page.get_by_text("Finished in")).to_be_visible(timeout=240_000)
            _settle(page)
            expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible(timeout=30_000)
            chart = page.locator('[data-testid="stPlotlyChart"]').last
            expect(chart).to_be_visible(timeout=30_000)
            expect(chart.locator(".main-svg").first).to_be_attached(timeout=30_000)
            assert page.get_by_text("Best trade-offs").is_visible()
            # a new tab after the job sees the same finished run
            other = browser.new_page(viewport={"width": 1400, "height": 1000})
            other.goto(server.url, wait_until="domcontentloaded")
            expect(other.locator('[data-testid="stDataFrame"]').first).to_be_visible(timeout=60_000)
            expect(other.locator('[data-testid="stPlotlyChart"]').last).to_be_visible(timeout=30_000)
            other.close()
            page.screenshot(path=str(tmp_path / "home.png"), full_page=True)
            assert (tmp_path / "home.png").stat().st_size > 10_000
            if shots:
                _capture_all_pages(page, server.url, Path(shots))
        finally:
            browser.close()


def _shot(page, path: Path, height: int) -> None:
    """Streamlit scrolls inside its own container, so a tall viewport shows the whole page."""
    page.set_viewport_size({"width": 1400, "height": height})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path))


def _capture_all_pages(page, url: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _shot(page, out / "home.png", 2000)
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{url}/Experiment", wait_until="domcontentloaded")
    expect(page.get_by_text("Estimated cost after pruning")).to_be_visible(timeout=60_000)
    _settle(page)
    _shot(page, out / "experiment.png", 2100)
    page.goto(f"{url}/Results", wait_until="domcontentloaded")
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible(timeout=60_000)
    _settle(page)
    _shot(page, out / "results.png", 2900)
    page.goto(f"{url}/Inference", wait_until="domcontentloaded")
    expect(page.get_by_text("test images from the run's data set")).to_be_visible(timeout=60_000)
    page.get_by_text("test images from the run's data set").click()
    expect(page.get_by_text("true class").first).to_be_visible(timeout=60_000)
    _settle(page)
    _shot(page, out / "inference.png", 1500)


_SNAPSHOT_JS = """() => {
  const bar = [...document.querySelectorAll('[data-testid="stProgress"]')].map(e => e.innerText)
      .find(t => /overall \\d+%/.test(t)) || null;
  const rows = [...document.querySelectorAll('[data-testid="stDataFrame"] [role="row"]')]
      .map(r => [...r.querySelectorAll('[role="gridcell"]')].map(c => c.innerText.trim()));
  return {bar, rows};
}"""


def _table_and_card_agree(page, home: Path) -> None:
    """Mid-run, the Home runs table and the live card show the same status and the same whole
    percent (one record per refresh). The grid is a canvas; its accessible twin holds the cells.
    Both are read in one evaluation, and compared when a second read 0.4 s later is the same
    (not in the middle of a refresh), up to five times."""
    from accelvit.runs import RunStore

    seen = 0
    for _ in range(5):
        running = RunStore(home).list_runs(status="running")
        if not running:
            break  # finished already on a fast machine: nothing more mid-run to compare
        run = running[0]
        snap = page.evaluate(_SNAPSHOT_JS)
        page.wait_for_timeout(400)
        if page.evaluate(_SNAPSHOT_JS) != snap:  # a refresh was arriving (its elements stream in one by one)
            continue
        row = next((r for r in snap["rows"] if r and r[0] == run["name"]), None)
        if snap["bar"] and row:
            percent = re.search(r"overall (\d+)%", snap["bar"]).group(1)
            assert row[1] == "running" and row[2] == percent, (row, snap["bar"])
            seen += 1
        page.wait_for_timeout(1000)
    assert seen or not RunStore(home).list_runs(status="running"), "no mid-run view of table and card"


def test_cancel_shows_at_once_and_sigterm_leaves_the_run_interrupted(server):
    """Cancel in the live card: the card says so in the same rerun (not after the next poll) and the
    run ends cancelled. A second demo is running when the server gets SIGTERM: the run is
    ``interrupted`` at once, the job process exits, and the server exits cleanly."""
    from accelvit.runs import RunStore

    store = RunStore(server.home)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.url, wait_until="domcontentloaded")
            page.get_by_role("button", name="Run the quick demo").click()
            cancel = page.get_by_role("button", name="Cancel this run")
            expect(cancel).to_be_visible(timeout=60_000)
            expect(page.get_by_role("button", name="Run the quick demo")).to_be_disabled()  # one demo at a time
            cancel.click()
            expect(page.get_by_text(re.compile(r"Cancell(ing|ed)")).first).to_be_visible(timeout=2_500)
            expect(page.get_by_text(re.compile(r"Cancelled at \d\d:\d\d")).first).to_be_visible(timeout=60_000)
            (first,) = [r["id"] for r in store.list_runs()]
            assert store.status(first) == "cancelled"
            button = page.get_by_role("button", name="Run the quick demo")
            expect(button).to_be_enabled(timeout=30_000)
            button.click()
            expect(page.get_by_text(re.compile(r"Running: \w+")).first).to_be_visible(timeout=60_000)
        finally:
            browser.close()
    second = next(r["id"] for r in store.list_runs() if r["id"] != first)
    assert store.status(second) == "running"
    server.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    while store.status(second) == "running" and time.monotonic() - t0 < 5:
        time.sleep(0.05)
    assert store.status(second) == "interrupted", "not interrupted within 5 s of SIGTERM"
    server.proc.wait(30)
    log = server.log.read_text()
    assert "terminate called" not in log and "Traceback" not in log, log[-3000:]


def _three_runs(home: Path) -> list[str]:
    """Three finished runs of the server's store, newest first: the newest ones there (a store copied
    from ``ACCELVIT_SCREENSHOTS_HOME``), else three written as records (no training)."""
    from accelvit.runs import RunStore, new_owner

    store = RunStore(home)
    finished = [r["id"] for r in store.list_runs(status="finished")]
    if len(finished) >= 3:
        return finished[:3]
    ids = []
    for i, (name, head_ratio, top1) in enumerate((("cmp half", 0.5, 0.93), ("cmp quarter", 0.25, 0.95),
                                                  ("cmp none", 0.0, 0.96))):
        config = {"name": name, "model": "swin_pico", "prune": {"head_ratio": head_ratio, "sparsity": 0.0}}
        rid, _ = store.create_run(config, name=name, status="running", owner=new_owner("test"))
        for stage, t1, flops in (("before", 0.96, 8e6), ("after", top1, 8e6 * (1 - head_ratio / 2))):
            store.add_metrics(rid, stage, {"top1": t1, "top5": 1.0, "dense_flops": flops, "effective_flops": flops,
                                           "params": 9e4, "nonzero_params": 9e4, "latency_ms_b1": 2.0})
        store.set_status(rid, "finished")
        ids.insert(0, rid)
    return ids


def _chips(page) -> list[str]:
    """The run ids of the Compare page's selection (its multiselect's tags read 'name · status · id')."""
    tags = page.locator('[data-testid="stMultiSelect"] [data-tag]').all_inner_texts()
    return [t.strip().rsplit(" · ", 1)[-1] for t in tags]


def _runs_in_url(page) -> list[str]:
    from urllib.parse import parse_qs, urlparse

    return ",".join(parse_qs(urlparse(page.url).query).get("runs", [])).split(",")


def test_compare_page_url_round_trip(server):
    """``/Compare?runs=A,B`` selects A and B; adding a run rewrites the URL; that URL, opened in a
    new tab, shows the same three runs. With ``ACCELVIT_SCREENSHOTS`` set, the three-run page is
    saved as ``compare.png`` there."""
    a, b, c = _three_runs(server.home)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            if os.environ.get("ACCELVIT_SCREENSHOTS"):
                # Until app.py has run once, Streamlit serves a page URL straight from pages/ with its
                # auto-discovered sidebar ('app', no icons); the picture should show the real one.
                page.goto(server.url, wait_until="domcontentloaded")
                _settle(page)
            page.goto(f"{server.url}/Compare?runs={a},{b}", wait_until="domcontentloaded")
            expect(page.get_by_text("Configuration differences")).to_be_visible(timeout=60_000)
            _settle(page)
            assert _chips(page) == [a, b]
            assert _runs_in_url(page) == [a, b]
            # add the third run through the multiselect: the URL follows
            page.locator('[data-testid="stMultiSelect"] input').click()
            page.keyboard.type(c)
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            page.wait_for_function(f"() => decodeURIComponent(location.search).includes('{a},{b},{c}')",
                                   timeout=30_000)
            _settle(page)
            assert _chips(page) == [a, b, c] and _runs_in_url(page) == [a, b, c]
            # the link reopens the same comparison in a new tab (a new session)
            other = browser.new_page(viewport={"width": 1400, "height": 1000})
            other.goto(page.url, wait_until="domcontentloaded")
            expect(other.get_by_text("Configuration differences")).to_be_visible(timeout=60_000)
            _settle(other)
            assert _chips(other) == [a, b, c]
            shots = os.environ.get("ACCELVIT_SCREENSHOTS")
            if shots:
                Path(shots).mkdir(parents=True, exist_ok=True)
                expect(other.locator('[data-testid="stPlotlyChart"]').last.locator(".main-svg").first) \
                    .to_be_attached(timeout=30_000)
                tall = other.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
                _shot(other, Path(shots) / "compare.png", int(tall) + 40)
            other.close()
            # removing a run from the selection: the URL follows again
            page.locator('[data-testid="stMultiSelect"] [data-tag]').nth(1).get_by_role("button").click()
            page.wait_for_function(f"() => decodeURIComponent(location.search).includes('runs={a},{c}')",
                                   timeout=30_000)
            _settle(page)
            assert _chips(page) == [a, c]
        finally:
            browser.close()
