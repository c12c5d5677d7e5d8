"""Performance work that must not change results (#13): paste-back on the faces' regions only, detection on a capped
copy of large photos (within a stated tolerance), detection batches, --compile; and the benchmark itself."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from archival_helpers import invoke, tiny_run
from conftest import PHOTOS, RETINA_MOBILE, require_shared
from facerestore_cli.benchmark import WholeImageWriter
from facerestore_cli.faces.align import estimate_affine, warp_face
from facerestore_cli.faces.detect import FaceDetector
from facerestore_cli.faces.settings import FaceSettings
from facerestore_cli.imageio import read_image
from facerestore_cli.photos import Face, PhotoWriter
from facerestore_cli.pixels import to_float
from facerestore_cli.timings import StageTimer


@pytest.fixture(scope="module")
def retinaface():
    require_shared()
    from facerestore_cli.archs.retinaface import build_retinaface

    model = build_retinaface({"network": "mobile0.25"})
    state = torch.load(RETINA_MOBILE, map_location="cpu", weights_only=True)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return model


def restored_faces(rgb, detections, seed: int) -> list[Face]:
    """Faces as the pipeline holds them after the network: crops changed by a random tone curve and noise."""
    rng = np.random.default_rng(seed)
    faces = []
    for i, det in enumerate(detections):
        affine = estimate_affine(det.landmarks, 512)
        crop = warp_face(to_float(rgb), affine, 512)
        restored = np.clip(crop ** rng.uniform(0.7, 1.3) + rng.normal(0, 0.02, crop.shape), 0, 1).astype(np.float32)
        faces.append(Face(i, det.box, det.score, affine, crop, det.landmarks, restored))
    return faces


@pytest.mark.parametrize("name", ["group-of-eight.jpg", "old-portrait-01.jpg", "whole-02.png"])
@pytest.mark.parametrize("depth", [np.uint8, np.uint16])
@pytest.mark.parametrize("parse", [False, True])
def test_region_paste_equals_whole_picture_float_paste(retinaface, name, depth, parse):
    rgb = read_image(PHOTOS / name).rgb
    faces = restored_faces(rgb, FaceDetector(retinaface).detect(rgb), seed=len(name))
    if depth == np.uint16:
        rgb = rgb.astype(np.uint16) * 257 + np.uint16(3)  # not a mere copy of the 8-bit levels
    if parse:  # ParseNet's labels as the network stage leaves them: a fixed label map stands in
        for face in faces:
            face.parse_labels = np.pad(np.ones((380, 300), np.uint8), ((80, 52), (106, 106)))
    opts = SimpleNamespace(aligned=False, faces=FaceSettings())
    region = PhotoWriter(opts, StageTimer()).paste(rgb, faces)
    whole = WholeImageWriter(opts, StageTimer()).paste(rgb, faces)
    assert {f.paste_mask for f in faces} == {"parsenet-in-square" if parse else "square"}
    assert region.dtype == rgb.dtype and np.array_equal(region, whole)
    assert np.abs(region.astype(np.int64) - rgb).max() > 0  # and the faces were pasted at all


# --------------------------------------------------------------------------------------- capped detection

# The stated tolerance: detection on a copy shrunk to half the long side finds every face of at least 90 px that
# full-resolution detection finds, boxes within 12% and landmarks within 8% of the face's box width. (RetinaFace's
# regressions shift that much between scales; downscaling itself adds well under a pixel.)
BOX_TOLERANCE, LANDMARK_TOLERANCE = 0.12, 0.08


@pytest.mark.parametrize("name", ["group-of-eight.jpg", "whole-02.png", "whole-03.png"])
@pytest.mark.parametrize("fraction", [0.8, 0.5])
def test_capped_detection_agrees_with_full_resolution(retinaface, name, fraction):
    rgb = read_image(PHOTOS / name).rgb
    full = FaceDetector(retinaface).detect(rgb)
    capped = FaceDetector(retinaface, max_side=int(max(rgb.shape[:2]) * fraction)).detect(rgb)
    assert len(capped) == len(full) and min(f.box[2] - f.box[0] for f in full) >= 90
    for ours, theirs in zip(capped, full):  # both ordered left to right
        width = theirs.box[2] - theirs.box[0]
        assert np.abs(np.subtract(ours.box, theirs.box)).max() <= BOX_TOLERANCE * width
        assert np.abs(ours.landmarks - theirs.landmarks).max() <= LANDMARK_TOLERANCE * width


def test_cap_is_a_no_op_below_it_and_maps_back_above_it(retinaface):
    rgb = read_image(PHOTOS / "group-of-eight.jpg").rgb
    full = FaceDetector(retinaface).detect(rgb)
    same = FaceDetector(retinaface, max_side=max(rgb.shape[:2])).detect(rgb)
    assert [f.box for f in same] == [f.box for f in full]
    big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    mapped = FaceDetector(retinaface, max_side=max(rgb.shape[:2])).detect(big)
    for ours, theirs in zip(mapped, full):  # detected on (nearly) the original, in the big photo's pixels
        assert np.abs(ours.landmarks / 2 - theirs.landmarks).max() < 1.5


def test_batched_detection_is_the_same_whatever_the_neighbours(retinaface):
    rgb = read_image(PHOTOS / "group-of-eight.jpg").rgb
    other = np.ascontiguousarray(rgb[::-1])
    detector = FaceDetector(retinaface)
    with_other = detector.detect_many([rgb, other], batch=4)[0]
    with_blank = detector.detect_many([rgb], batch=4)[0]
    alone = detector.detect(rgb)
    assert [(f.box, f.score) for f in with_other] == [(f.box, f.score) for f in with_blank]
    assert len(alone) == len(with_other) == 8
    for a, b in zip(alone, with_other):  # another batch shape: the same faces, float rounding apart
        assert np.abs(a.landmarks - b.landmarks).max() < 0.05


# --------------------------------------------------------------------------------------- --compile


def test_compile_wraps_the_restoration_networks_and_changes_no_output(tiny_env, tmp_path, monkeypatch):
    """torch.compile with its eager backend (dynamo's capture without code generation, which would take minutes
    on this CPU): the run goes through the compiled networks, makes the same outputs, and a rerun with --compile
    redoes the photo (it is in the signature). Real compile parity is a `gpu` test."""
    from facerestore_cli import networks

    compiled = []
    real_compile = torch.compile

    def eager_compile(module, **kwargs):
        compiled.append((type(module).__name__, kwargs))
        return real_compile(module, backend="eager", dynamic=False)

    monkeypatch.setattr(networks.torch, "compile", eager_compile)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(PHOTOS / "old-portrait-01.jpg", src / "p.jpg")
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "eager", "--steps", 2)
    assert code == 0, err
    assert not compiled
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "compiled", "--steps", 2, "--compile")
    assert code == 0, err
    assert sorted(name for name, _ in compiled) == ["SwinIRDifFace", "UNetModel"]  # not the detector or ParseNet
    eager, fast = (cv2.imread(str(tmp_path / d / "p.jpg")).astype(int) for d in ("eager", "compiled"))
    assert np.abs(eager - fast).max() <= 1
    report = tmp_path / "r.jsonl"
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "eager", "--steps", 2, "--compile", "--report", report)
    assert code == 0 and json.loads(report.read_text().splitlines()[0])["why"] == "method or parameters changed"


# --------------------------------------------------------------------------------------- batch size


def test_batch_size_from_measured_memory():
    from facerestore_cli.device import MAX_BATCH, batch_size_for, measure_batch_size, resolve

    gib = 2**30
    assert batch_size_for(free_bytes=40 * gib, base_bytes=2 * gib, per_face_bytes=3 * gib) == MAX_BATCH
    assert batch_size_for(free_bytes=10 * gib, base_bytes=1 * gib, per_face_bytes=2 * gib) == 3  # 8 GiB usable
    assert batch_size_for(free_bytes=1 * gib, base_bytes=1 * gib, per_face_bytes=2 * gib) == 1  # never below 1
    assert measure_batch_size(resolve("cpu"), restorer=None, face_size=512) == 1


# --------------------------------------------------------------------------------------- the benchmark


def test_builtin_set_is_deterministic_and_every_face_is_found(retinaface, tmp_path):
    from facerestore_cli.benchset import builtin_shots, write_builtin_set

    first = write_builtin_set(tmp_path / "a")
    again = write_builtin_set(tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    capped, full = FaceDetector(retinaface, max_side=2048), FaceDetector(retinaface)
    for shot, path in zip(builtin_shots(), first):
        rgb = read_image(path).rgb
        assert rgb.shape[1::-1] == shot.size
        if "20mp" in shot.name:  # most faces lost on a 2048-px copy; at full resolution (the default) every face
            assert len(capped.detect(rgb)) < len(shot.faces) / 2, shot.name  # of the scan's top-left quarter found
            height, width = rgb.shape[0] // 2, rgb.shape[1] // 2
            inside = [f for f in shot.faces if f[0] + f[2] <= width and f[1] + f[2] <= height]
            assert len(full.detect(np.ascontiguousarray(rgb[:height, :width]))) == len(inside) > 4, shot.name
        else:  # faces of 90 px and more: found on any copy, cheaply
            assert len(capped.detect(rgb)) == len(shot.faces), shot.name


def test_startup_command_line_reproduces_the_benchmarked_options(tiny_env, tmp_path):
    import typer

    from facerestore_cli.benchmark import run_command_line
    from facerestore_cli.cli import build_app
    from facerestore_cli.cli_run import prepare_run

    def options(args):
        command = typer.main.get_command(build_app(args)).commands[args[0]]
        ctx = command.make_context(args[0], args[1:])
        values = dict(ctx.params)
        values["knobs"] = {flag: values.pop(flag.lstrip("-").replace("-", "_"), None)
                           for flag in ("--steps", "--eta", "--start-t", "--seed")}
        return prepare_run(ctx, values)[0]

    (tmp_path / "in").mkdir()
    shutil.copy(PHOTOS / "old-portrait-01.jpg", tmp_path / "in" / "p.jpg")
    args = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--preset", str(tiny_env), "--steps", "2",
            "--seed", "9", "--detector", "retinaface_mobile0.25", "--detect-max-side", "900", "--batch-size", "2",
            "--det-threshold", "0.9", "--det-min-side", "700", "--min-face", "12", "--min-score", "0.95", "--faces",
            "0,2", "--upscale", "2", "--bg-upsampler", "bicubic", "--bg-tile", "128", "--blend", "0.75"]
    given = options(args)
    again = options(run_command_line(given, tmp_path / "in" / "p.jpg", tmp_path / "o"))
    for field in ("params", "detector", "detect_max_side", "batch_size", "device", "precision", "faces",
                  "compile", "aligned"):
        assert getattr(again, field) == getattr(given, field), field
    assert again.preset.path == given.preset.path


def test_bench_times_the_pipeline_and_the_reference(tiny_env, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("old-portrait-00.jpg", "old-portrait-01.jpg", "group-of-eight.jpg"):
        shutil.copy(PHOTOS / name, src / name)
    saved = tmp_path / "results" / "bench.json"
    code, out, err = invoke("bench", src, "--preset", tiny_env, "--detector", "retinaface_mobile0.25", "--steps", "2",
                            "--reference", "--json", "--save", saved)
    assert code == 0, err
    result = json.loads(out)
    assert json.loads(saved.read_text()) == result
    main, ref = result["passes"]["pipeline"], result["passes"]["reference"]
    assert main["photos"] == ref["photos"] == 3 and main["faces"] == ref["faces"] == 16
    assert set(main["stages_s"]) == {"decode", "detect", "align", "network", "upscale", "paste", "encode",
                                     "write"}
    assert all(v > 0 for k, v in main["stages_s"].items() if k not in ("write", "upscale"))  # no --upscale here
    assert 0 < main["network_busy"] <= 1 and main["peak_rss_mb"] > 100 and main["peak_cuda_mb"] is None
    assert result["speedup_photos_per_s"] == pytest.approx(ref["wall_s"] / main["wall_s"], rel=0.01)
    assert 0.5 < result["startup_s"] < 60 and "excluded" in result["warmup"]
    code, text, err = invoke("bench", src / "old-portrait-01.jpg", "--preset", tiny_env, "--detector",
                             "retinaface_mobile0.25", "--steps", "1", "--no-startup")
    assert code == 0, err
    assert "pipeline" in text and "photos/s" in text and "reference" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
