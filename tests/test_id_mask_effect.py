"""ipc-guided's identity mask end to end (#19, #22): with one reverse step the guidance's only way into the face is the
correction ∇L ⊙ M of Diffuse and Restore's Eq. 9 (scaled here by s, which the paper does not give), so pixels where
M = 0 come out as in the unguided run and pixels inside M do not. M is derived here independently, from its
definition (the estimate g_φ(x) of the same tiny estimator, ParseNet labels of it, the mask branch on [x, M′], Eq. 8's
|g_φ(x) − x| > δ), so a branch that builds another mask — parsing on the input instead of the estimate, the proxy
where parsing was asked for, a uniform mask — fails."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from cli_helpers import read_report, run_cli
from conftest import ALIGNED_LQ, TINY_FACE_SIZE, make_tiny_ipc_paper_weights, use_home, write_random_parsenet

SCALE = "2000"  # one step: large enough to move most pixels inside M by a level, nothing chaotic to amplify


@pytest.fixture(scope="module")
def home(tiny_ipc_home, tmp_path_factory):
    """The ipc home plus a tiny ParseNet and a tiny mask branch, and a 128-px aligned input (the face size: no resize
    around the method)."""
    home = tmp_path_factory.mktemp("idmask") / "home"
    shutil.copytree(tiny_ipc_home, home)
    write_random_parsenet(home / "weights")
    make_tiny_ipc_paper_weights(home / "weights", parts=("mask",))
    face = Image.open(ALIGNED_LQ / "256.png").convert("RGB").resize((TINY_FACE_SIZE, TINY_FACE_SIZE), Image.BICUBIC)
    face.save(home / "face.png")
    return home


def restored(capsys, home, out, *args) -> tuple[np.ndarray, dict]:
    report = out.parent / f"{out.name}.jsonl"
    code, _o, err = run_cli(capsys, "run", home / "face.png", "-o", out, "--preset", home / "ipc-tiny.yaml", "--aligned",
                            "--steps", "1", "--batch-size", "1", "--report", report, "-q", *args)
    assert code == 0, err
    records, _summary = read_report(report)
    return np.asarray(Image.open(out / "face.png").convert("RGB")).astype(int), records[0]["faces"][0]


def expected_masks(home) -> dict[str, np.ndarray]:
    """M of each kind for the test face, [S, S] in [0, 1], from the networks the preset names."""
    import torch

    from facerestore_cli.device import resolve
    from facerestore_cli.faces.id_masks import build_id_mask
    from facerestore_cli.faces.masks import run_parsenet
    from facerestore_cli.networks import NetworkLoader
    from facerestore_cli.pixels import to_tensor, to_float
    from facerestore_cli.presets import load_file
    from facerestore_cli.weights.store import WeightStore

    parts = load_file(home / "ipc-tiny.yaml").components
    networks = NetworkLoader(WeightStore(home), resolve("cpu", "fp32"))
    lq = to_tensor(to_float(np.asarray(Image.open(home / "face.png"))))
    with torch.no_grad():
        estimate = networks.load(parts["ipc_substitute"])(lq).clamp(0.0, 1.0)
        labels = torch.as_tensor(run_parsenet(networks.load(parts["parser"]).module, estimate))
        learned = build_id_mask("learned", branch=networks.load(parts["mask"]), estimate=estimate, input=lq)
    masks = {"parsing": build_id_mask("parsing", labels=labels, size=TINY_FACE_SIZE),
             "proxy": build_id_mask("proxy", estimate=estimate, input=lq), "learned": learned}
    return {kind: m[0, 0].numpy() for kind, m in masks.items()}


def test_each_id_mask_moves_exactly_the_pixels_its_mask_covers(home, tmp_path, capsys, monkeypatch):
    use_home(monkeypatch, home)
    unguided, _face = restored(capsys, home, tmp_path / "unguided", "--guidance-scale", "0")
    masks = expected_masks(home)
    for kind, mask in masks.items():
        inside, outside = mask >= 0.5, mask == 0
        assert 0.02 < inside.mean() and 0.1 < outside.mean(), f"{kind}: the test face's mask must be partial"
        guided, face = restored(capsys, home, tmp_path / kind, "--id-mask", kind, "--guidance-scale", SCALE)
        assert face["id_mask"] == kind
        moved = np.abs(guided - unguided).max(axis=-1)
        assert moved[outside].max() <= 1, f"{kind}: guidance moved pixels outside its mask"
        assert (moved[inside] > 1).mean() > 0.5, f"{kind}: guidance left the inside of its mask unchanged"
    # the masks differ, so no branch can stand in for another unnoticed
    for a, b in (("parsing", "proxy"), ("learned", "proxy"), ("learned", "parsing")):
        assert ((masks[a] >= 0.5) != (masks[b] >= 0.5)).mean() > 0.05, (a, b)
    uniform, face = restored(capsys, home, tmp_path / "none", "--id-mask", "none", "--guidance-scale", SCALE)
    assert face["id_mask"] == "none"
    assert (np.abs(uniform - unguided).max(axis=-1) > 1).mean() > 0.5
