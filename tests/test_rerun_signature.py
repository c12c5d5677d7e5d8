"""The rerun signature: every `run` option and every weight file that changes an output makes a rerun redo the photo
("method or parameters changed"); options that change nothing but how the run talks (-q, --report, --json, ...)
leave it skipped. Every option of `run` is classified here, so a new option cannot slip through unclassified."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from archival_helpers import invoke, make_one_face_photos
from conftest import (
    RETINA_MOBILE,
    home_environment,
    make_tiny_diffbfr_weights,
    make_tiny_dr2_weights,
    make_tiny_weights,
    require_shared,
    write_random_arcface,
    write_random_parsenet,
    write_tiny_diffbfr_preset,
    write_tiny_dr2_preset,
    write_tiny_ipc_preset,
    write_tiny_preset,
)

CHANGED = "method or parameters changed"
BASE = ("--detector", "retinaface_mobile0.25")

# preset → options that change its outputs (each on top of BASE); the first element names the flag classified
REDO = {
    "difface": [("--steps", "2"), ("--seed", "1"), ("--eta", "0.3"), ("--start-t", "300"), ("--min-face", "30"),
                ("--precision", "bf16"), ("--format", "png"), ("--quality", "80"), ("--metadata", "strip"),
                ("--provenance",), ("--identity-score",), ("--detect-max-side", "100"), ("--det-threshold", "0.9"),
                ("--det-min-side", "0"), ("--min-score", "0.5"), ("--faces", "0"), ("--only-center-face",),
                ("--largest-face",), ("--upscale", "2"), ("--blend", "0.5")],
    "dr2": [("--dr2-n", "2"), ("--dr2-tau", "10"), ("--dr2-enhancer", "none"), ("--dr2-prior", "p2")],
    "ipc-guided": [("--guidance-scale", "5"), ("--id-mask", "none"), ("--guidance-through-unet",), ("--prior", "unconditional"),
                   ("--prior-condition", "ipc")],
    "diffbfr": [("--irm1-steps", "3"), ("--irm2-start-t", "500"), ("--irm2-steps", "2"), ("--tem-start-t", "50"),
                ("--tem-steps", "1")],
}
# options that change nothing the signature covers: a rerun with them skips the photo
SKIP = [("-q",), ("-v",), ("--json",), ("--print-outputs",), ("--batch-size", "2"), ("--device", "cpu"),
        ("--wait-lock", "5"), ("--fail-fast",), ("--max-failures", "3"), ("--offline",), ("--max-pixels", "100000000"),
        ("-r",), ("--redo-failed",), ("--io-workers", "0"),
        ("--bg-upsampler", "bicubic"), ("--bg-tile", "200")]  # the background's settings matter only at --upscale 2/4
# classified by a test of their own below
SPECIAL = {"inputs", "--output", "--base", "--report", "--files-from", "--null", "--method", "--preset", "--detector", "--aligned",
           "--force", "--dry-run", "--save-faces", "--save-compare", "--draw-boxes",
           "--samples", "--select", "--min-identity", "--fallback", "--save-samples",  # test_keeping.py
           "--review",  # test_review.py: a rerun with it skips what is done (its thumbnails are kept)
           "--shard", "--engine", "--ray-address",  # test_scale_out.py: the same outputs, every shard's state read
           "--compile", "--channels-last"}  # --compile: test_performance.py; --channels-last: CUDA only


def long_flag(param) -> str:
    longs = [o for o in param.opts if o.startswith("--")]
    return longs[0] if longs else param.name


def test_every_run_option_is_classified():
    import typer

    from facerestore_cli.cli import build_app

    flags = {long_flag(p) for p in typer.main.get_command(build_app(["run"])).commands["run"].params if not p.hidden}
    short = {"-q": "--quiet", "-v": "--verbose", "-r": "--recursive", "-0": "--null"}
    classified = {short.get(args[0], args[0]) for group in (*REDO.values(), SKIP) for args in group} | SPECIAL
    assert flags == classified, f"unclassified: {sorted(flags - classified)}; stale: {sorted(classified - flags)}"


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    """One home per preset (ipc-guided's with ArcFace), each holding a finished base run to copy."""
    require_shared()
    root = tmp_path_factory.mktemp("signature")
    photo = make_one_face_photos(root / "in", ["face.jpg"])[0]
    made = {}
    for preset, writer in (("difface", write_tiny_preset), ("dr2", write_tiny_dr2_preset),
                           ("ipc-guided", write_tiny_ipc_preset), ("diffbfr", write_tiny_diffbfr_preset)):
        home = root / preset
        make_tiny_weights(home / "weights")
        make_tiny_dr2_weights(home / "weights")
        make_tiny_diffbfr_weights(home / "weights")
        shutil.copy(RETINA_MOBILE, home / "weights" / RETINA_MOBILE.name)
        if preset in ("difface", "ipc-guided"):  # ipc-guided, and --identity-score with difface
            write_random_arcface(home / "weights")
        preset_file = writer(home / f"{preset}-tiny.yaml")
        code, _o, err = _run(home, photo, home / "base", preset_file, BASE)
        assert code == 0, err
        made[preset] = (home, preset_file)
    return photo, made


def _run(home: Path, photo: Path, out: Path, preset: Path, args, inputs=None):
    with home_environment(home):
        return invoke("run", *(inputs if inputs is not None else [photo]), "-o", out, "--preset", preset,
                      "--report", out.parent / f"{out.name}.jsonl", *args)


def rerun(homes, preset: str, tmp_path: Path, args, base=BASE, home=None, inputs=None, preset_file=None) -> dict:
    """Rerun over a copy of the preset's finished base run with `args`; returns the photo's report record."""
    photo, made = homes
    default_home, default_preset = made[preset]
    home = home or default_home
    out = tmp_path / "out"
    shutil.copytree(default_home / "base", out)
    code, stdout, err = _run(home, photo, out, preset_file or default_preset, (*base, *args), inputs)
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    return records[0]


@pytest.mark.parametrize("preset, args", [(p, a) for p, group in REDO.items() for a in group], ids=str)
def test_option_that_changes_outputs_redoes_the_photo(homes, tmp_path, preset, args):
    rec = rerun(homes, preset, tmp_path, args)
    assert rec["status"] == "restored" and rec["why"] == CHANGED, rec


@pytest.mark.parametrize("args", SKIP, ids=str)
def test_option_that_changes_nothing_skips_the_photo(homes, tmp_path, args):
    rec = rerun(homes, "difface", tmp_path, args)
    assert rec["status"] == "skipped" and rec["reason"] == "unchanged since last run", rec


def test_same_inputs_by_files_from_and_report_elsewhere_skip(homes, tmp_path):
    photo, _made = homes
    listing = tmp_path / "list.txt"
    listing.write_bytes(bytes(photo) + b"\0")
    rec = rerun(homes, "difface", tmp_path, ("--files-from", listing, "-0"), inputs=[])
    assert rec["status"] == "skipped", rec


def test_other_preset_detector_or_alignment_redoes(homes, tmp_path):
    """Another preset (what --method or --preset choose), the default detector instead of mobile0.25, or --aligned."""
    import torch

    from facerestore_cli.archs import build_arch

    _photo, made = homes
    home, _preset = made["difface"]
    other = tmp_path / "other"
    shutil.copytree(home, other, ignore=shutil.ignore_patterns("base"))
    torch.manual_seed(0)
    detector = build_arch("retinaface", {"network": "resnet50"}).state_dict()
    for key in [k for k in detector if k.startswith("ClassHead.")]:
        detector[key] = torch.zeros_like(detector[key])  # every score 0.5: finds no face (and is quick about it)
    torch.save(detector, other / "weights" / "detection_Resnet50_Final.pth")
    renamed = write_tiny_preset(other / "difface-renamed.yaml")
    renamed.write_text(renamed.read_text().replace("name: difface-tiny", "name: difface-renamed"))
    for n, (args, base, preset_file) in enumerate([((), (), None),  # retinaface_resnet50
                                                    (("--aligned",), (), None),
                                                    ((), BASE, renamed)]):
        rec = rerun(homes, "difface", tmp_path / str(n), args, base=base, home=other, preset_file=preset_file)
        assert rec["why"] == CHANGED and rec["status"] in ("restored", "no_face"), (args, base, rec)


@pytest.mark.parametrize("preset, role, weight_id", [
    ("difface", "prior", "difface-unet"), ("difface", "estimator", "difface-swinir"),
    ("difface", None, "retinaface-mobile0.25"), ("dr2", "enhancer", "dr2-sparnethd"), ("dr2", "prior", "dr2-unet"),
    ("ipc-guided", "arcface", "arcface-ir-se50")])
def test_reimported_weight_file_redoes_the_photo(homes, tmp_path, preset, role, weight_id):
    """Same layout, other bytes: importing it records a new sha256, and the outputs the old file made are stale."""
    import torch

    from facerestore_cli.presets import load_file

    _photo, made = homes
    home, preset_file = made[preset]
    copy = tmp_path / "home"
    shutil.copytree(home, copy, ignore=shutil.ignore_patterns("base"))
    from facerestore_cli.weights.store import WeightStore

    path = WeightStore(copy).path(weight_id)
    state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = state.get("state_dict", state)
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = tensors[first] + 0.01
    new = tmp_path / path.name
    torch.save(state, new)
    config = load_file(preset_file).components[role].config if role else None
    WeightStore(copy).import_file(weight_id, new, config)
    rec = rerun(homes, preset, tmp_path, (), home=copy)
    assert rec["status"] in ("restored", "no_face") and rec["why"] == CHANGED, rec  # a changed detector may miss it


def test_adding_the_paste_parser_redoes_the_photo(homes, tmp_path):
    _photo, made = homes
    home, _preset = made["difface"]
    copy = tmp_path / "home"
    shutil.copytree(home, copy, ignore=shutil.ignore_patterns("base"))
    write_random_parsenet(copy / "weights")
    rec = rerun(homes, "difface", tmp_path, (), home=copy)
    assert rec["status"] == "restored" and rec["why"] == CHANGED and rec["mask"] == "parsenet-in-square", rec


def test_force_and_dry_run(homes, tmp_path):
    rec = rerun(homes, "difface", tmp_path / "force", ("--force",))
    assert rec["status"] == "restored" and rec["why"] == "forced", rec
    photo, made = homes
    home, preset = made["difface"]
    out = tmp_path / "dry"
    shutil.copytree(home / "base", out)
    code, stdout, err = _run(home, photo, out, preset, (*BASE, "--dry-run", "--steps", "2"))
    assert code == 0, err
    assert stdout.split("\t")[0] == "run" and stdout.rstrip("\n").split("\t")[3] == CHANGED
    code, stdout, err = _run(home, photo, out, preset, (*BASE, "--dry-run"))
    assert stdout.split("\t")[0] == "skip" and "unchanged" in stdout
