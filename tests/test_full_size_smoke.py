"""Full-size smoke test: the built-in `difface` preset end to end with FULL-SIZE random networks written in the
official checkpoint layouts (UNet: flat dict with "module." keys; SwinIR: {"state_dict": {"module."+k: v}}).
One aligned 512 crop, one diffusion step, fp32 (bf16 autocast on a CPU without native bf16, as on AVX2-only
machines, runs convolutions ~300× slower): catches config/layout drift between registry.yaml, the archs and
the official files that the tiny-network tests cannot see. About 700 MB of files in tmp_path."""

from __future__ import annotations

import gc
import shutil
import time

import pytest
from PIL import Image

from cli_helpers import read_report, run_cli
from conftest import ALIGNED_LQ, RETINA_MOBILE, require_shared


def _write_official(weight_id: str, weights_dir) -> None:
    import torch

    from facerestore_cli.archs import build_arch
    from facerestore_cli.weights.registry import get_spec

    spec = get_spec(weight_id)
    torch.manual_seed(0)
    model = build_arch(spec.arch, spec.config)  # default (random) initialisation, full size
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({spec.nested_key: sd} if spec.nested_key else sd, weights_dir / spec.file)
    del model, sd
    gc.collect()


@pytest.fixture
def big_home(tmp_path):
    """A FACERESTORE_HOME removed right after the test: pytest keeps the last runs' tmp_path folders, and these
    hold ~700 MB."""
    home = tmp_path / "home"
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_builtin_difface_full_size_one_step(big_home, tmp_path, monkeypatch, capsys):
    require_shared()
    weights = big_home / "weights"
    weights.mkdir(parents=True)
    for wid in ("difface-unet", "difface-swinir"):
        _write_official(wid, weights)
    assert (weights / "iddpm_ffhq512_ema500000.pth").stat().st_size > 500 * 2**20
    assert (weights / "swinir_restoration512_L1.pth").stat().st_size > 50 * 2**20
    shutil.copy(RETINA_MOBILE, weights / RETINA_MOBILE.name)
    monkeypatch.setenv("FACERESTORE_HOME", str(big_home))
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")

    crop = sorted(ALIGNED_LQ.glob("*.png"))[0]
    out = tmp_path / "out"
    report = tmp_path / "r.jsonl"
    started = time.monotonic()
    code, stdout, err = run_cli(capsys, "run", crop, "-o", out, "--method", "difface", "--aligned", "--steps", 1,
                                "--precision", "fp32", "--device", "cpu", "--report", report, "-q")
    seconds = time.monotonic() - started
    assert code == 0, err
    assert stdout == ""

    result = Image.open(out / crop.name)
    assert result.format == "PNG" and result.size == (512, 512)
    records, summary = read_report(report)
    assert summary["photos"] == 1 and summary["restored"] == 1 and summary["failed"] == 0
    rec = records[0]
    assert rec["status"] == "restored" and rec["method"] == "difface"
    assert rec["parameters"]["steps"] == 1 and rec["device"].endswith("fp32)")
    assert set(rec["weights"]) == {"difface-unet", "difface-swinir"}
    with capsys.disabled():
        print(f"\n[full-size smoke] facerestore run (load + 1 step, fp32, CPU): {seconds:.1f}s")
