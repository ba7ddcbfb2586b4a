"""Does watching a run in the browser slow it down? The quick demo, watched and not watched.

    python -m bench.live_watch                  # 3 demos without a tab, 3 watched by two tabs, alternating
    python -m bench.live_watch --repeats 2 --no-write

One ``streamlit run app.py`` server (a fresh run store), driven by headless Chromium
(Playwright; Debian's ``chromium``, never downloaded). Each trial clicks "Run the quick
demo" in a tab, then either closes that tab at once (**no tab open** while the job runs) or
opens a second tab and keeps both open (**two tabs**), and waits for the run to finish by
reading the run store. The cached baseline is deleted before every trial, so every demo
trains its baseline. Conditions alternate in one server, so machine noise hits both alike.

The time of a trial is the run's own ``finished_at - started_at`` from the store (the job
process's time); the click-to-finished wall time is reported beside it. Target (issue 12):
median(two tabs) <= 1.25 x median(no tab). The section ``## Watching a run (issue 12)`` of
``bench/RESULTS.md`` is rewritten; the raw numbers go to ``bench/_work/live_watch.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from bench.results_md import replace_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Watching a run (issue 12)"
TARGET = 1.25
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, log_path: Path, env: dict[str, str] | None = None,
                 timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on a free local port with the run store ``home`` (plus ``env``), its
    output in ``log_path``; ``(process, url)`` once it answers its health check. RuntimeError
    (with the log's tail) when it does not start within ``timeout`` seconds. The browser test
    starts its server here too."""
    port = _free_port()
    env = {**os.environ, "ACCELVIT_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
             "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("streamlit did not start:\n" + log_path.read_text()[-3000:])
        time.sleep(0.3)


def trial(browser, url: str, home: Path, watched: bool, timeout: float = 1800) -> dict:
    from playwright.sync_api import expect

    from accelvit.runs import TERMINAL, RunStore

    shutil.rmtree(home / "baselines", ignore_errors=True)  # every demo trains its baseline
    store = RunStore(home)
    before = set(store.runs_df()["id"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="domcontentloaded")
    button = page.get_by_role("button", name="Run the quick demo")
    expect(button).to_be_enabled(timeout=120_000)
    t_click = time.time()
    button.click()
    deadline = time.monotonic() + 120
    while not (new := set(store.runs_df()["id"]) - before):
        if time.monotonic() > deadline:
            raise RuntimeError("the click queued no run")
        time.sleep(0.2)
    (rid,) = new
    pages = [page]
    if watched:
        other = browser.new_page(viewport={"width": 1400, "height": 1000})
        other.goto(url, wait_until="domcontentloaded")
        pages.append(other)
    else:
        page.close()
        pages = []
    deadline = time.monotonic() + timeout
    while store.status(rid) not in TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {rid} did not finish in {timeout} s")
        time.sleep(0.5)
    t_end = time.time()
    run = store.get_run(rid)
    if watched:  # the tab that launched it follows it to the end (the other one shows it in the table)
        expect(pages[0].get_by_text("Finished in").first).to_be_visible(timeout=60_000)
    for p in pages:
        p.close()
    return {"run_id": rid, "watched_by_tabs": 2 if watched else 0, "status": run["status"],
            "job_s": run["finished_at"] - run["started_at"], "click_to_end_s": t_end - t_click,
            "top1_after": (run["stages"].get("after") or {}).get("top1")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="demos per condition (alternating)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("ACCELVIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    work = Path(tempfile.mkdtemp(prefix="accelvit-live-"))
    home = work / "home"
    proc, url = start_server(home, work / "streamlit.log")
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                trial(browser, url, home, watched=False)  # warm-up: first imports, caches; not counted
                for i in range(args.repeats):
                    for watched in (False, True) if i % 2 == 0 else (True, False):
                        r = trial(browser, url, home, watched)
                        rows.append(r)
                        print(json.dumps(r), flush=True)
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    none = [r["job_s"] for r in rows if not r["watched_by_tabs"]]
    two = [r["job_s"] for r in rows if r["watched_by_tabs"]]
    ratio = statistics.median(two) / statistics.median(none)
    summary = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
               "python": platform.python_version(), "no_tab_s": none, "two_tabs_s": two,
               "median_no_tab_s": statistics.median(none), "median_two_tabs_s": statistics.median(two),
               "ratio": ratio, "target": TARGET, "met": ratio <= TARGET, "rows": rows}
    out = ROOT / "bench" / "_work"
    out.mkdir(parents=True, exist_ok=True)
    (out / "live_watch.json").write_text(json.dumps(summary, indent=2))
    text = render(summary, argv)
    print(text)
    if not args.no_write:
        write_section(text)
    return 0


def render(s: dict, argv: list[str] | None) -> str:
    cmd = "python -m bench.live_watch" + ("" if not argv else " " + " ".join(argv))
    fmt = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
    lines = [SECTION, "",
             f"Command: `{cmd}` ({s['date']}, {s['machine']}, Python {s['python']}; one server, conditions "
             "alternating, the baseline cache cleared before every demo, one warm-up demo not counted).", "",
             "| condition | demo runs (s, the job's own time) | median (s) |", "|---|---|---|",
             f"| no tab open | {fmt(s['no_tab_s'])} | {s['median_no_tab_s']:.1f} |",
             f"| two tabs watching | {fmt(s['two_tabs_s'])} | {s['median_two_tabs_s']:.1f} |", "",
             f"Ratio two tabs / no tab: **{s['ratio']:.2f}x** (target <= {s['target']}x: "
             f"{'met' if s['met'] else 'missed'}).", ""]
    return "\n".join(lines)


def write_section(text: str) -> None:
    replace_section(SECTION, text, RESULTS)


if __name__ == "__main__":
    sys.exit(main())
