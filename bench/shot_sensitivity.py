"""Screenshot of the Results page's "Inside one run" section with the sensitivity heatmap (docs/sensitivity.png).

    # a run store holding one real run whose prune measured its sensitivity (about 2 min on an idle 2-core
    # machine, 5 on a busy one):
    python -m accelvit run --home /tmp/sens_home --dataset digits --model swin_micro --epochs 3 \\
        --finetune-epochs 1 --target-flops 0.5 --head-ratio 0.5 --mlp-ratio 0.5 --rank-ratio 0.6 --activation-aware
    python -m bench.shot_sensitivity --home /tmp/sens_home            # -> docs/sensitivity.png

One ``streamlit run app.py`` server on that store (``bench.live_watch.start_server``), headless
Chromium (Debian's, never downloaded; ``bench.live_watch.CHROMIUM_ARGS``) opens the Results
page, waits for the heatmap, and saves the row of "Inside one run" that holds it: the heatmap and
its caption beside the heads and rank pictures. The run shown is the page's default (the first
finished run).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from bench.live_watch import CHROMIUM_ARGS, ROOT, start_server

log = logging.getLogger(__name__)
TITLE = "Sensitivity per layer (colour)"


def _settle(page, timeout_ms: int = 60_000) -> None:
    """Until Streamlit has finished its script run (no 'Running' status)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout_ms)
    page.wait_for_timeout(1000)


def shoot(url: str, out: Path, chromium: str, width: int = 1400) -> Path:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            # Streamlit scrolls inside its own container: a tall viewport lays the whole page out
            page = browser.new_page(viewport={"width": width, "height": 3200})
            page.goto(f"{url}/Results", wait_until="domcontentloaded")
            expect(page.get_by_text(TITLE).first).to_be_visible(timeout=120_000)
            _settle(page)
            # the row of per-layer pictures: the heatmap and its caption beside the heads / rank pictures
            row = page.locator('[data-testid="stHorizontalBlock"]').filter(has=page.get_by_text(TITLE)).last
            box = row.bounding_box()
            if box is None:
                raise RuntimeError("the Results page shows no sensitivity heatmap")
            pad = 16
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), clip={"x": max(0.0, box["x"] - pad), "y": max(0.0, box["y"] - pad),
                                                 "width": box["width"] + 2 * pad, "height": box["height"] + 2 * pad})
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True, help="run store holding a run with sensitivity data")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "sensitivity.png")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(args.home, Path(tmp) / "streamlit.log")
        try:
            log.info("wrote %s", shoot(url, args.out, args.chromium))
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
