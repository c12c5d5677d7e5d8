"""`facerestore eval`: each measure equals the field's own implementation (basicsr, lpips, pytorch-fid) on the same
images and weights (random networks in their official layouts, LPIPS's real linear layers), identical images
measure as identical, files pair by relative path whatever their extensions, and every bad input is one error line
with its exit code and nothing written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from archival_helpers import invoke, tiny_run
from conftest import PHOTOS, REPO, SHARED, use_home

HQ = SHARED / "data" / "aligned-hq-ish"


def faces(size: int = 192) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC)) for p in sorted(HQ.glob("*.png"))]


def write_set(folder: Path, images, ext: str = "png", noise: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        if noise:
            image = np.clip(image + np.random.default_rng(i).normal(0, noise, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"face{i}.{ext}")
    return folder


@pytest.fixture
def eval_env(metric_home, monkeypatch) -> Path:
    use_home(monkeypatch, metric_home)
    return metric_home


def test_pixel_metrics_are_basicsrs_on_the_files(tmp_path):
    """PSNR, SSIM (RGB and Y, with a crop border) and NIQE equal basicsr's functions on the same files read as
    basicsr's scripts read them (cv2, BGR)."""
    import facerestore_cli.compat  # noqa: F401
    from basicsr.metrics.niqe import calculate_niqe
    from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

    from facerestore_cli.evaluation import metrics as m
    from facerestore_cli.evaluation.measure import read_rgb

    a, b = write_set(tmp_path / "a", faces(192)[:1]), write_set(tmp_path / "b", faces(192)[:1], noise=12)
    ours = read_rgb(a / "face0.png"), read_rgb(b / "face0.png")
    theirs = cv2.imread(str(a / "face0.png")), cv2.imread(str(b / "face0.png"))
    for crop, y in ((0, False), (4, True)):
        assert m.psnr(*ours, crop, y) == calculate_psnr(*theirs, crop, test_y_channel=y)
        assert m.ssim(*ours, crop, y) == calculate_ssim(*theirs, crop, test_y_channel=y)
    assert m.niqe(ours[1], 0) == calculate_niqe(theirs[1], 0)
    assert m.niqe(ours[1][:150, :150], 0) is None  # one 96-px block: no covariance to fit


def test_fid_moments_and_distance_are_pytorch_fids():
    """Streaming moments equal np.mean / np.cov over all features, and the distance is pytorch-fid's."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    from facerestore_cli.evaluation import metrics as m

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 16)), rng.normal(1.0, 2.0, size=(30, 16))
    moments = m.FeatureMoments()
    for chunk in np.array_split(a, 7):
        moments.add(chunk)
    mu, sigma = moments.statistics()
    assert np.allclose(mu, a.mean(0)) and np.allclose(sigma, np.cov(a, rowvar=False))
    expected = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert np.isclose(m.frechet_distance(mu, sigma, b.mean(0), np.cov(b, rowvar=False)), expected)


def torch_hub_with(tmp_path: Path, monkeypatch, *files: Path) -> None:
    """A torch hub cache holding these files: the packages' own constructors load them instead of downloading."""
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for file in files:
        os.symlink(file, checkpoints / file.name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)


