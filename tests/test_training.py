"""`facerestore degrade` and `facerestore train`: the papers' degradations (determinism, each parameter's effect),
training that learns, exact resume, export → import → run, the IPC's identity loss, data-parallel equivalence, and
the bad inputs an operator meets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from archival_helpers import invoke
from conftest import ALIGNED_HQ, ALIGNED_LQ, REPO, TINY_IRM1, TINY_IRM2, require_shared, use_home
from facerestore_cli.degrade import MODELS, add_noise, image_rng

TINY_SWINIR_64 = {"img_size": 8, "embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4, "mlp_ratio": 2.0}


def tiny_config(tmp_path, config: dict, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train(tmp_path, target: str, run, config: dict, *args):
    return invoke("train", target, "--data", ALIGNED_LQ, "-o", run, "--model-config",
                  tiny_config(tmp_path, config, target), "--workers", "0", "--warmup", "5", "--lr", "2e-4",
                  "--device", "cpu", *args)


def tensors(path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    flat = {f"model.{k}": v for k, v in state["model"].items()}
    flat.update({f"ema.{k}": v for k, v in state["ema"].items()})
    for i, s in state["optimizer"]["state"].items():
        flat.update({f"adam.{i}.{k}": v for k, v in s.items() if torch.is_tensor(v)})
    return flat


# -- degrade -----------------------------------------------------------------------------------------------------

def test_degrade_is_deterministic_and_records_its_parameters(tmp_path):
    require_shared()
    outs = []
    for run in ("a", "b"):
        code, _o, err = invoke("degrade", ALIGNED_LQ, "-o", tmp_path / run, "--model", "diffbfr", "--seed", "3")
        assert code == 0, err
        outs.append(tmp_path / run)
    names = sorted(p.name for p in outs[0].glob("*.png"))
    assert len(names) == len(list(ALIGNED_LQ.glob("*.png")))
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    records = [json.loads(line) for line in (outs[0] / "degradations.jsonl").read_text().splitlines()]
    assert all(r["status"] == "degraded" and r["equation"] == "DiffBFR Eq. 13" for r in records)
    p = records[0]["params"]
    assert 0.1 <= p["blur"] <= 10 and 0.8 <= p["scale"] <= 8 and 0 <= p["noise"] <= 20 and 60 <= p["quality"] <= 100
    assert Image.open(outs[0] / names[0]).size == Image.open(ALIGNED_LQ / names[0]).size  # back to the input size
    code, _o, _e = invoke("degrade", ALIGNED_LQ, "-o", tmp_path / "c", "--model", "diffbfr", "--seed", "4")
    assert (tmp_path / "c" / names[0]).read_bytes() != (outs[0] / names[0]).read_bytes()


# model → parameter → (low, high) of its paper's ranges (degrade.py's docstring cites each equation)
RANGES = {"diffbfr": {"blur": (0.1, 10), "scale": (0.8, 8), "noise": (0, 20), "quality": (60, 100)},
          "difface": {"blur": (0.1, 15), "scale": (0.8, 32), "noise": (0, 20), "quality": (30, 100)},
          "dnr": {"blur": (0.1, 10), "scale": (1, 32), "noise": (0, 20), "quality": (30, 90)}}
# DifFace Appendix A: the sets its CelebA-Test draws from
CELEBA_TEST = {"scale": {4, 8, 16, 20, 24, 28, 32, 36, 40}, "noise": {1, 5, 10, 15, 20}, "quality": {30, 40, 50, 60, 70},
               "lx": {4, 8, 12, 16}, "ly": {4, 8, 12, 16}, "theta": {0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4}}


@pytest.fixture(scope="module")
def five_hundred_faces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("five-hundred")
    rng = np.random.default_rng(0)
    for i in range(500):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"face{i:03d}.png")
    return folder


@pytest.mark.parametrize("model", ["diffbfr", "difface", "difface-celeba-test", "dr2", "dnr"])
def test_degradation_parameters_stay_inside_their_papers_ranges_and_cover_them(model, five_hundred_faces, tmp_path):
    """`degrade` over 500 images: every parameter degradations.jsonl records lies inside its paper's range, and the
    draws reach both ends of it (within 5 % of its width; a whole-number range exactly), a set's every member;
    DR2 draws every split and every r, each split's σ, δ, q inside that split's ranges; DiffBFR's gray draws are
    rare (probability 0.01)."""
    from facerestore_cli.degrade import DR2_SCALES, DR2_SPLITS

    code, _o, err = invoke("degrade", five_hundred_faces, "-o", tmp_path / "lq", "--model", model)
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "lq" / "degradations.jsonl").read_text().splitlines()]
    assert len(records) == 500 and {r["status"] for r in records} == {"degraded"}
    draws = [r["params"] for r in records]
    if model == "difface-celeba-test":
        for name, members in CELEBA_TEST.items():
            values = [d["kernel"][name] if name in ("lx", "ly", "theta") else d[name] for d in draws]
            assert {round(v, 6) for v in values} == {round(float(m), 6) for m in members}, name
        return
    if model == "dr2":
        assert {d["split"] for d in draws} == set(DR2_SPLITS) and {d["scale"] for d in draws} == set(DR2_SCALES)
        assert {d["noise_kind"] for d in draws} == {"gaussian", "laplace", "poisson"}
        ranges = {split: dict(zip(("blur", "noise", "quality"), bounds)) for split, bounds in DR2_SPLITS.items()}
        groups = {split: [d for d in draws if d["split"] == split] for split in DR2_SPLITS}
    else:
        ranges, groups = {model: RANGES[model]}, {model: draws}
        gray = sum(d.get("gray", False) for d in draws)
        assert (0 < gray < 20) if model == "diffbfr" else gray == 0
    for group, bounds in ranges.items():
        for name, (low, high) in bounds.items():
            values = [d[name] for d in groups[group]]
            assert low <= min(values) and max(values) <= high, (group, name)
            slack = 0 if name == "quality" else 0.05 * (high - low)
            assert min(values) <= low + slack and max(values) >= high - slack, (group, name, min(values), max(values))


def test_celeba_test_kernels_are_eq18s_anisotropic_gaussians():
    """Σ = UΛUᵀ (DifFace Eq. 18): an impulse spreads with standard deviation l_x along the axis at θ and l_y across
    it; θ = π/2 swaps the image axes."""
    from facerestore_cli.degrade import anisotropic_blur

    impulse = np.zeros((129, 129, 3), np.float32)
    impulse[64, 64] = 1.0

    def spread(image):
        weights = image[..., 0] / image[..., 0].sum()
        ax = np.arange(129) - 64
        return np.sqrt((weights.sum(0) * ax**2).sum()), np.sqrt((weights.sum(1) * ax**2).sum())  # σ along x, along y

    sx, sy = spread(anisotropic_blur(impulse, 12.0, 4.0, 0.0))
    assert abs(sx - 12.0) < 0.3 and abs(sy - 4.0) < 0.1
    sx, sy = spread(anisotropic_blur(impulse, 12.0, 4.0, np.pi / 2))
    assert abs(sx - 4.0) < 0.1 and abs(sy - 12.0) < 0.3
    sx, sy = spread(anisotropic_blur(impulse, 8.0, 8.0, np.pi / 4))
    assert abs(sx - sy) < 1e-3


def test_dr2s_nine_test_sets_are_reproducible(tmp_path):
    """`degrade --model dr2 --dr2-scale R --dr2-split S` fixes r and the split (DR2 §4.1): every image of the set
    has them, its σ, δ, q in the split's ranges, the LQ at 1/r with --keep-scale, the same bytes on a rerun."""
    from facerestore_cli.degrade import DR2_SCALES, DR2_SPLITS, dr2_test_set, image_rng

    for scale in DR2_SCALES:
        for split, ((b0, b1), (n0, n1), (q0, q1)) in DR2_SPLITS.items():
            for i in range(40):
                d = dr2_test_set(scale, split).sample(image_rng(1, f"f{i}.png"))
                assert (d["scale"], d["split"]) == (scale, split)
                assert b0 <= d["blur"] <= b1 and n0 <= d["noise"] <= n1 and q0 <= d["quality"] <= q1
    require_shared()
    outs = []
    for run in ("a", "b"):
        code, _o, err = invoke("degrade", ALIGNED_LQ, "-o", tmp_path / run, "--model", "dr2", "--dr2-scale", "16",
                               "--dr2-split", "severe", "--keep-scale")
        assert code == 0, err
        outs.append(tmp_path / run)
    records = [json.loads(line) for line in (outs[0] / "degradations.jsonl").read_text().splitlines()]
    assert {(r["params"]["scale"], r["params"]["split"]) for r in records} == {(16, "severe")}
    for record in records:
        name = Path(record["output"]).name
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
        source = Image.open(Path(record["input"])).size
        assert Image.open(outs[0] / name).size == tuple(round(side / 16) for side in source)
    for args, message in ((("--model", "diffbfr", "--dr2-scale", "4", "--dr2-split", "mild"), "need --model dr2"),
                          (("--model", "dr2", "--dr2-scale", "4"), "give --dr2-scale and --dr2-split"),
                          (("--model", "dr2", "--dr2-scale", "5", "--dr2-split", "mild"), "--dr2-scale must be one of")):
        code, _o, err = invoke("degrade", ALIGNED_LQ, "-o", tmp_path / "bad", *args)
        assert code == 2 and message in err and not (tmp_path / "bad").exists(), err


