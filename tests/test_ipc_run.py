"""End to end `facerestore run` with the ipc-guided preset (tiny DifFace parts + random full-size ArcFace)."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from cli_helpers import read_report, run_cli
from conftest import ALIGNED_LQ, PHOTOS, write_random_parsenet

DET = ("--detector", "retinaface_mobile0.25")


def aligned(capsys, preset, out, *args):
    report = out.parent / (out.name + ".jsonl")
    code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "256.png", "-o", out, "--preset", preset, "--aligned",
                            "--report", report, "-q", *args)
    assert code == 0, err
    records, _ = read_report(report)
    return np.asarray(Image.open(out / "256.png")), records[0]


def test_ipc_guided_restores_photos_and_reports_identity(tiny_ipc_env, tmp_path, capsys):
    report = tmp_path / "r.jsonl"
    code, out, err = run_cli(capsys, "run", PHOTOS / "old-portrait-00.jpg", "-o", tmp_path / "out", "--preset",
                             tiny_ipc_env, *DET, "--report", report, "--batch-size", 2, "-q")
    assert code == 0, err
    assert out == ""
    records, summary = read_report(report)
    rec = records[0]
    assert rec["status"] == "restored" and summary["faces"] == 4
    assert set(rec["weights"]) == {"difface-swinir", "difface-unet", "arcface-ir-se50", "retinaface-mobile0.25"}
    assert rec["parameters"]["guidance_scale"] == 100.0 and rec["parameters"]["id_mask"] == "proxy"
    for face in rec["faces"]:
        ident = face["identity"]
        assert set(ident) == {"vs_input", "vs_estimate"}
        assert all(-1.0 <= v <= 1.0 for v in ident.values())


def test_scale_zero_is_difface_with_the_same_parts(tiny_ipc_env, tmp_path, capsys):
    """Without guidance and with the unconditional prior, ipc-guided is exactly DifFace: same estimator, prior,
    start, sampler and noise streams (the ipc home holds the same tiny DifFace files as the difface-tiny preset)."""
    ipc, _ = aligned(capsys, tiny_ipc_env, tmp_path / "ipc", "--guidance-scale", 0, "--prior", "unconditional")
    dif, _ = aligned(capsys, tiny_ipc_env.parent / "difface-tiny.yaml", tmp_path / "dif")
    assert np.array_equal(ipc, dif)
    guided, _ = aligned(capsys, tiny_ipc_env, tmp_path / "guided", "--guidance-scale", 5000)
    assert not np.array_equal(guided, dif)


def test_id_mask_none_and_through_unet_run(tiny_ipc_env, tmp_path, capsys):
    a, rec = aligned(capsys, tiny_ipc_env, tmp_path / "none", "--id-mask", "none", "--guidance-scale", 5000)
    b, rec_b = aligned(capsys, tiny_ipc_env, tmp_path / "unet", "--guidance-through-unet", "--guidance-scale", 5000)
    assert rec["parameters"]["id_mask"] == "none" and rec_b["parameters"]["guidance_through_unet"] is True
    assert not np.array_equal(a, b)


def test_parsing_mask_uses_parsenet(tiny_ipc_home, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(tiny_ipc_home, home)
    write_random_parsenet(home / "weights")
    monkeypatch.setenv("FACERESTORE_HOME", str(home))
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
    _img, rec = aligned(capsys, home / "ipc-tiny.yaml", tmp_path / "out", "--id-mask", "parsing")
    assert "parsenet" in rec["weights"] and rec["parameters"]["id_mask"] == "parsing"


def test_identity_score_for_difface(tiny_ipc_home, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACERESTORE_HOME", str(tiny_ipc_home))
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
    _img, rec = aligned(capsys, tiny_ipc_home / "difface-tiny.yaml", tmp_path / "out", "--identity-score")
    assert "arcface-ir-se50" in rec["weights"]
    assert set(rec["faces"][0]["identity"]) == {"vs_input", "vs_estimate"}
    _img, rec = aligned(capsys, tiny_ipc_home / "difface-tiny.yaml", tmp_path / "plain")
    assert rec["faces"][0]["identity"] is None


def test_identity_score_without_arcface_weights_exits_4(tiny_env, tmp_path, capsys):
    code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "256.png", "-o", tmp_path / "o", "--preset", tiny_env,
                            "--aligned", "--identity-score")
    assert code == 4 and "recognition_arcface_ir_se50.pth" in err


def test_guidance_knobs_are_refused_by_other_methods(tiny_env, tmp_path, capsys):
    for args in (("--guidance-scale", 1), ("--id-mask", "proxy")):
        code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "256.png", "-o", tmp_path / "o", "--preset", tiny_env,
                                "--aligned", *args)
        assert code == 2 and "is not used by method" in err


def test_bad_id_mask_is_usage_error(tiny_ipc_env, tmp_path, capsys):
    code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "256.png", "-o", tmp_path / "o", "--preset", tiny_ipc_env,
                            "--aligned", "--id-mask", "eyes")
    assert code == 2 and "--id-mask" in err


def test_a_preset_without_the_paper_parts_names_them(tiny_ipc_env, tmp_path, capsys):
    """A copy of ipc-guided's preset from before its paper configuration (no ipc_substitute, conditional_prior,
    mask) is a usage error naming the missing components, not a crash."""
    import yaml

    data = yaml.safe_load(tiny_ipc_env.read_text())
    for role in ("ipc_substitute", "conditional_prior", "mask"):
        del data["components"][role]
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(data))
    code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "256.png", "-o", tmp_path / "o", "--preset", old, "--aligned")
    assert code == 2 and "ipc_substitute, conditional_prior, mask" in err, err