def test_lpips_and_fid_features_equal_the_packages_own(eval_env, tmp_path, monkeypatch):
    """LPIPS equals lpips.LPIPS(net='alex') loading the same AlexNet file its own way; the FID statistics of a
    folder equal pytorch-fid's own `calculate_activation_statistics` with its InceptionV3 on the same weights."""
    import lpips
    from pytorch_fid.fid_score import calculate_activation_statistics
    from pytorch_fid.inception import InceptionV3

    from facerestore_cli.device import resolve
    from facerestore_cli.evaluation.measure import EvalSettings, Evaluator
    from facerestore_cli.evaluation.networks import lpips_model
    from facerestore_cli.networks import NetworkLoader
    from facerestore_cli.weights.store import WeightStore

    weights = eval_env / "weights"
    torch_hub_with(tmp_path, monkeypatch, weights / "alexnet-owt-7be5be79.pth",
                   weights / "pt_inception-2015-12-05-6726825d.pth")
    loader = NetworkLoader(WeightStore(), resolve("cpu", "fp32"))
    x, y = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        theirs = lpips.LPIPS(net="alex", verbose=False)(x, y, normalize=True)
        ours = lpips_model(loader, "alex")(x, y, normalize=True)
    assert torch.allclose(ours, theirs, atol=1e-6) and theirs.abs().max() > 0

    folder = write_set(tmp_path / "set", faces(64)[:4])
    evaluator = Evaluator(EvalSettings(("fid",), batch_size=4), loader)  # pytorch-fid's batch below: one kernel shape
    mu, sigma = evaluator.set_statistics(sorted(folder.glob("*.png")), lambda n: None)
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    mu2, sigma2 = calculate_activation_statistics(sorted(str(p) for p in folder.glob("*.png")), model, 4, 2048, "cpu", 0)
    assert np.allclose(mu, mu2, rtol=1e-4, atol=1e-3) and np.allclose(sigma, sigma2, rtol=1e-3, atol=1e-2)
    assert np.abs(mu).mean() > 1  # the random network's features are not ~0


def test_identical_images_measure_identical_and_rows_pair_by_name(eval_env, tmp_path):
    """Ground truth as TIFF, restorations as PNG (pairs by relative path, any extension): the identical set gives
    PSNR inf, SSIM 1, LPIPS 0, IDS 1, Deg. 0; a noisy one worse on each; one JSON line per image."""
    images = faces()
    truth = write_set(tmp_path / "gt", images, "tif")
    same, noisy = write_set(tmp_path / "same", images), write_set(tmp_path / "noisy", images, noise=20)
    per_image = tmp_path / "per" / "images.jsonl"
    code, out, err = invoke("eval", same, noisy, "--gt", truth, "--metrics", "psnr,ssim,lpips,ids,deg,niqe", "--json",
                            "--per-image", per_image, "-q")
    assert code == 0, err
    result = json.loads(out)
    rows = {Path(r["name"]).name: r for r in result["rows"]}
    ident, worse = rows["same"]["metrics"], rows["noisy"]["metrics"]
    assert rows["same"]["pairs"] == rows["noisy"]["pairs"] == len(images)
    assert ident["psnr"] == "inf" and ident["ssim"] == pytest.approx(1.0) and ident["lpips"] == pytest.approx(0, abs=1e-7)
    assert ident["ids"] == pytest.approx(1.0, abs=1e-12) and ident["deg"] < 1e-4
    assert worse["psnr"] < 40 and worse["ssim"] < 0.99 and worse["lpips"] > 1e-4 and worse["deg"] > ident["deg"]
    lines = [json.loads(line) for line in per_image.read_text().splitlines()]
    assert len(lines) == 2 * len(images) and {line["file"] for line in lines} == {f"face{i}" for i in range(5)}
    code, table, _err = invoke("eval", same, noisy, "--gt", truth, "--metrics", "psnr,ssim,niqe", "-q")
    assert code == 0 and max(len(line) for line in table.splitlines()) <= 80 and "PSNR↑" in table and "inf" in table
    small = write_set(tmp_path / "small", faces(128)[:2])
    code, out, err = invoke("eval", small, "--metrics", "niqe", "--json", "-q")  # NIQE needs two 96-px blocks
    row = json.loads(out)["rows"][0]
    assert code == 0 and row["metrics"]["niqe"] is None and row["notes"] == [
        "NIQE leaves out 2 of 2 images, smaller than two 96-px blocks, where NIQE fits nothing"], err


