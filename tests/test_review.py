"""The review page (#23): `run --review` and `facerestore review OUT` write one static page over a run's results, and a
real headless Chromium (tests/browser.py) opens it: it renders, its filters, sort, pages and before/after slider
answer clicks, nothing goes to the console, and no request leaves the page's folder."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import Chromium, chromium_binary
from cli_helpers import run_cli
from conftest import PHOTOS

DATA = re.compile(r'<script type="application/json" id="data">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def browser():
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium: install Debian's `chromium` (.ci/run does when it is missing)")
    chromium = Chromium(binary)
    yield chromium
    chromium.close()


def page_data(page: Path) -> dict:
    return json.loads(DATA.search(page.read_text(encoding="utf-8")).group(1))


def open_page(browser: Chromium, page: Path) -> None:
    browser.events.clear()
    browser.open(page.resolve().as_uri())
    browser.wait_for("Array.from(document.images).filter(i => i.getBoundingClientRect().top < innerHeight)"
                     ".every(i => i.complete && i.naturalWidth > 0)")


def assert_clean(browser: Chromium, page: Path) -> None:
    """No console message or failed load, and every request inside the page's folder."""
    assert browser.problems() == []
    folder = page.resolve().parent.as_uri() + "/"
    outside = [url for url in browser.requests() if not (url.startswith(folder) or url.startswith("data:"))]
    assert outside == []


def cards(browser: Chromium) -> list[str]:
    return browser.run("Array.from(document.querySelectorAll('article.card')).map(n => n.dataset.name)")


def test_run_review_shows_the_run_and_a_rerun_updates_it(tiny_ipc_home, tmp_path, capsys, monkeypatch, browser):
    from conftest import use_home

    use_home(monkeypatch, tiny_ipc_home)
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(PHOTOS / "old-portrait-01.jpg", inputs)
    (inputs / "broken.jpg").write_text("not an image")
    common = ("-o", out, "--preset", tiny_ipc_home / "difface-tiny.yaml", "--detector", "retinaface_mobile0.25",
              "--faces", "1", "--min-identity", "1.0", "--review")
    code, _o, err = run_cli(capsys, "run", inputs, *common, "--report", tmp_path / "run.jsonl")
    assert code == 1, err
    page = out / "review.html"
    assert "review: " in err and "thumbnails made for 2, kept for 0" in err
    entries = {e["name"]: e for e in page_data(page)["entries"]}
    assert set(entries) == {"broken.jpg", "old-portrait-01.jpg"}
    failed, portrait = entries["broken.jpg"], entries["old-portrait-01.jpg"]
    assert failed["status"] == "failed" and "not a recognised image" in failed["reason"] and not failed["before"]
    assert portrait["status"] == "restored" and portrait["before"] and portrait["after"]
    assert [(f["index"], f["gate"], f["threshold"], f["crop"]) for f in portrait["faces"]] == [(1, "original", 1.0, True)]
    assert portrait["faces"][0]["identity"] < 1.0 and len(portrait["skipped"]) == 4
    thumbs = out / "review_files"
    assert {p.name for p in thumbs.glob(portrait["thumb"] + "*")} == {
        f"{portrait['thumb']}_{s}.jpg" for s in ("b", "a", "1b", "1a")}

    shutil.copy(PHOTOS / "old-portrait-00.jpg", inputs)  # a rerun with one new photo
    code, _o, err = run_cli(capsys, "run", inputs, *common)
    assert code == 0, err
    assert "thumbnails made for 1, kept for 2" in err
    assert [e["name"] for e in page_data(page)["entries"]] == ["broken.jpg", "old-portrait-00.jpg",
                                                                "old-portrait-01.jpg"]
    code, _o, err = run_cli(capsys, "review", out, "--report", tmp_path / "run.jsonl", "-o", tmp_path / "r" / "a.html")
    assert code == 0, err
    assert [e["name"] for e in page_data(tmp_path / "r" / "a.html")["entries"]] == ["broken.jpg", "old-portrait-01.jpg"]
    assert (tmp_path / "r" / "a_files").is_dir()

    open_page(browser, page)
    shot = np.asarray(Image.open(io.BytesIO(browser.screenshot())).convert("RGB"))
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 500  # photos drawn, not a blank page
    assert cards(browser)[0] == "broken.jpg"  # failed first, then gated
    browser.click("#filters button[data-filter=failed]")
    assert cards(browser) == ["broken.jpg"]
    browser.click("#filters button[data-filter=skipped]")
    assert cards(browser) == ["old-portrait-00.jpg", "old-portrait-01.jpg"]
    name = "article[data-name='old-portrait-01.jpg']"
    assert browser.run(f"document.querySelector(\"{name} img.after\").style.clipPath") == "inset(0px 0px 0px 50%)"
    browser.click(f"{name} .compare input", fraction=0.2)
    left = browser.run(f"parseFloat(document.querySelector(\"{name} img.after\").style.clipPath.split(' ')[3])")
    assert 10 <= left <= 30
    assert_clean(browser, page)


