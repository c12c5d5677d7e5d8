"""End to end `facerestore run` with the dr2 preset: tiny random DR2 networks in the official layouts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from cli_helpers import read_report, run_cli
from conftest import ALIGNED_LQ, KEEPING_PARAMETERS, PHOTOS, PRESET_FACE_PARAMETERS, TINY_DR2_FACE_SIZE

DET = ("--detector", "retinaface_mobile0.25")


def test_dr2_restores_whole_photos(tiny_dr2_env, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("old-portrait-00.jpg", "whole-02.png"):
        shutil.copy(PHOTOS / name, src / name)
    report = tmp_path / "r.jsonl"
    code, out, err = run_cli(capsys, "run", src, "-o", tmp_path / "out", "--preset", tiny_dr2_env, *DET,
                             "--dr2-n", 4, "--dr2-tau", 22, "--report", report, "--save-faces", "-q")
    assert code == 0, err
    assert out == ""
    records, summary = read_report(report)
    assert summary["restored"] == 2 and summary["faces"] == 8
    for rec in records:
        assert rec["status"] == "restored" and rec["method"] == "dr2-tiny"
        assert rec["parameters"] == {"dr2_n": 4, "dr2_tau": 22, "enhancer": "sparnethd", "prior": "dr2", "seed": 12345,
                                     "detector": "retinaface_mobile0.25", **PRESET_FACE_PARAMETERS, "detect_max_side": None,
                                     "aligned": False, "precision": "fp32", "compile": False,
                                     "channels_last": False, "tool_version": "0.1.0", **KEEPING_PARAMETERS}
        assert set(rec["weights"]) == {"dr2-unet", "dr2-sparnethd", "retinaface-mobile0.25"}
        a = Image.open(rec["input"])
        b = Image.open(rec["output"])
        assert (a.size, a.format, a.mode) == (b.size, b.format, b.mode)
    crop = Image.open(sorted((tmp_path / "out" / "_faces").glob("old-portrait-00_face*.png"))[0])
    assert crop.size == (TINY_DR2_FACE_SIZE, TINY_DR2_FACE_SIZE)


def test_dr2_aligned_inputs(tiny_dr2_env, tmp_path, capsys):
    report = tmp_path / "r.jsonl"
    code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "256.png", ALIGNED_LQ / "265.png", "-o", tmp_path / "out",
                            "--preset", tiny_dr2_env, "--aligned", "--report", report, "-q")
    assert code == 0, err
    records, _ = read_report(report)
    for rec in records:
        assert rec["status"] == "restored"
        assert Image.open(rec["output"]).size == (512, 512)
        lq = np.asarray(Image.open(rec["input"]), dtype=np.int16)
        assert np.abs(np.asarray(Image.open(rec["output"]), dtype=np.int16) - lq).mean() > 1


@pytest.mark.parametrize("flag, value, needle", [("--steps", 50, "ω − τ + 1"), ("--eta", 0.3, "no η"),
                                                 ("--start-t", 300, "ω = min")])
def test_dr2_rejects_knobs_it_does_not_use(tiny_dr2_env, tmp_path, capsys, flag, value, needle):
    code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "256.png", "-o", tmp_path / "o", "--preset", tiny_dr2_env,
                            "--aligned", flag, value)
    assert code == 2
    assert f"{flag} is not used by method 'dr2-tiny'" in err and needle in err and "--dr2-n" in err


@pytest.mark.parametrize("args, needle", [(("--dr2-tau", 99), "--dr2-tau"), (("--dr2-enhancer", "gfpgan"), "--dr2-enhancer"),
                                          (("--dr2-prior", "sd"), "--dr2-prior"), (("--dr2-n", 0), "--dr2-n")])
def test_dr2_bad_values_are_usage_errors(tiny_dr2_env, tmp_path, capsys, args, needle):
    code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "256.png", "-o", tmp_path / "o", "--preset", tiny_dr2_env,
                            "--aligned", *args)
    assert code == 2 and needle in err


def test_difface_rejects_dr2_knobs(tiny_env, tmp_path, capsys):
    code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "256.png", "-o", tmp_path / "o", "--preset", tiny_env,
                            "--aligned", "--dr2-n", 8)
    assert code == 2 and "--dr2-n is not used by method" in err


def test_enhancer_none_needs_no_sparnethd_and_writes_the_coarse_output(tiny_dr2_home, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    shutil.copytree(tiny_dr2_home, home)
    (home / "weights" / "SPARNetHD_FFHQ_DR2aug.pth").unlink()
    monkeypatch.setenv("FACERESTORE_HOME", str(home))
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
    report = tmp_path / "r.jsonl"
    args = ("run", ALIGNED_LQ / "256.png", "-o", tmp_path / "out", "--preset", home / "dr2-tiny.yaml", "--aligned")
    code, _o, err = run_cli(capsys, *args)
    assert code == 4 and "SPARNetHD_FFHQ_DR2aug.pth" in err and "facerestore weights import dr2-sparnethd" in err
    code, _o, err = run_cli(capsys, *args, "--dr2-enhancer", "none", "--report", report, "-q")
    assert code == 0, err
    records, _ = read_report(report)
    assert set(records[0]["weights"]) == {"dr2-unet"} and records[0]["parameters"]["enhancer"] == "none"


def test_p2_prior_is_accepted(tiny_dr2_env, tmp_path, capsys):
    outs = {}
    for prior in ("dr2", "p2"):
        report = tmp_path / f"{prior}.jsonl"
        code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "256.png", "-o", tmp_path / prior, "--preset", tiny_dr2_env,
                                "--aligned", "--dr2-prior", prior, "--report", report, "-q")
        assert code == 0, err
        records, _ = read_report(report)
        assert ("p2-ffhq" in records[0]["weights"]) == (prior == "p2")
        outs[prior] = np.asarray(Image.open(tmp_path / prior / "256.png"))
    assert not np.array_equal(outs["dr2"], outs["p2"])


def test_dr2_batch_invariance(tiny_dr2_env, tmp_path, capsys):
    crops = {}
    for label, extra in (("alone", []), ("with-group", [PHOTOS / "group-of-eight.jpg"])):
        out = tmp_path / label
        code, _o, err = run_cli(capsys, "run", *extra, PHOTOS / "old-portrait-00.jpg", "-o", out, "--preset",
                                tiny_dr2_env, *DET, "--batch-size", 3, "--save-faces", "-q")
        assert code == 0, err
        crops[label] = sorted((out / "_faces").glob("old-portrait-00_face*.png"))
    assert len(crops["alone"]) == len(crops["with-group"]) == 4
    for a, b in zip(crops["alone"], crops["with-group"]):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), a.name


def test_dr2_seed_reproducible(tiny_dr2_env, tmp_path, capsys):
    def once(label, seed):
        code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "2073.png", "-o", tmp_path / label, "--preset",
                                tiny_dr2_env, "--aligned", "--seed", seed, "-q")
        assert code == 0, err
        return np.asarray(Image.open(tmp_path / label / "2073.png"))

    a, b, c = once("a", 3), once("b", 3), once("c", 4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.slow
def test_import_dr2_checkpoints_checks_their_layout(tmp_path, monkeypatch, capsys):
    """`weights import dr2-unet PATH` accepts a file in the official DR2_FFHQ.pkl layout (built from the manifest,
    full size), records its sha256, and rejects a file of another network with a readable summary."""
    import hashlib

    import torch

    from conftest import SHARED, require_shared
    from facerestore_cli.archs.layout import load_manifest

    require_shared()
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    manifest = load_manifest(SHARED / "checkpoint-formats" / "dr2_unet_ffhq256.json")
    official = tmp_path / "downloads" / "DR2_FFHQ.pkl"
    official.parent.mkdir()
    torch.save({k: torch.zeros(shape) for k, shape, _dtype in manifest["tensors"]}, official)
    code, _o, err = run_cli(capsys, "weights", "import", "dr2-unet", official)
    assert code == 0, err
    cached = tmp_path / "home" / "weights" / "DR2_FFHQ.pkl"
    assert cached.read_bytes() == official.read_bytes()
    assert hashlib.sha256(official.read_bytes()).hexdigest() in err
    official.unlink()
    cached.unlink()

    wrong = tmp_path / "downloads" / "not-dr2.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, wrong)
    code, _o, err = run_cli(capsys, "weights", "import", "p2-ffhq", wrong)
    assert code == 4 and "missing key" in err and "unexpected key" in err
    assert not (tmp_path / "home" / "weights" / "ffhq_p2.pt").exists()