def test_landmarks_identity_to_input_and_fid_end_to_end(eval_env, tmp_path):
    """LMD with RetinaFace is 0 for identical faces; IDS-in is the cosine to the input (resized to the restored
    size); FID runs from `eval fid-stats` statistics (its numbers: the two tests above)."""
    big = faces(512)[:2]
    truth, same = write_set(tmp_path / "gt", big), write_set(tmp_path / "same", big)
    small = write_set(tmp_path / "lq", [np.asarray(Image.fromarray(f).resize((128, 128))) for f in big])
    code, out, err = invoke("eval", same, "--gt", truth, "--input", small, "--metrics", "lmd,ids-in", "--json",
                            "--detector", "retinaface_mobile0.25", "-q")
    assert code == 0, err
    row = json.loads(out)["rows"][0]
    assert row["metrics"]["lmd"] == 0 and row["counts"]["lmd"] == 2 and 0.5 < row["metrics"]["ids-in"] <= 1
    reference = write_set(tmp_path / "ref", faces())
    stats = tmp_path / "stats" / "ref.npz"
    code, _out, err = invoke("eval", "fid-stats", reference, "-o", stats, "-q")
    assert code == 0 and set(np.load(stats)) == {"mu", "sigma"}, err
    code, out, err = invoke("eval", reference, "--fid-ref", stats, "--metrics", "fid", "--json", "-q")
    # 5 images give a rank-4 covariance of 2048 features: pytorch-fid refuses the root, and eval says so
    row = json.loads(out)["rows"][0]
    assert code == 0 and row["metrics"]["fid"] is None and row["counts"]["fid"] == 5, err
    assert row["notes"] and "FID not computed (Imaginary component" in row["notes"][0]


@pytest.mark.parametrize("case", ["unpaired", "ambiguous", "size", "corrupt"])
def test_files_left_out_are_listed_and_exit_1_unless_allowed(tmp_path, case):
    """A restored image without ground truth, a ground truth without restoration, two images for one name, a size
    mismatch and an unreadable file: each listed with its reason, exit 1, no --per-image file; --allow-missing
    measures the rest (exit 0) and says how many were left out."""
    images = faces(64)[:3]
    truth, restored = write_set(tmp_path / "gt", images), write_set(tmp_path / "r", images)
    expected = {"unpaired": "no ground truth image for extra", "ambiguous": "two images for face0",
                "size": "size mismatch", "corrupt": "truncated or corrupt"}[case]
    if case == "unpaired":
        shutil.copy(restored / "face0.png", restored / "extra.png")
        (truth / "face2.png").rename(truth / "only-gt.png")
    elif case == "ambiguous":
        Image.fromarray(images[0]).save(restored / "face0.jpg")
    elif case == "size":
        Image.fromarray(images[1]).resize((32, 32)).save(restored / "face1.png")
    else:
        (restored / "face1.png").write_bytes((restored / "face1.png").read_bytes()[:200])
    per_image = tmp_path / "per.jsonl"
    code, _out, err = invoke("eval", restored, "--gt", truth, "--metrics", "psnr", "--per-image", per_image, "-q")
    assert code == 1 and expected in err and not per_image.exists(), err
    code, out, err = invoke("eval", restored, "--gt", truth, "--metrics", "psnr", "--allow-missing", "-q",
                            "--per-image", per_image)
    assert code == 0 and "left out" in out and per_image.exists(), err


