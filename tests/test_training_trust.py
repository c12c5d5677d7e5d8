"""Training you can trust (#26), the checks that need no training run: each target's objective is the one its sampler
assumes (closed form: a network returning the true ε, or the true image for the SwinIR targets, has zero loss, one
returning something else does not), its timesteps span its preset's schedule, and degradations are drawn per image
and recorded as applied."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from archival_helpers import invoke
from conftest import ALIGNED_LQ
from facerestore_cli.degrade import MODELS, image_rng
from facerestore_cli.diffusion.schedule import extract
from facerestore_cli.pixels import resize_batch
from facerestore_cli.training.losses import condition_of, diffusion_loss, restorer_loss
from facerestore_cli.training.targets import TARGETS

DIFFUSION = [name for name, target in TARGETS.items() if target.kind == "diffusion"]
RESTORERS = [name for name, target in TARGETS.items() if target.kind == "restorer" and not target.identity_weight]
SIZE = 32


class Oracle(torch.nn.Module):
    """An ε-network that knows x0: returns the ε that made x_t (`answer` "eps"), or x0 itself ("x0"); it checks the
    condition it is given is the target's own."""

    def __init__(self, x0, abar, answer: str, condition):
        super().__init__()
        self.x0, self.abar, self.answer, self.condition = x0.double(), abar, answer, condition

    def forward(self, x, t):
        if self.condition is not None:
            assert torch.equal(x[:, 3:], self.condition)
        x_t, a = x[:, :3].double(), extract(self.abar, t, x[:, :3]).double()
        eps = (x_t - a.sqrt() * self.x0) / (1 - a).sqrt()
        return (eps if self.answer == "eps" else self.x0).float()


def batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    hq, lq = (torch.rand(4, 3, SIZE, SIZE, generator=generator) for _ in range(2))
    return hq, lq, torch.tensor([11, 22, 33, 44])


@pytest.mark.parametrize("name", DIFFUSION)
def test_an_eps_target_has_zero_loss_for_the_true_eps_and_not_for_x0(name):
    target = TARGETS[name]
    abar = target.schedule()
    hq, lq, keys = batch()
    x0 = resize_batch(hq, SIZE) * 2 - 1
    condition = condition_of(target, lq, SIZE)
    losses = {answer: diffusion_loss(target, Oracle(x0, abar, answer, condition), abar, hq, lq, keys, SIZE, "l2").item()
              for answer in ("eps", "x0")}
    assert losses["eps"] < 1e-6 and losses["x0"] > 0.1, losses


@pytest.mark.parametrize("name", DIFFUSION)
def test_an_eps_target_trains_on_every_timestep_of_the_schedule_its_preset_samples(name):
    """t is drawn uniformly over the preset component's whole schedule (its length and ᾱ are the run's), which
    covers every step a run starts from (the preset's chain start)."""
    from facerestore_cli.diffusion.schedule import preset_alphas_cumprod
    from facerestore_cli.presets import load_builtin

    target = TARGETS[name]
    run_abar = preset_alphas_cumprod(load_builtin(target.preset).schedule(target.schedule_of))
    abar = target.schedule()
    assert torch.equal(abar, run_abar)
    start = target.chain_start()
    assert start is None or start <= len(abar)
    drawn = []

    class Spy(torch.nn.Module):
        def forward(self, x, t):
            drawn.extend(t.tolist())
            return torch.zeros(x.shape[0], 3, *x.shape[2:])

    hq, lq, _ = batch()
    for first in range(0, 4000, 4):
        diffusion_loss(target, Spy(), abar, hq[:1].expand(4, -1, -1, -1), lq[:1].expand(4, -1, -1, -1),
                       torch.arange(first, first + 4), 8, "l1")
    assert min(drawn) < len(abar) * 0.01 and max(drawn) > len(abar) * 0.99 and max(drawn) < len(abar)