def test_review_of_a_large_folder_pages_filters_sorts_and_loads_only_what_is_shown(tmp_path, capsys, browser):
    from review_data import make_output, photo_record

    count = 120
    out = make_output(tmp_path, count, sorted(PHOTOS.glob("*.jpg")))
    (out / "photo-00001.jpg").unlink()  # an output gone since its run: shown without it, and said
    code, _o, err = run_cli(capsys, "review", out)
    assert code == 0, err
    assert f"photo-00001.jpg: the output {out / 'photo-00001.jpg'} is not there (moved or deleted" in err
    page = out / "review.html"
    records = [photo_record(n, "", "") for n in range(count)]
    failed = [n for n, r in enumerate(records) if r["status"] == "failed"]
    gated = [n for n, r in enumerate(records) if any(f["gate"]["action"] != "pasted" for f in r["faces"])]
    skipped = sorted((n for n, r in enumerate(records) if r["skipped_faces"]), key=lambda n: (n not in gated, n))

    open_page(browser, page)
    scores = sorted(f["identity"]["vs_input"] for r in records for f in r["faces"])
    assert (f"identity p5 {scores[int(0.05 * len(scores))]:.3f}, median {scores[len(scores) // 2]:.3f}"
            in browser.run("document.getElementById('counts').textContent"))
    shown = cards(browser)
    assert len(shown) == 48 and shown[:len(failed)] == [f"photo-{n:05d}.jpg" for n in failed]
    assert shown[len(failed):len(failed) + len(gated)] == [f"photo-{n:05d}.jpg" for n in gated]
    thumbs = [u for u in browser.requests() if "/review_files/" in u]
    assert 0 < len(thumbs) <= 48 * 6  # the first page's pictures at most, not the folder's 120 photos'
    assert browser.run("document.getElementById('where').textContent") == "page 1 of 3 (120 photos)"
    browser.click("#next")
    assert browser.run("document.getElementById('where').textContent") == "page 2 of 3 (120 photos)"
    for key, expected in (("failed", failed), ("gated", gated), ("skipped", skipped)):
        browser.click(f"#filters button[data-filter={key}]")
        assert cards(browser) == [f"photo-{n:05d}.jpg" for n in expected][:48], key
    browser.click("#filters button[data-filter=all]")
    browser.run("(s => { s.value = 'identity'; s.dispatchEvent(new Event('change')); })(document.getElementById('sort'))")
    lowest = min((min(f["identity"]["vs_input"] for f in r["faces"]), n) for n, r in enumerate(records) if r["faces"])
    assert cards(browser)[0] == f"photo-{lowest[1]:05d}.jpg"
    assert_clean(browser, page)

    before = {p.name for p in (out / "review_files").iterdir()}
    (out / "photo-00002.jpg").unlink()
    code, _o, err = run_cli(capsys, "review", out)
    assert code == 0 and "thumbnails made for 1, kept for 119" in err
    after = {p.name for p in (out / "review_files").iterdir()}
    old = page_data(page)["entries"]
    key = next(e["thumb"] for e in old if e["name"] == "photo-00002.jpg")
    assert {n for n in before - after} and not any(n.startswith(key) and n.endswith("a.jpg") for n in after)


def test_review_refuses_what_is_not_a_run_and_writes_nothing(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(PHOTOS / "old-portrait-01.jpg", photos)
    code, _o, err = run_cli(capsys, "review", photos)
    assert code == 2 and "not the output folder of a finished run" in err
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    code, _o, err = run_cli(capsys, "review", photos, "--report", tmp_path / "bad.jsonl")
    assert code == 2 and "line 1 is not JSON" in err
    assert sorted(p.name for p in photos.iterdir()) == ["old-portrait-01.jpg"]
    code, _o, err = run_cli(capsys, "run", photos, "-o", tmp_path / "out", "--review", "--shard", "0/2")
    assert code == 2 and "facerestore review OUT" in err and not (tmp_path / "out").exists()
    code, _o, err = run_cli(capsys, "run", photos, "-o", tmp_path / "out", "--review", "--dry-run")
    assert code == 2 and "--dry-run writes nothing, and --review writes a page" in err
    assert not (tmp_path / "out").exists()
