"""The README's flows run as written (#25): train → export → run, shards → report merge, bench. Each command is
taken from the README by its exact text (so a README edit that breaks one fails here), its placeholder paths are
mapped into a temporary folder, and test sizes are appended after it (a later option wins: tiny networks, one
step, the mobile0.25 detector); nothing else is changed."""

from __future__ import annotations

import json
import shlex
import shutil

import pytest
import yaml

from archival_helpers import invoke, make_one_face_photos, report_lines
from conftest import ALIGNED_LQ, REPO, TINY_IRM1, TINY_IRM2, use_home

README = (REPO / "README.md").read_text(encoding="utf-8")
MOBILE = ("--detector", "retinaface_mobile0.25")


def readme_command(text: str, paths: dict[str, str], *test_sizes) -> list[str]:
    """The README command `text` (a code line; continuation lines joined), its paths mapped (on the text, so a
    mapping to "" drops an option and its value), then the test sizes."""
    assert text in README, f"not in the README as written: {text}"
    line = " ".join(part.rstrip("\\").strip() for part in text.split("\n"))
    for old, new in paths.items():
        line = line.replace(old, new)
    words = shlex.split(line)
    assert words[0] == "facerestore"
    return [*words[1:], *map(str, test_sizes)]


def run(words):
    code, out, err = invoke(*words)
    assert code == 0, f"{' '.join(map(str, words))}\n{err}"
    return out


@pytest.fixture
def home(tiny_home, tmp_path, monkeypatch):
    copy = tmp_path / "home"
    shutil.copytree(tiny_home, copy)
    use_home(monkeypatch, copy)
    return copy


def test_train_export_run(home, tmp_path):
    """DiffBFR's two IRMs trained, exported (their tiny configurations recorded beside them) and run through the
    built-in diffbfr preset, which names no configuration."""
    configs = {}
    for name, config in (("irm1", TINY_IRM1), ("irm2", TINY_IRM2)):
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(config))
    photos = make_one_face_photos(tmp_path / "photos", ["portrait.png"])[0].parent
    paths = {"~/ffhq512": str(ALIGNED_LQ), "runs/": f"{tmp_path}/runs/", "./photos": str(photos),
             "./restored": str(tmp_path / "restored")}
    small = ("--steps", "1", "--batch-size", "1", "--workers", "0", "--device", "cpu")
    run(readme_command("facerestore train diffbfr-irm1 --data ~/ffhq512 -o runs/irm1 --batch-size 16", paths,
                       "--model-config", configs["irm1"], *small))
    run(readme_command("facerestore train export runs/irm1", paths))
    run(readme_command("facerestore train diffbfr-irm2 --data ~/ffhq512 -o runs/irm2 --batch-size 4 --grad-accum 4",
                       paths, "--model-config", configs["irm2"], "--grad-accum", "1", "--irm1-steps", "2", *small))
    run(readme_command("facerestore train export runs/irm2", paths))
    assert "BAD" not in run(["weights", "verify"])
    run(readme_command("facerestore run ./photos -o ./restored --method diffbfr", paths, *MOBILE, "--irm1-steps", "2",
                       "--irm2-start-t", "2", "--irm2-steps", "2", "--tem-start-t", "2", "--tem-steps", "2"))
    assert (tmp_path / "restored" / "portrait.png").is_file()


def test_shards_then_merge(home, tmp_path):
    """The Slurm array's command for each task, then the merge it runs after the array: one report of every photo.
    --preset (the tiny difface) stands in for --method difface, whose full-size networks a test cannot load."""
    scans = make_one_face_photos(tmp_path / "scans", ["a.png", "b.png", "c.png"])[0].parent
    paths = {"/archive/scans": str(scans), "/archive/restored": str(tmp_path / "restored"),
             "reports/": f"{tmp_path}/", "all.jsonl": str(tmp_path / "all.jsonl"), "--method difface": ""}
    slurm = ('facerestore run /archive/scans -r -o /archive/restored --method difface \\\n'
             '        --shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT" '
             '--report "reports/shard-$SLURM_ARRAY_TASK_ID.jsonl"')
    for task in ("0", "1"):
        words = readme_command(slurm, {**paths, "$SLURM_ARRAY_TASK_ID": task, "$SLURM_ARRAY_TASK_COUNT": "2"},
                               "--preset", home / "difface-tiny.yaml", *MOBILE, "--steps", "1", "-q")
        run(words)
    run(readme_command("facerestore report merge /archive/restored --report all.jsonl", paths))  # the sbatch --wrap
    lines = report_lines(tmp_path / "all.jsonl")
    assert lines[-1]["summary"]["restored"] == 3 and len(lines) == 4


def test_bench(home, tmp_path):
    photos = make_one_face_photos(tmp_path / "photos", ["portrait.png"])[0].parent
    words = readme_command("facerestore bench ./photos --method difface --steps 20 --reference --save bench.json",
                           {"./photos": str(photos), "bench.json": str(tmp_path / "bench.json"),
                            "--method difface": ""},
                           "--preset", home / "difface-tiny.yaml", *MOBILE, "--steps", "1", "--no-startup")
    run(words)
    result = json.loads((tmp_path / "bench.json").read_text())
    assert set(result["passes"]) == {"pipeline", "reference"}