@pytest.mark.parametrize("name", RESTORERS)
def test_a_restorer_target_has_zero_loss_for_the_true_image_and_not_for_its_input(name):
    target = TARGETS[name]
    hq, lq, _ = batch()

    def returning(image):
        return lambda x: resize_batch(image, SIZE)

    assert restorer_loss(target, returning(hq), hq, lq, SIZE, "l1").item() < 1e-7
    assert restorer_loss(target, returning(lq), hq, lq, SIZE, "l1").item() > 0.1


def test_degradations_differ_per_image_repeat_per_seed_and_are_recorded_as_applied(tmp_path):
    code, _o, err = invoke("degrade", ALIGNED_LQ, "-o", tmp_path / "lq", "--model", "difface", "--seed", "5")
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "lq" / "degradations.jsonl").read_text().splitlines()]
    assert len(records) >= 2
    drawn = [json.dumps(r["params"], sort_keys=True) for r in records]
    assert len(set(drawn)) == len(drawn)  # one seed, a draw per image
    model = MODELS["difface"]
    for record in records:
        rel = record["output"].split("/lq/", 1)[1]
        rng = image_rng(record["seed"], rel)
        assert model.sample(rng) == record["params"]  # the same (seed, path): the same draw
        hq = cv2.imread(record["input"], cv2.IMREAD_COLOR)[..., ::-1]
        lq = model.apply(np.ascontiguousarray(hq), record["params"], rng, record["keep_scale"])
        written = cv2.imread(record["output"], cv2.IMREAD_COLOR)[..., ::-1]
        assert np.array_equal(lq, written), rel  # re-degraded from the record: the file, byte for byte


def test_validation_scores_go_into_metrics_and_ema_decay_0_exports_the_trained_weights(metric_home, tmp_path,
                                                                                         monkeypatch):
    """Every --sample-every steps the EMA network's PSNR and LPIPS on the fixed validation faces join metrics.jsonl;
    with --ema-decay 0 the EMA is the trained weights, so export writes them exactly."""
    import yaml

    from conftest import use_home

    home = tmp_path / "home"
    shutil.copytree(metric_home, home)
    use_home(monkeypatch, home)
    config = tmp_path / "swinir.yaml"
    config.write_text(yaml.safe_dump({"img_size": 8, "embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4,
                                      "mlp_ratio": 2.0}))
    run = tmp_path / "run"
    code, _o, err = invoke("train", "difface-estimator", "--data", ALIGNED_LQ, "-o", run, "--model-config", config,
                           "--steps", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--sample-every",
                           "1", "--ema-decay", "0")
    assert code == 0, err
    scores = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "val_psnr" in r]
    assert [r["step"] for r in scores] == [1, 2]
    assert all(5 < r["val_psnr"] < 60 and 0 <= r["val_lpips"] < 1.5 for r in scores), scores
    code, _o, err = invoke("train", "export", run)
    assert code == 0, err
    state = torch.load(run / "checkpoints" / "step-00000002.pt", weights_only=True)
    exported = torch.load(home / "weights" / "estimator_swinir_512.pth", weights_only=True)
    assert set(exported) == set(state["model"]) and all(torch.equal(exported[k], state["model"][k]) for k in exported)


def test_the_ema_moves_toward_the_trained_weights_at_its_decay():
    """ema ← d·ema + (1 − d)·θ with d = min(--ema-decay, (1 + step)/(10 + step))."""
    from types import SimpleNamespace

    from facerestore_cli.training.trainer import Trainer

    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = [p.detach().clone() for p in ema.parameters()]
    for step, decay, used in ((0, 0.9999, 0.1), (990, 0.9999, 991 / 1000), (5000, 0.5, 0.5)):
        trainer = SimpleNamespace(cfg=SimpleNamespace(ema_decay=decay), step=step, model=model,
                                  ema=ema)
        before = [p.detach().clone() for p in ema.parameters()]
        Trainer._update_ema(trainer)
        for old, new, param in zip(before, ema.parameters(), model.parameters()):
            assert torch.allclose(new, used * old + (1 - used) * param, atol=1e-7)