def test_degrade_keep_scale_and_the_other_models(tmp_path):
    require_shared()
    source = sorted(ALIGNED_LQ.glob("*.png"))[0]
    for model, equation in (("difface", "DifFace Eq. 17"), ("dnr", "Diffuse and Restore Eq. 10"), ("dr2", "DR2 Eq. 13"),
                            ("difface-celeba-test", "DifFace Eq. 17, Appendix A Eq. 18")):
        code, _o, err = invoke("degrade", source, "-o", tmp_path / model, "--model", model, "--keep-scale")
        assert code == 0, err
        record = json.loads((tmp_path / model / "degradations.jsonl").read_text())
        assert record["equation"] == equation
        w, h = Image.open(source).size
        scale = record["params"]["scale"]
        assert Image.open(tmp_path / model / source.name).size == (max(1, round(w / scale)), max(1, round(h / scale)))
        if model == "dr2":
            assert record["params"]["split"] in ("mild", "medium", "severe") and record["params"]["scale"] in (4, 8, 16)
    code, _o, err = invoke("degrade", source, "-o", tmp_path / "x", "--model", "gfpgan")
    assert code == 2 and "unknown degradation model 'gfpgan'" in err


def _apply(image, **params):
    base = {"blur": 0.1, "scale": 1.0, "noise": 0.0, "quality": 100}
    return MODELS["diffbfr"].apply(image, {**base, **params}, np.random.default_rng(0), keep_scale=True)


