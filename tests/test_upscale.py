"""--upscale: Real-ESRGAN backgrounds in tiles (seams), faces pasted at N×, alpha and 16-bit pixels kept."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cli_helpers import read_report, run_cli
from conftest import PHOTOS, randomize
from tiny_configs import TINY_RRDBNET

DET = ("--detector", "retinaface_mobile0.25")


def tiny_upsampler(scale: int, tile: int, pad: int):
    from facerestore_cli.archs import build_arch
    from facerestore_cli.background import TiledUpsampler
    from facerestore_cli.device import resolve
    from facerestore_cli.networks import Network

    module = randomize(build_arch("rrdbnet", {**TINY_RRDBNET, "scale": scale}), 3).eval()
    return TiledUpsampler(Network("realesrgan", {}, module, resolve("cpu", "fp32"), None), scale, tile, pad)


@pytest.fixture(scope="module")
def picture16():
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.random((90, 130, 3)).astype(np.float32), (0, 0), 3)
    return (np.clip(smooth * 3 - 1, 0, 1) * 65535).astype(np.uint16)


@pytest.mark.parametrize("scale", [2, 4])
def test_tiles_with_enough_context_equal_the_whole_photo(picture16, scale):
    """Tiles that read as far as the network sees put together the untiled result (±1 of 65535: float rounding);
    without context the seams show, so the comparison can fail."""
    whole = tiny_upsampler(scale, 0, 0)(picture16).astype(int)
    tiled = tiny_upsampler(scale, 32, 48)(picture16).astype(int)
    bare = tiny_upsampler(scale, 32, 0)(picture16).astype(int)
    assert whole.shape == (90 * scale, 130 * scale, 3) and tiled.dtype == int
    assert np.abs(tiled - whole).max() <= 1
    assert np.abs(bare - whole).max() > 100


def test_odd_sizes_are_padded_and_cropped_back(picture16):
    """RRDBNet x2 reads 2×2 blocks: an odd-sized photo is reflect-padded, as Real-ESRGAN's helper does, and the
    result cropped to exactly twice the photo."""
    odd = picture16[:51, :77]
    out = tiny_upsampler(2, 0, 0)(odd)
    assert out.shape == (102, 154, 3) and out.dtype == np.uint16


def test_faces_are_pasted_where_they_are_in_the_enlarged_photo():
    """A crop warped out of the photo and pasted at ×2 onto a blank canvas twice the photo's size lands where the
    face is in the photo enlarged ×2 (the inverse affine scaled, with facexlib's 0.5·N px offset); pasted with the
    unscaled matrix it does not."""
    from facerestore_cli.faces.align import estimate_affine, paste_faces, warp_face

    rng = np.random.default_rng(1)
    image = (cv2.GaussianBlur(rng.random((200, 200, 3)).astype(np.float32), (0, 0), 4) * 4 - 1.5).clip(0, 1)
    landmarks = np.array([[80, 90], [120, 90], [100, 115], [84, 135], [116, 135]], np.float32)
    affine = estimate_affine(landmarks, 256)
    crop = warp_face(image, affine, 256)
    big = cv2.resize(image, (400, 400), interpolation=cv2.INTER_LINEAR)
    blank = np.zeros_like(big)
    right = paste_faces(blank, [crop], [affine], upscale=2)
    wrong = paste_faces(blank, [crop], [affine], upscale=1)
    region = (slice(180, 270), slice(165, 235))
    error_right = np.abs(right[region] - big[region]).mean()
    error_wrong = np.abs(wrong[region] - big[region]).mean()
    assert error_right < 0.03 < 0.1 < error_wrong


def rgba16(path, source):
    rgb = cv2.imread(str(source))
    alpha = np.tile(np.linspace(0, 65535, rgb.shape[1]).astype(np.uint16), (rgb.shape[0], 1))
    cv2.imwrite(str(path), np.dstack([rgb.astype(np.uint16) * 257, alpha]))
    return alpha


@pytest.mark.parametrize("how", ["realesrgan", "bicubic"])
def test_upscaled_outputs_keep_alpha_and_16_bits(tiny_env, tmp_path, capsys, how):
    from facerestore_cli.imageio import read_image

    src = tmp_path / "portrait16.png"
    alpha = rgba16(src, PHOTOS / "old-portrait-01.jpg")
    scale = 2 if how == "realesrgan" else 4
    report = tmp_path / "r.jsonl"
    code, _o, err = run_cli(capsys, "run", src, "-o", tmp_path / "out", "--preset", tiny_env, *DET, "-q", "--report",
                            report, "--upscale", scale, "--bg-upsampler", how, "--bg-tile", "64")
    assert code == 0, err
    (rec,), _summary = read_report(report)
    out = read_image(tmp_path / "out" / "portrait16.png")
    assert out.rgb.shape == (189 * scale, 248 * scale, 3) and out.rgb.dtype == np.uint16
    expected_alpha = cv2.resize(alpha, (248 * scale, 189 * scale), interpolation=cv2.INTER_LINEAR)
    assert out.alpha is not None and np.array_equal(out.alpha, expected_alpha)
    assert rec["status"] == "restored" and len(rec["faces"]) == 4  # and the hand left out (--min-score)
    assert rec["parameters"]["upscale"] == scale and rec["parameters"]["bg_upsampler"] == how
    assert rec["notes"] == []


def test_upscale_without_faces_still_enlarges_and_keeps_dpi(tiny_env, tmp_path, capsys):
    """A photo with no face chosen is still written N× (outputs of one run have one scale), its dpi scaled with it
    so the print size stays."""
    from PIL import Image

    src = tmp_path / "flat.png"
    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(src, dpi=(300, 300))
    code, _o, err = run_cli(capsys, "run", src, "-o", tmp_path / "out", "--preset", tiny_env, *DET, "-q",
                            "--upscale", "2", "--bg-upsampler", "none")
    assert code == 0, err
    with Image.open(tmp_path / "out" / "flat.png") as im:
        assert im.size == (120, 80) and round(im.info["dpi"][0]) == 600


def test_missing_realesrgan_weights_fail_before_work(tiny_env, tmp_path, capsys, monkeypatch):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(tiny_env.parent / "weights", home / "weights")
    (home / "weights" / "RealESRGAN_x4plus.pth").unlink()
    monkeypatch.setenv("FACERESTORE_HOME", str(home))
    code, _o, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "out", "--preset", tiny_env,
                            *DET, "--upscale", "4")
    assert code == 4 and "realesrgan-x4plus" in err and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def at_one(tiny_home, tmp_path_factory):
    """The tiny difface run at ×1 on old-portrait-01 (its output and report), to compare the ×N runs with."""
    from archival_helpers import invoke
    from conftest import home_environment

    folder = tmp_path_factory.mktemp("at-one")
    with home_environment(tiny_home):
        code, _o, err = invoke("run", PHOTOS / "old-portrait-01.jpg", "-o", folder / "out", "--preset",
                           tiny_home / "difface-tiny.yaml", *DET, "-q", "--report", folder / "r.jsonl")
    assert code == 0, err
    (rec,), _summary = read_report(folder / "r.jsonl")
    return cv2.imread(str(folder / "out" / "old-portrait-01.jpg")).astype(float), rec


@pytest.mark.parametrize("how", ["bicubic", "realesrgan"])
def test_upscaled_run_pastes_the_restored_faces_at_the_output_scale(tiny_env, tmp_path, capsys, at_one, how):
    """Through `run`: inside each face's box, the ×2 output shrunk back to ×1 is the ×1 run's restored face, not the
    enlarged photo under it; faces pasted at ×1 coordinates, or not pasted, fail. The tiny random networks restore
    faces as noise, which no two resampling paths (warp at ×1, or warp at ×2 then shrink) keep alike, so both sides
    are compared blurred (σ = 2 px at ×1): measured 2–7 levels from the ×1 faces, 34–62 from the photo."""
    one, rec_one = at_one
    report = tmp_path / "r.jsonl"
    code, _o, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "out", "--preset", tiny_env,
                            *DET, "-q", "--report", report, "--upscale", "2", "--bg-upsampler", how)
    assert code == 0, err
    (rec,), _summary = read_report(report)
    assert [f["box"] for f in rec["faces"]] == [f["box"] for f in rec_one["faces"]] and len(rec["faces"]) == 4
    two = cv2.imread(str(tmp_path / "out" / "old-portrait-01.jpg")).astype(float)
    assert two.shape == (one.shape[0] * 2, one.shape[1] * 2, 3)
    photo = cv2.imread(str(PHOTOS / "old-portrait-01.jpg")).astype(float)
    shrunk = cv2.resize(two, (one.shape[1], one.shape[0]), interpolation=cv2.INTER_AREA)
    shrunk, one, photo = (cv2.GaussianBlur(x, (0, 0), 2) for x in (shrunk, one, photo))
    for face in rec["faces"]:
        x0, y0, x1, y1 = face["box"]
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4  # the box's inner half
        core = (slice(round(cy - ry), round(cy + ry)), slice(round(cx - rx), round(cx + rx)))
        to_restored, to_photo = np.abs(shrunk[core] - one[core]).mean(), np.abs(shrunk[core] - photo[core]).mean()
        assert to_restored < 10 and to_restored * 4 < to_photo, (face["index"], to_restored, to_photo)