@pytest.mark.parametrize("args, code, message", [
    (("missing-folder", "--gt", "GT"), 2, "restored folder"),
    (("EMPTY", "--gt", "GT"), 3, "holds no images"),
    (("R", "--gt", "GT", "--metrics", "psnr,sharpness"), 2, "unknown metric sharpness"),
    (("R", "--metrics", "psnr"), 2, "PSNR needs --gt"),
    (("R", "--input", "GT", "--metrics", "fid"), 2, "FID needs --fid-ref"),
    (("R", "--gt", "GT", "--metrics", "lpips"), 4, "lpips-alexnet"),
    (("R", "--gt", "GT", "--metrics", "ids", "--lpips-net", "squeeze"), 2, "--lpips-net must be alex or vgg"),
    (("--gt", "GT"), 2, "no restored folders"),
])
def test_bad_eval_input_is_one_error_line(tmp_path, monkeypatch, args, code, message):
    use_home(monkeypatch, tmp_path / "empty-home")
    write_set(tmp_path / "GT", faces(32)[:1])
    write_set(tmp_path / "R", faces(32)[:1])
    (tmp_path / "EMPTY").mkdir()
    monkeypatch.chdir(tmp_path)
    got, out, err = invoke("eval", *args, "--per-image", tmp_path / "per.jsonl", "-q")
    assert got == code and message in err and not (tmp_path / "per.jsonl").exists(), err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_a_runs_faces_are_judged_against_their_inputs(tiny_env, metric_home, tmp_path, monkeypatch):
    """`eval --run OUT` re-cuts every restored face from the output with the record's landmarks (at --upscale)
    and from its input photo: one line per face. With --blend 0 the pasted face is the input crop itself, so its
    identity to the input is near 1, far above the tiny network's restorations (--blend 1)."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(PHOTOS / "old-portrait-01.jpg", src / "p.jpg")
    means = {}
    for blend in ("0", "1"):
        out = tmp_path / f"out-{blend}"
        use_home(monkeypatch, tiny_env.parent)
        code, _o, err = tiny_run(tiny_env, src, "-o", out, "--steps", "1", "--upscale", "2", "--bg-upsampler",
                                 "bicubic", "--blend", blend)
        assert code == 0, err
        state = json.loads((out / ".facerestore-state.json").read_text())
        found = [face["index"] for face in next(iter(state["entries"].values()))["record"]["faces"]]
        use_home(monkeypatch, metric_home)
        per_face = tmp_path / f"faces-{blend}.jsonl"
        code, out_text, err = invoke("eval", "--run", out, "--metrics", "ids-in,niqe", "--json", "--per-image",
                                     per_face, "-q")
        assert code == 0, err
        lines = [json.loads(line) for line in per_face.read_text().splitlines()]
        assert [line["file"] for line in lines] == [f"p.jpg face {i}" for i in found] and len(found) >= 3
        assert all(line["niqe"] > 0 for line in lines)
        means[blend] = json.loads(out_text)["rows"][0]["metrics"]["ids-in"]
    assert means["0"] > 0.95 and means["0"] - means["1"] > 0.02, means


def test_quality_script_writes_a_table_with_its_commands(tiny_home, metric_home, tmp_path):
    """benchmarks/quality.sh on three faces: degrade, restore with the tiny preset at its default and two more
    --start-t values, measure; table.md holds one row per restored set and the command lines that made them."""
    import subprocess
    import sys

    home = tmp_path / "home" / "weights"
    home.mkdir(parents=True)
    for file in [*(tiny_home / "weights").iterdir(), *(metric_home / "weights").iterdir()]:
        if not (home / file.name).exists():
            os.symlink(file, home / file.name)
    preset = shutil.copy(tiny_home / "difface-tiny.yaml", tmp_path / "difface-tiny.yaml")
    hq = write_set(tmp_path / "hq", faces(256)[:3])
    results = tmp_path / "results"
    env = {**os.environ, "FACERESTORE": str(Path(sys.executable).parent / "facerestore"), "OUT": str(results),
           "FACERESTORE_HOME": str(home.parent), "FACERESTORE_OFFLINE": "1", "METRICS": "psnr,lpips"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "quality.sh"), str(hq), str(preset)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = (results / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(f"| {results}/restored/")]
    assert [row.split(" | ")[0].rsplit("/", 1)[1] for row in rows] == \
        ["difface-tiny", "difface-tiny_--start-t_300", "difface-tiny_--start-t_500"]
    assert all(row.split(" | ")[1] == "3" for row in rows) and "PSNR↑" in table and "LPIPS↓" in table
    assert "degrade" in table and table.count(" run ") == 3 and " eval " in table
