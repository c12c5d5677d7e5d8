"""Is the review page usable at 10,000 photos? Builds one over an output folder of COUNT photos (tests/review_data.py:
small photos, two faces each, some gated, failed or with a face left out), then opens it in headless Chromium and
times what a user waits for: the page's load event, the first page of cards with their pictures, a filter click and
a sort over all photos. Also the page's size, the thumbnails' count and size, and a rebuild with nothing changed.
Written to benchmarks/results/review-scale-DATE/result.json.

    python benchmarks/review_scale.py [--count 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def timed(step):
    started = time.perf_counter()
    value = step()
    return round(time.perf_counter() - started, 3), value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()

    from browser import Chromium, chromium_binary
    from conftest import PHOTOS
    from review_data import make_output

    from facerestore_cli.review import build, thumbs_folder

    result = {"count": args.count, "cpu": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="review-scale-") as tmp:
        out = make_output(Path(tmp), args.count, sorted(PHOTOS.glob("*.jpg")))
        result["build_s"], review = timed(lambda: build(out))
        result["rebuild_unchanged_s"], again = timed(lambda: build(out))
        assert review.made == args.count and again.reused == args.count, (review, again)
        thumbs = list(thumbs_folder(review.page).iterdir())
        result["page_bytes"] = review.page.stat().st_size
        result["thumbnail_files"] = len(thumbs)
        result["thumbnail_bytes"] = sum(p.stat().st_size for p in thumbs)

        browser = Chromium(chromium_binary())
        try:
            seen = len(browser.events)
            result["load_event_s"], _ = timed(lambda: browser.open(review.page.as_uri()))
            result["first_page_with_pictures_s"], _ = timed(lambda: browser.wait_for(
                "document.querySelectorAll('article.card').length > 0 && Array.from(document.images)"
                ".filter(i => i.getBoundingClientRect().top < innerHeight).every(i => i.complete)"))
            result["first_page_with_pictures_s"] += result["load_event_s"]
            result["requests_at_load"] = len([e for e in browser.events[seen:]
                                              if e["method"] == "Network.requestWillBeSent"])
            result["filter_click_ms"] = browser.run(
                "(() => { const t = performance.now(); document.querySelector('#filters button[data-filter=gated]')"
                ".click(); return Math.round(performance.now() - t); })()")
            result["sort_all_ms"] = browser.run(
                "(() => { const t = performance.now(); const s = document.getElementById('sort'); s.value = 'identity';"
                " s.dispatchEvent(new Event('change')); return Math.round(performance.now() - t); })()")
            result["heap_mb"] = round(browser.run("performance.memory ? performance.memory.usedJSHeapSize : 0") / 2**20, 1)
            result["console_problems"] = browser.problems()
        finally:
            browser.close()
    folder = REPO / "benchmarks" / "results" / f"review-scale-{date.today().isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
