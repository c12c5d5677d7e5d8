"""With parsing_parsenet.pth in the cache, `run` pastes faces back with the ParseNet mask and reports it."""

from __future__ import annotations

import hashlib
import shutil

from PIL import Image

from cli_helpers import read_report, run_cli
from conftest import PHOTOS, write_random_parsenet


def test_parsenet_mask_is_used_and_reported(tiny_home, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    shutil.copytree(tiny_home, home)  # never touch the session home
    parsenet_file = write_random_parsenet(home / "weights", seed=0)
    monkeypatch.setenv("FACERESTORE_HOME", str(home))
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")

    # A full-size ParseNet forward costs seconds per face on a CPU: use a one-face crop of old-portrait-01.jpg.
    photo = tmp_path / "in" / "old-portrait-01-face.jpg"
    photo.parent.mkdir()
    Image.open(PHOTOS / "old-portrait-01.jpg").convert("RGB").crop((75, 90, 160, 189)).save(photo, quality=95)
    report = tmp_path / "r.jsonl"
    code, out, err = run_cli(capsys, "run", photo, "-o", tmp_path / "out", "--preset", home / "difface-tiny.yaml",
                             "--detector", "retinaface_mobile0.25", "--report", report, "-q")
    assert code == 0, err
    assert out == ""
    records, summary = read_report(report)
    assert summary["restored"] == 1 and summary["failed"] == 0
    rec = records[0]
    assert rec["status"] == "restored" and len(rec["faces"]) == 1
    assert rec["mask"] == "parsenet-in-square"
    assert set(rec["weights"]) == {"difface-swinir", "difface-unet", "retinaface-mobile0.25", "parsenet"}
    assert rec["weights"]["parsenet"] == hashlib.sha256(parsenet_file.read_bytes()).hexdigest()
    result = Image.open(tmp_path / "out" / photo.name)
    assert result.size == Image.open(photo).size
    assert not (tiny_home / "weights" / "parsing_parsenet.pth").exists()
