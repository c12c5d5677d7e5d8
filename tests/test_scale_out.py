"""Scale-out (#15): the same outputs from a plain run, 2 shards, 2 local worker processes and a local Ray run; shard
locks and states, reruns and `report merge`; a worker that dies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archival_helpers import PLUGIN_PREAMBLE, invoke, report_lines, tiny_run
from conftest import ALIGNED_LQ, PHOTOS, REPO, home_environment, require_shared


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    require_shared()
    src = tmp_path_factory.mktemp("in")
    for name in ("old-portrait-00.jpg", "old-portrait-01.jpg"):
        shutil.copy(PHOTOS / name, src / name)
    (src / "sub").mkdir()
    shutil.copy(PHOTOS / "old-portrait-01.jpg", src / "sub" / "again.jpg")
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(src / "sub" / "flat.png")  # no face
    return src


@pytest.fixture(scope="module")
def plain(tiny_home, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    with home_environment(tiny_home):
        code, _o, err = tiny_run(tiny_home / "difface-tiny.yaml", inputs, "-r", "-o", out)
    assert code == 0, err
    return out


def outputs(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def test_shards_split_the_inputs_by_a_stable_hash():
    from facerestore_cli.shards import in_shard, parse_shard

    rels = [f"scans/box{i // 10}/img_{i:04}.tif" for i in range(400)]
    parts = [[r for r in rels if in_shard(r, (i, 3))] for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(rels) and all(90 < len(p) < 180 for p in parts)
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)


def test_two_shards_make_the_plain_outputs_and_merge_into_one_state(tiny_home, inputs, plain, tmp_path):
    from facerestore_cli.state import STATE_NAME

    preset, out = tiny_home / "difface-tiny.yaml", tmp_path / "out"
    with home_environment(tiny_home):
        for i in (0, 1):
            code, _o, err = tiny_run(preset, inputs, "-r", "-o", out, "--shard", f"{i}/2",
                                     "--report", tmp_path / f"shard{i}.jsonl")
            assert code == 0, err
        states = sorted(p.name for p in out.glob(".facerestore-state*.json"))
        assert states == [".facerestore-state.shard-0-of-2.json", ".facerestore-state.shard-1-of-2.json"]
        shard_records = [r for i in (0, 1) for r in report_lines(tmp_path / f"shard{i}.jsonl")[:-1]]
        assert sorted(r["input"] for r in shard_records) == sorted(str(p) for p in inputs.rglob("*") if p.is_file())
        assert outputs(out) == outputs(plain)
        # a shard's rerun and an unsharded dry run see all the shards' work as done
        code, stdout, _e = invoke("run", inputs, "-r", "-o", out, "--preset", preset, "--detector",
                                  "retinaface_mobile0.25", "--dry-run")
        assert code == 0 and [line.split("\t")[0] for line in stdout.splitlines()] == ["skip"] * 4
        code, _o, err = tiny_run(preset, inputs, "-r", "-o", out, "--report", tmp_path / "again.jsonl")
        assert code == 0 and report_lines(tmp_path / "again.jsonl")[-1]["summary"]["skipped"] == 4, err
        left = out / "sub" / ".flat.png.1a2b3c4d.tmp"  # an atomic write a killed shard left behind
        left.write_bytes(b"partial")
        code, _o, err = invoke("report", "merge", out, "--report", tmp_path / "merged.jsonl")
    assert code == 0, err
    assert not left.exists()
    merged = report_lines(tmp_path / "merged.jsonl")
    assert [p.name for p in out.glob(".facerestore-state*.json")] == [STATE_NAME]
    assert len(json.loads((out / STATE_NAME).read_text())["entries"]) == 4
    assert merged[-1]["summary"]["restored"] == 3 and merged[-1]["summary"]["no_face"] == 1
    assert {r["input"] for r in merged[:-1]} == {r["input"] for r in shard_records}


def test_shard_and_unsharded_runs_exclude_each_other(tiny_home, inputs, tmp_path):
    from facerestore_cli.runlock import run_lock

    preset, out = tiny_home / "difface-tiny.yaml", tmp_path / "out"
    with home_environment(tiny_home):
        with run_lock(out):  # an unsharded run holds OUT: no shard may start
            code, _o, err = tiny_run(preset, inputs / "sub" / "flat.png", "-o", out, "--shard", "0/2")
        assert code == 75 and "in use by another facerestore run" in err
        with run_lock(out, shard=(1, 2)):  # a shard holds OUT shared: other shards may run, an unsharded run not
            code, _o, err = tiny_run(preset, inputs / "sub" / "flat.png", "-o", out, "--shard", "0/2")
            assert code == 0, err
            code, _o, err = tiny_run(preset, inputs / "sub" / "flat.png", "-o", out)
        assert code == 75 and "shards of a split run" in err and ".facerestore.shard-1-of-2.lock" in err
        code, _o, err = invoke("report", "merge", out, "--report", tmp_path / "r.jsonl")
        assert code == 0, err


def test_two_local_workers_make_the_plain_outputs(tiny_home, inputs, plain, tmp_path):
    with home_environment(tiny_home):
        code, _o, err = tiny_run(tiny_home / "difface-tiny.yaml", inputs, "-r", "-o", tmp_path / "out",
                                 "--device", "cpu,cpu", "--report", tmp_path / "r.jsonl")
    assert code == 0, err
    assert outputs(tmp_path / "out") == outputs(plain)
    lines = report_lines(tmp_path / "r.jsonl")
    assert lines[-1]["summary"]["restored"] == 3 and lines[0]["device"] == "2 workers (cpu, cpu; fp32)"


def test_local_ray_run_makes_the_plain_outputs(tiny_home, inputs, plain, tmp_path):
    """A fresh process, as a user runs it: the header names the engine, and Ray's own talk stays off stderr (its C++
    core prints one line when its log level is set, and nothing else)."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'facerestore[ray]')")
    env = {**os.environ, "FACERESTORE_HOME": str(tiny_home), "FACERESTORE_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "facerestore_cli", "run", inputs, "-r", "-o", tmp_path / "out",
                           "--preset", tiny_home / "difface-tiny.yaml", "--detector", "retinaface_mobile0.25",
                           "--engine", "ray", "--report", tmp_path / "r.jsonl"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    code, err = done.returncode, done.stderr
    assert code == 0, err
    assert err.splitlines()[0].endswith("engine ray"), err
    ray_lines = [line for line in err.splitlines() if not line.startswith(("facerestore:", "[", "done:"))
                 or " logging.cc:" in line or "core_worker" in line]
    assert len(ray_lines) <= 1 and all("Set ray log level" in line for line in ray_lines), err
    assert outputs(tmp_path / "out") == outputs(plain)
    lines = report_lines(tmp_path / "r.jsonl")
    assert lines[-1]["summary"]["restored"] == 3 and lines[0]["device"].startswith("ray: cpu")


MORTAL_MODULE = PLUGIN_PREAMBLE + '''
class Mortal:
    def restore(self, faces, generators, callback=None):
        from facerestore_cli.methods.base import Restoration

        flag = os.environ["MORTAL_FLAG"]
        try:
            os.rename(flag, flag + ".taken")  # the first worker to get here dies, once
        except FileNotFoundError:
            return Restoration(1.0 - faces)
        os._exit(9)


def build(preset, params, networks):
    return Mortal()
'''


def test_a_dead_worker_fails_its_photos_the_others_go_on_and_a_rerun_redoes_them(tmp_path, monkeypatch):
    require_shared()
    (tmp_path / "mortal.py").write_text(MORTAL_MODULE)
    (tmp_path / "mortal.yaml").write_text("name: mortal\nmethod: mortal\nface_size: 64\ncomponents: {}\n"
                                          "parameters:\n  seed: 1\n")
    (tmp_path / "flag").touch()
    monkeypatch.setenv("MORTAL_FLAG", str(tmp_path / "flag"))
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    src = tmp_path / "in"
    src.mkdir()
    for crop in sorted(ALIGNED_LQ.glob("*.png"))[:6]:
        Image.open(crop).resize((64, 64)).save(src / crop.name)
    args = ("run", src, "-o", tmp_path / "out", "--preset", tmp_path / "mortal.yaml", "--aligned", "--device",
            "cpu,cpu", "-q")
    code, _o, err = invoke(*args, "--report", tmp_path / "first.jsonl")
    first = report_lines(tmp_path / "first.jsonl")
    failed = [r for r in first[:-1] if r["status"] == "failed"]
    assert code == 1 and "the worker on cpu died (exit code 9); the other workers go on" in err
    assert 1 <= len(failed) and first[-1]["summary"]["restored"] == 6 - len(failed)
    assert all("died" in r["reason"] for r in failed)
    code, _o, err = invoke(*args, "--report", tmp_path / "second.jsonl")
    second = report_lines(tmp_path / "second.jsonl")
    assert code == 0, err
    redone = [r for r in second[:-1] if r["status"] == "restored"]
    assert sorted(r["input"] for r in redone) == sorted(r["input"] for r in failed)
    assert {r["why"] for r in redone} == {"its worker died in the previous run"}


def test_shards_split_the_same_tree_alike_from_any_mount_point(tiny_home, tmp_path):
    """A cluster mounts the archive at different paths on different nodes: the split and the outputs follow the paths
    inside the input folder, not where it is mounted. Three shards run through three absolute paths to one tree (the
    folder itself, a symlink to it, a folder under a symlinked parent) do every photo exactly once."""
    from facerestore_cli.discover import discover
    from facerestore_cli.shards import in_shard
    from facerestore_cli.state import STATE_NAME

    real = tmp_path / "nfs" / "volume7" / "archive"
    for i in range(12):
        folder = real / f"box{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((24, 32, 3), 20 * i, np.uint8)).save(folder / f"scan{i:02}.png")
    (tmp_path / "node1").mkdir()
    (tmp_path / "node1" / "archive").symlink_to(real)
    (tmp_path / "node2").symlink_to(real.parent)
    mounts = [real, tmp_path / "node1" / "archive", tmp_path / "node2" / "archive"]
    out = tmp_path / "out"
    rels = [sorted(job.rel for job in discover([m], out, recursive=True).jobs) for m in mounts]
    assert rels[0] == rels[1] == rels[2] and len(rels[0]) == 12
    parts = [[r for r in rels[0] if in_shard(r, (i, 3))] for i in range(3)]
    assert sorted(sum(parts, [])) == rels[0] and all(parts)
    with home_environment(tiny_home):
        for i, mount in enumerate(mounts):
            code, _o, err = tiny_run(tiny_home / "difface-tiny.yaml", mount, "-r", "-o", out, "--shard", f"{i}/3",
                                     "--report", tmp_path / f"shard{i}.jsonl")
            assert code == 0, err
        done = [[str(Path(r["input"]).relative_to(mounts[i])) for r in report_lines(tmp_path / f"shard{i}.jsonl")[:-1]]
                for i in range(3)]
        assert [sorted(d) for d in done] == parts
        code, _o, err = invoke("report", "merge", out, "--report", tmp_path / "merged.jsonl")
        assert code == 0, err
        assert sorted(json.loads((out / STATE_NAME).read_text())["entries"]) == rels[0]
        code, _o, err = tiny_run(tiny_home / "difface-tiny.yaml", mounts[1], "-r", "-o", out, "--report",
                                 tmp_path / "again.jsonl")
    assert code == 0 and report_lines(tmp_path / "again.jsonl")[-1]["summary"]["skipped"] == 12, err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == rels[0]