def _edge_width(image: np.ndarray) -> int:
    """Pixels between 10 % and 90 % of a dark-to-bright step across the middle row."""
    row = image[image.shape[0] // 2, :, 1].astype(float)
    lo, hi = row[:20].mean(), row[-20:].mean()
    return int(((row > lo + 0.1 * (hi - lo)) & (row < lo + 0.9 * (hi - lo))).sum())


def test_each_degradation_parameter_has_its_effect():
    step = np.zeros((64, 128, 3), np.uint8)
    step[:, 64:] = 220
    widths = [_edge_width(_apply(step, blur=s)) for s in (0.5, 2.0, 5.0)]
    assert widths[0] <= 2 < widths[1] < widths[2] and 4 <= widths[2] / max(1, widths[1]) * 2.5 <= 12
    assert _apply(step, scale=4.0).shape[:2] == (16, 32)
    flat = np.full((256, 256, 3), 128, np.uint8)
    noisy = add_noise(flat.astype(np.float32), 15.0, "gaussian", np.random.default_rng(1))
    assert abs(noisy.std() - 15.0) < 0.3  # the noise itself; through JPEG, chroma subsampling then lowers it
    stds = [_apply(flat, noise=level).astype(float).std() for level in (0.0, 5.0, 15.0)]
    assert stds[0] < 0.5 and abs(stds[2] / stds[1] - 3.0) < 0.3
    photo = np.asarray(Image.open(sorted(ALIGNED_LQ.glob("*.png"))[0]).convert("RGB")) if ALIGNED_LQ.exists() else flat
    errors = [np.abs(_apply(photo, quality=q).astype(float) - photo).mean() for q in (30, 95)]
    assert errors[0] > 2 * errors[1]
    a, b = (MODELS["diffbfr"](photo, image_rng(1, "x.png"))[1] for _ in range(2))
    assert a == b


# -- train -------------------------------------------------------------------------------------------------------

def test_training_lowers_the_loss(trained_home):
    """20 steps of a tiny IRM(-1) on the shared crops (trained_runs.py): the mean loss of the last 5 steps is below
    80 % of the first 5 steps' (ε-prediction from scratch starts near E|ε| ≈ 0.8); with --tensorboard the scalars
    and the validation grid are in RUN/tensorboard, and RUN/loss.png is drawn."""
    run = trained_home.parent / "diffbfr-irm1"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [5, 10, 15, 20]
    assert [e.step for e in events.Images("validation")] == [20]
    assert Image.open(run / "loss.png").size == (800, 320)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    metrics = [m for m in lines if "loss" in m]
    assert [m["step"] for m in metrics] == [5, 10, 15, 20]
    assert metrics[-1]["loss"] < 0.8 * metrics[0]["loss"], metrics
    assert [(m["step"], sorted(m)) for m in lines if "loss" not in m] == [
        (0, ["step", "val_loss"]), (20, ["step", "val_loss", "val_lpips", "val_psnr"])]
    assert [e.step for e in events.Scalars("train/val_psnr")] == [20]
    assert [e.step for e in events.Scalars("train/val_loss")] == [0, 20]
    grid = Image.open(run / "samples" / "step-00000020.png")
    assert grid.size == (3 * 128, 4 * 128)  # LQ | EMA sample | HQ, four validation faces at the data's 128 px
    assert "step 20/20 · loss" in (trained_home.parent / "diffbfr-irm1.log").read_text()


def test_resume_continues_exactly(tmp_path):
    """6 steps in one go equal 3 steps and a resume for 3 more, bit for bit (also with DataLoader workers), and so
    do their metrics lines and loss curves."""
    require_shared()
    common = ("--checkpoint-every", "3", "--sample-every", "1000", "--log-every", "3")
    code, _o, err = train(tmp_path, "diffbfr-irm1", tmp_path / "straight", TINY_IRM1, "--steps", "6", *common)
    assert code == 0, err
    code, _o, err = train(tmp_path, "diffbfr-irm1", tmp_path / "split", TINY_IRM1, "--steps", "3", *common)
    assert code == 0, err
    code, _o, err = invoke("train", "diffbfr-irm1", "--data", ALIGNED_LQ, "-o", tmp_path / "split", "--model-config",
                           tmp_path / "diffbfr-irm1.yaml", "--workers", "2", "--warmup", "5", "--lr", "2e-4",
                           "--device", "cpu", "--steps", "6", "--resume", *common)
    assert code == 0, err
    a = tensors(tmp_path / "straight" / "checkpoints" / "step-00000006.pt")
    b = tensors(tmp_path / "split" / "checkpoints" / "step-00000006.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 3, 6]  # the initial network's validation loss first
    # loss.png goes on across the resume: the same curve as the straight run's
    curves = [np.asarray(Image.open(tmp_path / run / "loss.png")) for run in ("straight", "split")]
    assert np.array_equal(*curves)


def test_export_import_and_run_diffbfr(trained_home, tmp_path, monkeypatch):
    """Both IRMs trained (tiny, with --model-config: trained_runs.py) and exported: restore with a preset that
    configures no network (as the built-in one): the configuration each run was trained with is recorded beside its
    weights; without that record, verify and methods find the mismatch."""
    from conftest import write_tiny_diffbfr_preset

    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    use_home(monkeypatch, home)
    for target in ("diffbfr-irm1", "diffbfr-irm2"):
        assert f"{target}: exported the EMA weights" in (trained_home.parent / f"{target}.log").read_text()
    assert "recorded beside it" in (trained_home.parent / "diffbfr-irm2.log").read_text()
    preset = write_tiny_diffbfr_preset(tmp_path / "diffbfr-tiny.yaml")
    data = yaml.safe_load(preset.read_text())
    for role in ("irm1", "irm2"):
        del data["components"][role]["config"]
    preset.write_text(yaml.safe_dump(data))
    code, out, err = invoke("weights", "verify", "diffbfr-irm1", "diffbfr-irm2")
    assert code == 0 and "BAD" not in out, out + err
    code, _o, err = invoke("run", ALIGNED_LQ / "256.png", "-o", tmp_path / "out", "--preset", preset, "--aligned", "-q")
    assert code == 0, err
    assert Image.open(tmp_path / "out" / "256.png").size == (512, 512)

    (home / "weights" / "diffbfr_irm1_128.pth.config.json").unlink()  # a file whose configuration nobody recorded
    code, out, _e = invoke("weights", "verify", "diffbfr-irm1")
    assert code == 4 and out.startswith("BAD") and "does not fit its network (unet)" in out, out
    code, out, _e = invoke("methods", "--json")
    diffbfr = next(json.loads(line) for line in out.splitlines() if json.loads(line)["preset"] == "diffbfr")
    assert not diffbfr["ready"] and "diffbfr-irm1 does not fit its network" in diffbfr["status"], diffbfr
    code, _o, err = invoke("run", ALIGNED_LQ / "256.png", "-o", tmp_path / "out2", "--preset", preset, "--aligned")
    assert code == 4 and "does not fit diffbfr-irm1" in err, err


def test_ipc_loss_has_an_arcface_term_with_a_gradient(tiny_ipc_home, monkeypatch):
    monkeypatch.setenv("FACERESTORE_HOME", str(tiny_ipc_home))
    from facerestore_cli.archs import build_arch
    from facerestore_cli.networks import NetworkLoader
    from facerestore_cli.device import Compute
    from facerestore_cli.presets import Component
    from facerestore_cli.training.losses import restorer_loss
    from facerestore_cli.training.targets import TARGETS
    from facerestore_cli.weights.store import WeightStore

    arcface = NetworkLoader(WeightStore(), Compute(torch.device("cpu"), "fp32")).load(Component("arcface-ir-se50")).module
    torch.manual_seed(0)
    model = build_arch("swinir_difface", {**WeightStore().spec("ipc-swinir").config, **TINY_SWINIR_64})
    hq, lq = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    grads = {}
    for name, target in (("ipc", TARGETS["ipc"]), ("l1", TARGETS["difface-estimator"])):
        model.zero_grad()
        loss = restorer_loss(target, model, hq, lq, 64, "l1", arcface)
        loss.backward()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        grads[name + "_loss"] = loss.item()
    assert grads["ipc_loss"] > grads["l1_loss"]  # the identity term adds 1 − cos > 0
    assert (grads["ipc"] - grads["l1"]).abs().max() > 1e-6  # and its gradient reaches the network


def test_two_ranks_take_the_step_one_rank_takes_with_twice_the_batch(tmp_path):
    """torchrun with 2 CPU processes (gloo), batch 2 each, against one process with batch 4: the same samples with
    the same noise, so the same step up to the order of the gradient reduction."""
    require_shared()
    config = tiny_config(tmp_path, TINY_IRM1, "irm1")
    base = ["train", "diffbfr-irm1", "--data", str(ALIGNED_LQ), "--model-config", str(config), "--workers", "0",
            "--device", "cpu", "--steps", "2", "--warmup", "1", "--checkpoint-every", "2", "--sample-every", "1000"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                "facerestore_cli"]
    two = subprocess.run([*torchrun, *base, "-o", str(tmp_path / "two"), "--batch-size", "2"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "facerestore_cli", *base, "-o", str(tmp_path / "one"), "--batch-size", "4"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "checkpoints" / "step-00000002.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "checkpoints" / "step-00000002.pt", weights_only=True)
    assert a["consumed"] == b["consumed"] == 8 and b["settings"]["world"] == 2
    # Adam moves a parameter by about ±lr a step whatever its gradient's size, so where a gradient is ~0 the order of
    # the reduction can flip its sign: such elements differ by up to 2·lr·steps; every other element agrees.
    diff = torch.cat([(a["model"][k] - b["model"][k]).abs().flatten() for k in a["model"]])
    assert diff.max() <= 2 * 1e-4 * 2 + 1e-6 and (diff < 1e-6).float().mean() > 0.99, (diff.max(), (diff < 1e-6).float().mean())
    from facerestore_cli.archs import build_arch

    torch.manual_seed(0)  # --seed 0: the initial network both runs started from
    start = build_arch("unet", a["config"]).state_dict()
    moved = torch.cat([(a["model"][k] - start[k]).abs().flatten() for k in start])
    assert (moved > 1e-5).float().mean() > 0.5  # two steps moved most weights, by far more than the runs differ


# -- what an operator gets wrong -----------------------------------------------------------------------------------

def test_training_refuses_bad_data_and_runs_with_reasons(tmp_path):
    require_shared()
    (tmp_path / "empty").mkdir()
    code, _o, err = train(tmp_path, "diffbfr-irm1", tmp_path / "r0", TINY_IRM1, "--data", tmp_path / "empty")
    assert code == 2 and "no images in --data" in err
    few = tmp_path / "few"
    few.mkdir()
    shutil.copy(sorted(ALIGNED_LQ.glob("*.png"))[0], few / "a.png")
    (few / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    code, _o, err = train(tmp_path, "diffbfr-irm1", tmp_path / "r1", TINY_IRM1, "--data", few, "--batch-size", "2")
    assert code == 2 and "1 training image cannot fill one batch of 2" in err
    code, _o, err = train(tmp_path, "diffbfr-irm1", tmp_path / "r2", TINY_IRM1, "--data", few, "--batch-size", "1",
                          "--steps", "1")
    assert code == 0 and "skipped 1 unreadable file, e.g. broken.png" in err, err
    code, _o, err = train(tmp_path, "diffbfr-irm1", tmp_path / "r2", TINY_IRM1, "--data", few, "--batch-size", "1",
                          "--steps", "2")
    assert code == 2 and "already holds this run (step 1)" in err and "--resume" in err
    code, _o, err = train(tmp_path, "diffbfr-irm1", tmp_path / "r2", TINY_IRM1, "--data", few, "--batch-size", "1",
                          "--steps", "2", "--lr", "1e-3", "--resume")
    assert code == 2 and "the run's settings changed (lr: 0.0002 → 0.001)" in err
    code, _o, err = train(tmp_path, "diffbfr-irm2", tmp_path / "r2", TINY_IRM2, "--data", few, "--batch-size", "1",
                          "--resume", "--condition", "lq")
    assert code == 2 and "holds checkpoints of diffbfr-irm1, not diffbfr-irm2" in err
    code, _o, err = train(tmp_path, "diffbfr-irm1", tmp_path / "r3", TINY_IRM1, "--data", few, "--resume")
    assert code == 2 and "holds no checkpoint to resume from" in err
    code, _o, err = invoke("train", "export", tmp_path / "nothing")
    assert code == 2 and "holds no training checkpoint" in err


def test_ctrl_c_saves_a_checkpoint_that_resume_continues(tmp_path):
    require_shared()
    import signal
    import time

    config = tiny_config(tmp_path, TINY_IRM1, "irm1")
    cmd = [sys.executable, "-m", "facerestore_cli", "train", "diffbfr-irm1", "--data", str(ALIGNED_LQ), "-o",
           str(tmp_path / "run"), "--model-config", str(config), "--workers", "0", "--device", "cpu", "--steps", "100000",
           "--log-every", "2", "--checkpoint-every", "100000", "--sample-every", "100000"]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and '"loss"' in metrics.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step-*.pt"))
    assert len(saved) == 1 and "checkpoint saved, --resume continues" in err
    step = torch.load(saved[0], weights_only=True)["step"]
    code, _o, err = invoke("train", "diffbfr-irm1", "--data", ALIGNED_LQ, "-o", tmp_path / "run", "--model-config",
                           config, "--workers", "0", "--device", "cpu", "--steps", str(step + 2), "--log-every", "2",
                           "--checkpoint-every", "100000", "--sample-every", "100000", "--resume")
    assert code == 0, err
    assert (tmp_path / "run" / "checkpoints" / f"step-{step + 2:08d}.pt").is_file()


# train option → (flag, a changed value, the checkpoint setting named when --resume refuses it)
MUST_MATCH = {"batch_size": ("--batch-size", "2", "batch_size"), "grad_accum": ("--grad-accum", "2", "grad_accum"),
              "lr": ("--lr", "1e-3", "lr"), "warmup": ("--warmup", "7", "warmup"),
              "precision": ("--precision", "bf16", "precision"), "seed": ("--seed", "1", "seed"),
              "loss": ("--loss", "l2", "loss"), "model_config": ("--model-config", "wider", "config"),
              "lr_schedule": ("--lr-schedule", "cosine", "lr_schedule"), "hflip": ("--no-hflip", None, "hflip"),
              "ema_decay": ("--ema-decay", "0.5", "ema_decay")}
# train option → (flag, a changed value): checkpoints.MAY_CHANGE_ON_RESUME
MAY_CHANGE = {"steps": ("--steps", "2"), "checkpoint_every": ("--checkpoint-every", "5"),
              "sample_every": ("--sample-every", "5"), "log_every": ("--log-every", "5"), "workers": ("--workers", "1"),
              "device": ("--device", "auto"), "grad_checkpointing": ("--grad-checkpointing", "on"),
              "tensorboard": ("--tensorboard", None), "val_data": ("--val-data", ALIGNED_HQ)}
# the run itself, its data (fingerprint: test above), the flag, and --lr-min (part of lr_schedule: test below)
# and the condition options of diffbfr-irm2 and the ipc targets (refused for other targets; their `condition` and
# `frozen` settings: the IRM(-2) and ipc-mask tests)
RESUME_SPECIAL = {"data", "run", "resume", "lr_min", "condition", "irm1", "irm1_steps", "preset"}


def test_every_train_option_is_classified_for_resume(tmp_path):
    """Each `train` option either must match the checkpoint on --resume (refused, naming the setting) or may change
    (accepted); a new option cannot slip through unclassified."""
    import typer

    from facerestore_cli.cli import build_app
    from facerestore_cli.training.checkpoints import MAY_CHANGE_ON_RESUME

    require_shared()
    command = typer.main.get_command(build_app(["train"])).commands["train"].commands["diffbfr-irm1"]
    assert {p.name for p in command.params} == set(MUST_MATCH) | set(MAY_CHANGE) | RESUME_SPECIAL
    assert set(MAY_CHANGE) == set(MAY_CHANGE_ON_RESUME)
    run = tmp_path / "run"
    base = {"--data": ALIGNED_LQ, "-o": run, "--model-config": tiny_config(tmp_path, TINY_IRM1, "irm1"),
            "--workers": "0", "--warmup": "5", "--lr": "2e-4", "--device": "cpu", "--steps": "1", "--batch-size": "1"}
    values = {"wider": tiny_config(tmp_path, {**TINY_IRM1, "model_channels": 64}, "wider")}

    def resume(flag: str, value: str):
        options = {**base, flag: values.get(value, value)}
        return invoke("train", "diffbfr-irm1", *(str(x) for item in options.items() for x in item if x is not None),
                      "--resume")

    code, _o, err = invoke("train", "diffbfr-irm1", *(str(x) for item in base.items() for x in item))
    assert code == 0, err
    for name, (flag, value, setting) in MUST_MATCH.items():
        code, _o, err = resume(flag, value)
        assert code == 2 and "the run's settings changed" in err and f"({setting}: " in err, (name, err)
    for name, (flag, value) in MAY_CHANGE.items():
        code, _o, err = resume(flag, value)
        assert code == 0, (name, err)
    assert "nothing to train: " in err and "is at step 2 (--steps 1)" in err


def test_cosine_learning_rate_anneals_to_lr_min_and_fixes_its_end_on_resume():
    """Warm-up, then cosine from --lr down to --lr-min at --steps (DifFace §IV-A's schedule); constant stays at --lr.
    A cosine run's end is part of its settings: resuming it with another --lr-min or --steps is refused."""
    from facerestore_cli.errors import UsageError
    from facerestore_cli.training.checkpoints import check_resume
    from facerestore_cli.training.trainer import TrainConfig, learning_rate

    cosine = TrainConfig("diffbfr-tem", Path("d"), Path("r"), steps=110, warmup=10, lr=1e-4,
                         lr_schedule="cosine", lr_min=1e-6)
    rates = [learning_rate(cosine, step) for step in range(120)]
    assert rates[0] == pytest.approx(1e-5) and rates[9] == pytest.approx(1e-4) and rates[10] == pytest.approx(1e-4)
    assert rates[60] == pytest.approx((1e-4 + 1e-6) / 2) and rates[110] == pytest.approx(1e-6) == rates[119]
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    constant = TrainConfig("diffbfr-tem", Path("d"), Path("r"), steps=110, warmup=10, lr=1e-4).with_recipe()
    assert [learning_rate(constant, step) for step in range(10, 120)] == [1e-4] * 110
    recipe = TrainConfig("difface-estimator", Path("d"), Path("r")).with_recipe()  # DifFace §IV-A
    assert (recipe.batch_size, recipe.steps, recipe.lr, recipe.lr_schedule, recipe.lr_min, recipe.warmup) == \
        (16, 500_000, 1e-4, "cosine", 1e-6, 0)
    state = {"target": "t", "settings": {"lr_schedule": "cosine to 1e-06 at step 110"}}
    for changed in ("cosine to 1e-05 at step 110", "cosine to 1e-06 at step 200"):
        with pytest.raises(UsageError, match="lr_schedule"):
            check_resume(state, "t", {"lr_schedule": changed}, None, Path("run/checkpoints/step-1.pt"))


def test_training_pairs_are_flipped_and_gray_together(tmp_path):
    """With hflip about half the samples are mirrored (HQ and LQ alike, drawn from each sample's key), the rest
    untouched; a sample whose DiffBFR degradation came out gray has a gray HQ too (gray_pairs), never a colour one."""
    from facerestore_cli.degrade import image_rng
    from facerestore_cli.training.data import Faces, list_faces, sample_key

    require_shared()
    listing = list_faces(ALIGNED_LQ)
    plain = Faces(listing, 64, "diffbfr", 0)
    flipped = Faces(listing, 64, "diffbfr", 0, hflip=True, gray_pairs=True)
    mirrored = 0
    for epoch in range(40):
        a, b = plain[(0, epoch)][0], flipped[(0, epoch)][0]
        if torch.equal(a, b):
            continue
        assert torch.equal(b, a.flip(-1)) or b[0].equal(b[1])  # mirrored (or grayed: checked below)
        mirrored += 1
    assert 10 <= mirrored <= 30
    rel = listing.rels[0]
    epoch = next(e for e in range(5000)
                 if Faces(listing, 64, "diffbfr", 0).model.sample(image_rng(sample_key(0, e, rel), rel))["gray"])
    hq, lq, _key, _condition = flipped[(0, epoch)]
    assert lq[0].equal(lq[1]) and hq[0].equal(hq[1]) and hq[1].equal(hq[2])
    color = plain[(0, epoch)][0]
    assert not color[0].equal(color[1])  # without gray_pairs the same draw keeps a colour HQ


def test_irm2_trains_on_irm1_samples_as_run_feeds_them(tmp_path, tiny_home, monkeypatch):
    """train diffbfr-irm2 --irm1 RUN: each face's condition is IRM(-1)'s sample of its LQ, bit for bit what the
    cascade feeds IRM(-2) at run time for that face, weights, seed and steps; made once (a second epoch and a resume
    read the cache, make none); another --irm1-steps on --resume is refused; without IRM(-1) weights the error
    names the alternatives."""
    from facerestore_cli.archs import architecture, build_arch
    from facerestore_cli.device import Compute
    from facerestore_cli.diffusion.noise import seeded_generator
    from facerestore_cli.methods.cascade import DiffBFRCascade, irm2_condition
    from facerestore_cli.networks import Network
    from facerestore_cli.presets import load_builtin
    from facerestore_cli.training import checkpoints
    from facerestore_cli.training.conditions import ConditionCache, condition_seed
    from facerestore_cli.training.data import Faces, list_faces

    require_shared()
    use_home(monkeypatch, tiny_home)
    code, _o, err = train(tmp_path, "diffbfr-irm2", tmp_path / "none", TINY_IRM2, "--steps", "1")
    assert code == 2 and "no IRM(-1) weights were found" in err and "--condition lq" in err, err
    code, _o, err = train(tmp_path, "diffbfr-irm1", tmp_path / "irm1", TINY_IRM1, "--steps", "1", "--batch-size", "1")
    assert code == 0, err
    run = tmp_path / "irm2"
    faces_n = len(list_faces(ALIGNED_LQ).files)
    args = ("--irm1", tmp_path / "irm1", "--irm1-steps", "2", "--batch-size", "2")
    code, _o, err = train(tmp_path, "diffbfr-irm2", run, TINY_IRM2, "--steps", str(faces_n), *args)  # two epochs
    assert code == 0 and f"IRM(-1) conditions: making {faces_n} of {faces_n} (2 steps each)" in err, err
    cached = sorted((run / "irm1-conditions").glob("*.pt"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert len(cached) == faces_n
    code, _o, err = train(tmp_path, "diffbfr-irm2", run, TINY_IRM2, "--steps", str(faces_n + 1), *args, "--resume")
    assert code == 0 and "IRM(-1) conditions: making" not in err, err
    assert [p.stat().st_mtime_ns for p in sorted((run / "irm1-conditions").glob("*.pt"))] == stamps
    code, _o, err = train(tmp_path, "diffbfr-irm2", run, TINY_IRM2, "--steps", "9", "--irm1", tmp_path / "irm1",
                          "--irm1-steps", "3", "--batch-size", "2", "--resume")
    assert code == 2 and "(condition: " in err, err

    state = checkpoints.load(checkpoints.latest(tmp_path / "irm1"))
    config, arch, compute = state["settings"]["config"], architecture("unet"), Compute(torch.device("cpu"), "fp32")
    module = build_arch("unet", config)
    module.load_state_dict(state["ema"])
    irm1 = Network("irm1", config, module.eval(), compute, arch.input_size(config), "eps", 3)

    class Spy(torch.nn.Module):
        def __init__(self, out):
            super().__init__()
            self.out, self.seen = out, []

        def forward(self, x, t):
            self.seen.append(x.clone())
            return torch.zeros(x.shape[0], self.out, *x.shape[2:])

    irm2, tem = Spy(3), Spy(6)
    preset = load_builtin("diffbfr")
    params = type("P", (), {"irm1_steps": 2, "irm2_start": 2, "irm2_steps": 1, "tem_start": 2, "tem_steps": 1})()
    cascade = DiffBFRCascade(irm1, Network("irm2", {}, irm2, compute, 128, "eps", 3),
                             Network("tem", {}, tem, compute, 128, "eps+variance", 0),
                             preset_alphas(preset, "irm1"), preset_alphas(preset, "tem"), params, 128)
    faces = Faces(list_faces(ALIGNED_LQ), 128, "diffbfr", 0)
    cache = ConditionCache(run, _sha_of(tmp_path / "irm1"), 2)
    for index in (0, faces_n - 1):
        rel, draw = faces.condition_key(index)
        lq = torch.from_numpy(faces.pair(index, draw)[1]).permute(2, 0, 1)[None].float() / 255.0
        irm2.seen.clear()  # `run --batch-size 2` pads a lone face with a blank one
        cascade.restore(torch.cat([lq, torch.zeros_like(lq)]), [seeded_generator(condition_seed(rel, draw)),
                                                                seeded_generator(7)])
        assert cache.path(rel, draw) in cached
        assert torch.equal(irm2_condition(cache.load(rel, draw)[None], 128), irm2.seen[0][:1, 3:]), index


def preset_alphas(preset, role):
    from facerestore_cli.diffusion.schedule import preset_alphas_cumprod

    return preset_alphas_cumprod(preset.schedule(role))


def _sha_of(run):
    from facerestore_cli.files import sha256_file
    from facerestore_cli.training import checkpoints

    return sha256_file(checkpoints.latest(run)).hexdigest()
