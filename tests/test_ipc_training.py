"""Diffuse and Restore's trained parts (#22): `train ipc-prior` learns, an `ipc-mask` step moves only the mask branch
and its gradient is that of Eq. 7 + LPIPS, the ipc targets train on Eq. 10's degradations, and after training and
exporting ipc, ipc-prior and ipc-mask (the trained home: trained_runs.py) the paper's configuration of ipc-guided
restores a real photo and says so."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch
import yaml
from PIL import Image

from archival_helpers import invoke
from conftest import ALIGNED_LQ, PHOTOS, TINY_IPC_MASK, TINY_IPC_PRIOR, use_home
from trained_runs import metrics

DET = ("--detector", "retinaface_mobile0.25")


def _config(folder, name: str, config: dict):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _train(folder, target: str, config: dict, *args):
    code, _o, err = invoke("train", target, "--data", ALIGNED_LQ, "-o", folder / target, "--model-config",
                           _config(folder, target, config), "--workers", "0", "--warmup", "5", "--lr", "2e-4",
                           "--device", "cpu", "--batch-size", "2", *args)
    assert code == 0, err
    return err


def test_ipc_prior_learns_and_the_ipc_targets_train_on_eq10(trained_home):
    """6 steps of the tiny conditional prior (trained_runs.py): the mean loss of its last 3 steps is below 80 % of its
    first 3's (ε-prediction from scratch starts near E|ε| ≈ 0.8); every ipc run recorded Eq. 10's degradation (dnr)."""
    from facerestore_cli.training import checkpoints

    root = trained_home.parent
    losses = [line for line in metrics(root / "ipc-prior") if "loss" in line]
    assert [m["step"] for m in losses] == [3, 6]
    assert losses[-1]["loss"] < 0.8 * losses[0]["loss"], losses
    for target in ("ipc", "ipc-prior", "ipc-mask"):
        state = checkpoints.load(checkpoints.latest(root / target))
        assert state["settings"]["degradation"] == "dnr", target
    state = checkpoints.load(checkpoints.latest(root / "ipc-mask"))
    frozen = state["settings"]["frozen"]
    assert frozen["ipc"].startswith("ipc-swinir ") and frozen["conditional_prior"].startswith("ipc-prior ")
    assert frozen["guidance_scale"] == 100.0 and frozen["start_t"] == 400


def test_an_ipc_run_from_before_eq10_is_not_resumed_on_it(trained_home, tmp_path, monkeypatch):
    """A checkpoint of `train ipc` without a recorded degradation trained on DifFace's Eq. 17: --resume refuses to
    continue it on Eq. 10, naming the setting."""
    from facerestore_cli.training import checkpoints

    use_home(monkeypatch, trained_home)
    run = tmp_path / "ipc"
    shutil.copytree(trained_home.parent / "ipc", run)
    path = checkpoints.latest(run)
    state = checkpoints.load(path)
    del state["settings"]["degradation"]
    torch.save(state, path)
    code, _o, err = invoke("train", "ipc", "-o", run, "--resume")  # every other option from RUN/train.json
    assert code == 2 and "(degradation: 'difface' → 'dnr')" in err, err


def _mask_trainer(home, run):
    from facerestore_cli.training.trainer import TrainConfig, Trainer

    cfg = TrainConfig("ipc-mask", ALIGNED_LQ, run, steps=1, batch_size=2, warmup=0, workers=0, device="cpu",
                      model_config=dict(TINY_IPC_MASK), preset=home / "ipc-tiny.yaml")
    return Trainer(cfg, lambda line: None)


def test_an_ipc_mask_step_changes_only_the_mask_branch(trained_home, tmp_path, monkeypatch):
    use_home(monkeypatch, trained_home)
    trainer = _mask_trainer(trained_home, tmp_path / "run")
    frozen = {"ipc": trainer.parts.ipc.module, "prior": trainer.parts.prior.module, "arcface": trainer.parts.arcface,
              "lpips": trainer.parts.lpips}
    before = {name: {k: v.clone() for k, v in module.state_dict().items()} for name, module in frozen.items()}
    branch = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert trainer.train()["step"] == 1
    for name, module in frozen.items():
        assert all(torch.equal(v, before[name][k]) for k, v in module.state_dict().items()), name
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, branch[k])]
    assert len(changed) == len(branch)  # every weight and bias of the branch took the step


def test_the_mask_gradient_is_that_of_eq7_plus_lpips(trained_home, tmp_path, monkeypatch):
    """mask_loss against the objective written out from §3.2.1: M = sigmoid(branch([x, M′])), ŷ′_0 = Eq. 6 on
    y_t − s∇L_arc ⊙ M, loss = (1 − cos ArcFace(ŷ′_0, g_φ(x))) + LPIPS(ŷ′_0, y_0); the branch's gradient is the sum of
    the two terms' gradients, each non-zero; with s = 0 the mask changes nothing and its gradient is zero."""
    import dataclasses

    import torch.nn.functional as F

    from facerestore_cli.diffusion.noise import randn_per_face, seeded_generator
    from facerestore_cli.faces.id_masks import eq8_proxy
    from facerestore_cli.faces.identity import identity_embedding
    from facerestore_cli.training.mask_loss import mask_loss

    use_home(monkeypatch, trained_home)
    trainer = _mask_trainer(trained_home, tmp_path / "run")
    parts, branch, size = trainer.parts, trainer.model, trainer.size
    faces = [np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in sorted(ALIGNED_LQ.glob("*.png"))[:2]]
    hq = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 255
    lq = torch.nn.functional.avg_pool2d(hq, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
    keys = [11, 12]
    params = list(branch.parameters())

    def grads(value):
        return torch.cat([g.flatten() for g in torch.autograd.grad(value, params, retain_graph=True)])

    total, _terms = mask_loss(branch, parts, hq, lq, keys, size)

    # the objective written out
    with torch.no_grad():
        g = parts.ipc(lq).clamp(0, 1)
        target = identity_embedding(parts.arcface, g)
    m = torch.sigmoid(branch(torch.cat([lq, eq8_proxy(g, lq)], dim=1)))
    gens = [seeded_generator(k) for k in keys]
    t = torch.stack([torch.randint(0, parts.start_t, (), generator=gen) for gen in gens])
    abar = parts.abar[t].float().view(-1, 1, 1, 1)
    y0 = hq * 2 - 1
    y_t = abar.sqrt() * y0 + (1 - abar).sqrt() * randn_per_face(gens, (3, size, size), y0.device)
    with torch.no_grad():
        eps = parts.prior(torch.cat([y_t, lq * 2 - 1], dim=1), t)[:, :3]

    def unit(x0):  # ArcFace sees the clipped image; the gradient passes as if unclipped (guidance.py)
        image = (x0 + 1) / 2
        return image + (image.clamp(0, 1) - image).detach()

    x = y_t.clone().requires_grad_(True)
    x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
    arc_of_x = 1 - F.cosine_similarity(identity_embedding(parts.arcface, unit(x0)), target)
    (nabla,) = torch.autograd.grad(arc_of_x.sum(), x)
    guided = ((y_t - parts.scale * nabla * m) - (1 - abar).sqrt() * eps) / abar.sqrt()
    images = unit(guided)
    arc = (1 - F.cosine_similarity(identity_embedding(parts.arcface, images), target)).mean()
    perceptual = parts.lpips(images * 2 - 1, y0).mean()

    assert torch.allclose(total, arc + perceptual, rtol=1e-4, atol=1e-6)
    g_arc, g_lpips = grads(arc), grads(perceptual)
    assert g_arc.abs().max() > 0 and g_lpips.abs().max() > 0
    torch.testing.assert_close(grads(total), g_arc + g_lpips, rtol=1e-3, atol=1e-7)
    still = dataclasses.replace(parts, scale=0.0)
    assert grads(mask_loss(branch, still, hq, lq, keys, size)[0]).abs().max() == 0


def test_the_papers_configuration_restores_a_real_photo(trained_home, tmp_path, monkeypatch):
    """With ipc-swinir, ipc-prior and ipc-mask exported, --prior auto and --id-mask auto run the paper's
    configuration: the trained parts, ancestral DDPM, the learned mask; each face record says so. --prior
    unconditional --id-mask proxy on the same photo keeps only the trained IPC: a mixed configuration, so labelled."""
    use_home(monkeypatch, trained_home)
    runs = {}
    for name, extra in (("paper", ()), ("substitute", ("--prior", "unconditional", "--id-mask", "proxy"))):
        report = tmp_path / f"{name}.jsonl"
        code, _o, err = invoke("run", PHOTOS / "old-portrait-00.jpg", "-o", tmp_path / name, "--preset",
                               trained_home / "ipc-tiny.yaml", *DET, "--faces", "0,1", "--id-mask", "auto", *extra,
                               "--batch-size", "2", "--report", report, "-q")
        assert code == 0, err
        runs[name] = json.loads(report.read_text().splitlines()[0])
    paper = runs["paper"]
    assert paper["status"] == "restored" and len(paper["faces"]) == 2
    assert {"ipc-swinir", "ipc-prior", "ipc-mask", "arcface-ir-se50"} <= set(paper["weights"])
    for face in paper["faces"]:
        assert face["configuration"] == {"name": "paper", "ipc": "ipc-swinir", "prior": "ipc-prior",
                                         "sampler": "ancestral DDPM, 3 steps from t=400"}
        assert face["id_mask"] == "learned"
    substitute = runs["substitute"]
    assert {f["configuration"]["name"] for f in substitute["faces"]} == {"mixed"}
    assert substitute["faces"][0]["configuration"]["prior"] == "difface-unet"
    assert substitute["faces"][0]["configuration"]["ipc"] == "ipc-swinir"
    assert "ipc-prior" not in substitute["weights"]
    a = np.asarray(Image.open(tmp_path / "paper" / "old-portrait-00.jpg"))
    b = np.asarray(Image.open(tmp_path / "substitute" / "old-portrait-00.jpg"))
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() > 10


def test_ipc_prior_on_g_phi_of_x_sees_what_the_run_feeds_it(trained_home, tmp_path, monkeypatch):
    """--condition ipc (Eq. 5): the prior trains on g_φ(x) of the --preset's IPC, bit for bit the condition ipc-guided
    --prior-condition ipc feeds it at run time; its export says so; the options are refused where they mean
    nothing."""
    from types import SimpleNamespace

    from facerestore_cli.device import Compute
    from facerestore_cli.methods.diffused_estimator import DiffusedEstimator
    from facerestore_cli.networks import Network
    from facerestore_cli.training import checkpoints
    from facerestore_cli.training.trainer import TrainConfig, Trainer

    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    use_home(monkeypatch, home)
    _train(tmp_path, "ipc-prior", TINY_IPC_PRIOR, "--steps", "1", "--condition", "ipc", "--preset",
           home / "ipc-tiny.yaml")
    settings = checkpoints.load(checkpoints.latest(tmp_path / "ipc-prior"))["settings"]
    assert settings["condition"] == "ipc" and settings["frozen"]["ipc"].startswith("ipc-swinir ")
    code, _o, err = invoke("train", "export", tmp_path / "ipc-prior")
    assert code == 0 and "--prior-condition ipc" in err, err

    cfg = TrainConfig("ipc-prior", ALIGNED_LQ, tmp_path / "fresh", condition="ipc", preset=home / "ipc-tiny.yaml",
                      model_config=dict(TINY_IPC_PRIOR), device="cpu", workers=0)
    trainer = Trainer(cfg, lambda line: None)
    lq = torch.rand(2, 3, 128, 128)
    trained_on = trainer._condition(lq, torch.zeros(0))

    class Spy(torch.nn.Module):
        seen: list = []

        def forward(self, x, t):
            self.seen.append(x[:, 3:].clone())
            return torch.zeros(x.shape[0], 3, *x.shape[2:])

    compute = Compute(torch.device("cpu"), "fp32")
    prior = Network("ipc-prior", {}, Spy(), compute, 128, "eps", 3)
    DiffusedEstimator(trainer.parts.ipc, prior, trainer.abar, SimpleNamespace(steps=1, start_t=400, eta=0.0), 128,
                      sampler="ancestral", condition="estimate").restore(lq, [torch.Generator().manual_seed(i)
                                                                            for i in range(2)])
    assert torch.equal(Spy.seen[0], trained_on)

    for target, args, message in (("diffbfr-irm2", ("--condition", "ipc"), "diffbfr-irm2's --condition is irm1 or lq"),
                                  ("ipc", ("--condition", "lq"), "ipc takes none"),
                                  ("ipc-prior", ("--preset", home / "ipc-tiny.yaml"), "--preset names")):
        code, _o, err = invoke("train", target, "--data", ALIGNED_LQ, "-o", tmp_path / "bad", *args)
        assert code == 2 and message in err and not (tmp_path / "bad").exists(), (target, err)


def test_methods_says_which_configuration_a_run_would_use(trained_home, tmp_path, monkeypatch):
    """`methods` with the paper's parts present: runs as the paper configuration; with its mask forced to another
    kind: mixed; without them: the substitutes."""
    from facerestore_cli.presets import load_file
    from facerestore_cli.readiness import verdict
    from facerestore_cli.weights.store import WeightStore

    data = yaml.safe_load((trained_home / "ipc-tiny.yaml").read_text())
    for mask in ("auto", "proxy"):
        data["parameters"]["id_mask"] = mask
        _config(tmp_path, f"ipc-{mask}", data)
    use_home(monkeypatch, trained_home)
    paper = verdict(load_file(tmp_path / "ipc-auto.yaml"), WeightStore()).runs_as
    assert paper.startswith("the paper configuration: IPC ipc-swinir, prior ipc-prior (ancestral DDPM"), paper
    assert paper.endswith("identity mask learned")
    mixed = verdict(load_file(tmp_path / "ipc-proxy.yaml"), WeightStore()).runs_as
    assert mixed.startswith("the mixed configuration") and mixed.endswith("identity mask proxy"), mixed
    bare = tmp_path / "home"
    shutil.copytree(trained_home, bare)
    for name in ("ipc_swinir_512.pth", "ipc_prior_512.pth", "ipc_mask_512.pth"):
        (bare / "weights" / name).unlink()
    use_home(monkeypatch, bare)
    substitute = verdict(load_file(tmp_path / "ipc-auto.yaml"), WeightStore()).runs_as
    assert substitute.startswith("the substitute configuration: IPC difface-swinir, prior difface-unet (DDIM")
