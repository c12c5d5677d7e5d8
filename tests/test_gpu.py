"""The GPU path (#13), on CUDA only (skipped with the reason elsewhere; benchmarks/gpu-check.sh runs them): reduced
precision drift at full size, batch invariance on CUDA (also with channels_last), detection batches, OOM back-off
under a forced memory cap, compile parity, the measured batch size."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from archival_helpers import make_one_face_photos, report_lines, tiny_run
from conftest import PHOTOS, RETINA_MOBILE, require_shared

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

# The stated tolerances: one full-size DifFace UNet forward at 512, relative RMS error of ε against fp32.
DRIFT = {"bf16": 3e-2, "fp16": 5e-3}


def full_size_unet(seed: int = 0):
    from facerestore_cli.archs import build_arch
    from facerestore_cli.weights.registry import get_spec

    torch.manual_seed(seed)
    return build_arch("unet", get_spec("difface-unet").config).eval().requires_grad_(False).cuda()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_drift_at_full_size(precision):
    from facerestore_cli.device import resolve

    unet = full_size_unet()
    torch.manual_seed(1)
    x, t = torch.randn(2, 3, 512, 512, device="cuda"), torch.tensor([400, 120], device="cuda")
    with torch.no_grad():
        reference = unet(x, t)
        with resolve("cuda", precision).autocast():
            reduced = unet(x, t).float()
    drift = ((reduced - reference).pow(2).mean() / reference.pow(2).mean()).sqrt().item()
    assert drift < DRIFT[precision], drift


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_face_is_bit_identical_whatever_its_batch_neighbours_on_cuda(channels_last, precision):
    from facerestore_cli.device import resolve

    unet = full_size_unet()
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    torch.manual_seed(2)
    face, a, b = (torch.randn(1, 3, 512, 512, device="cuda") for _ in range(3))
    t = torch.full((4,), 300, device="cuda")
    with torch.no_grad(), resolve("cuda", precision).autocast():
        first = unet(torch.cat([face, a, b, a]), t)[0]
        second = unet(torch.cat([b, b, face, a]), t)[2]
    assert torch.equal(first, second)


def test_detection_batches_are_invariant_on_cuda():
    require_shared()
    from facerestore_cli.archs.retinaface import build_retinaface
    from facerestore_cli.faces.detect import FaceDetector
    from facerestore_cli.imageio import read_image

    model = build_retinaface({"network": "mobile0.25"})
    state = torch.load(RETINA_MOBILE, map_location="cpu", weights_only=True)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    detector = FaceDetector(model, "cuda")
    rgb = read_image(PHOTOS / "group-of-eight.jpg").rgb
    other = np.ascontiguousarray(rgb[::-1])
    one = detector.detect_many([rgb, other], batch=4)[0]
    two = detector.detect_many([other, other, rgb], batch=4)[2]
    assert len(one) == 8 and [(f.box, f.score) for f in one] == [(f.box, f.score) for f in two]


def test_compile_parity_on_cuda():
    unet = full_size_unet()
    compiled = torch.compile(unet, dynamic=False, mode="reduce-overhead")
    torch.manual_seed(3)
    x, t = torch.randn(2, 3, 512, 512, device="cuda"), torch.tensor([400, 10], device="cuda")
    with torch.no_grad():
        eager = unet(x, t)
        for _ in range(3):  # warm-up and CUDA-graph capture, then replay
            fast = compiled(x, t)
    assert (fast - eager).abs().max().item() < 2e-3 * eager.abs().max().item()


def test_out_of_memory_back_off_under_a_memory_cap(tiny_env, tmp_path):
    """Cap the process at what the tiny networks and a few faces need: --batch-size 64 does not fit, the run halves
    its way down and restores every face."""
    src, report = tmp_path / "in", tmp_path / "r.jsonl"
    src.mkdir()
    shutil.copy(PHOTOS / "group-of-eight.jpg", src / "group.jpg")
    total = torch.cuda.get_device_properties(0).total_memory  # the cap counts what earlier tests' CUDA graphs hold
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + 1.5 * 2**30) / total)
    try:
        code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "out", "--device", "cuda", "--batch-size", 64,
                                 "--steps", 2, "--report", report)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert code == 0, err
    assert "out of memory with 64 faces per batch" in err
    record = report_lines(report)[0]
    assert record["status"] == "restored" and len(record["faces"]) == 8 and record["batch_size"] < 64


def test_default_batch_size_is_measured_and_fits(tiny_env, tmp_path):
    src, report = tmp_path / "in", tmp_path / "r.jsonl"
    make_one_face_photos(src, ["a.png", "b.png", "c.png"])
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "out", "--device", "cuda", "--steps", 2, "--report",
                             report)
    assert code == 0, err
    assert "out of memory" not in err
    assert 1 <= report_lines(report)[0]["batch_size"] <= 8
