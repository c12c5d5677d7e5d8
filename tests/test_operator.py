"""Operator experience: what a new user and a cron job meet in the first ten minutes (extras on reruns, reports that
keep what they knew, usage errors before any work, dangling links, readiness, weights commands at 80 columns,
HEIC photos, help and version)."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from PIL import Image, ImageCms

from archival_helpers import invoke, make_one_face_photos, report_lines, tiny_run
from conftest import PHOTOS, RETINA_MOBILE, require_shared

RECORD_FIELDS = {"input", "output", "status", "reason", "previous_status", "why", "faces", "skipped_faces", "mask",
                 "seconds", "restore_seconds", "method", "parameters", "weights", "device", "batch_size", "notes",
                 "face_files", "compare_file"}
FACE_FIELDS = {"index", "box", "score", "landmarks", "seed", "mask", "id_mask", "configuration", "identity", "samples",
               "kept", "gate"}


def _no_models(*_a, **_k):
    raise AssertionError("must not load any model")


# -- reruns: extras, and the records a skipped photo keeps -------------------------------------------------------

@pytest.fixture
def done_once(tiny_env, tmp_path):
    require_shared()
    src, out = tmp_path / "in", tmp_path / "out"
    make_one_face_photos(src, ["a.png", "b.jpg"])
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--report", tmp_path / "first.jsonl")
    assert code == 0, err
    return src, out


def test_compare_sheet_asked_on_a_rerun_is_made_without_restoring(done_once, tiny_env, tmp_path, monkeypatch):
    src, out = done_once
    monkeypatch.setattr("facerestore_cli.runner.load_models", _no_models)
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--save-compare", "--report", tmp_path / "r.jsonl")
    assert code == 0, err
    records = {r["input"]: r for r in report_lines(tmp_path / "r.jsonl")[:-1]}
    for name in ("a.png", "b.jpg"):
        rec = records[str(src / name)]
        assert rec["status"] == "skipped" and rec["reason"] == "unchanged since last run; compare sheet made"
        assert rec["compare_file"] == str(out / "_compare" / f"{name.split('.')[0]}.jpg")
        sheet = Image.open(rec["compare_file"])
        assert sheet.size[0] >= 2 * 256 and sheet.format == "JPEG"
    # deleted later: remade; present: left alone
    (out / "_compare" / "a.jpg").unlink()
    before = (out / "_compare" / "b.jpg").stat().st_mtime_ns
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--save-compare", "--report", tmp_path / "r2.jsonl")
    assert code == 0, err
    records = {r["input"]: r for r in report_lines(tmp_path / "r2.jsonl")[:-1]}
    assert records[str(src / "a.png")]["reason"].endswith("compare sheet made") and (out / "_compare" / "a.jpg").is_file()
    assert records[str(src / "b.jpg")]["reason"] == "unchanged since last run"
    assert (out / "_compare" / "b.jpg").stat().st_mtime_ns == before


def test_face_crops_asked_on_a_rerun_restore_again(done_once, tiny_env, tmp_path):
    src, out = done_once
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--save-faces", "--report", tmp_path / "r.jsonl")
    assert code == 0, err
    records = {r["input"]: r for r in report_lines(tmp_path / "r.jsonl")[:-1]}
    for name in ("a.png", "b.jpg"):
        rec = records[str(src / name)]
        assert rec["status"] == "restored" and rec["why"] == "face crops missing"
        assert rec["face_files"] == [str(out / "_faces" / f"{name.split('.')[0]}_face00.png")]
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--save-faces", "--report", tmp_path / "r2.jsonl")
    assert {r["status"] for r in report_lines(tmp_path / "r2.jsonl")[:-1]} == {"skipped"}


def test_a_skipped_photo_reports_its_last_record(done_once, tiny_env, tmp_path):
    src, out = done_once
    first = {r["input"]: r for r in report_lines(tmp_path / "first.jsonl")[:-1]}
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--report", tmp_path / "first.jsonl")  # the same report
    assert code == 0, err
    for rec in report_lines(tmp_path / "first.jsonl")[:-1]:
        last = first[rec["input"]]
        assert rec["status"] == "skipped" and rec["previous_status"] == last["status"] == "restored"
        assert rec["faces"] == last["faces"] and len(rec["faces"]) == 1 and rec["mask"] == last["mask"]
        assert rec["weights"] == last["weights"] and rec["parameters"] == last["parameters"]
        assert set(rec) == RECORD_FIELDS


def test_every_record_has_every_field(tiny_env, tmp_path):
    require_shared()
    src = tmp_path / "in"
    make_one_face_photos(src, ["face.png"])
    Image.new("RGB", (40, 30), (90, 90, 90)).save(src / "wall.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    code, _o, _err = tiny_run(tiny_env, src, "-o", tmp_path / "out", "--report", tmp_path / "r.jsonl")
    assert code == 1
    lines = report_lines(tmp_path / "r.jsonl")
    assert {r["status"] for r in lines[:-1]} == {"restored", "no_face", "failed"}
    for rec in lines[:-1]:
        assert set(rec) == RECORD_FIELDS, rec["status"]
        for face in rec["faces"]:
            assert set(face) == FACE_FIELDS
    summary = lines[-1]["summary"]
    assert summary["photos"] == 3 == summary["restored"] + summary["no_face"] + summary["failed"]
    assert summary["unfinished"] == 0


# -- usage errors before any work, and nothing left behind --------------------------------------------------------

@pytest.mark.parametrize("kind", ["folder", "unwritable"])
def test_bad_report_path_is_a_usage_error_before_any_work(tiny_env, tmp_path, kind, monkeypatch):
    require_shared()
    photo = make_one_face_photos(tmp_path / "in", ["a.png"])[0]
    if kind == "folder":
        report = tmp_path / "reports"
        report.mkdir()
        message = f"--report {report} is a folder"
    else:  # a file where its folder should be (unlike permissions, this holds for root too)
        (tmp_path / "notes").write_text("a file")
        report = tmp_path / "notes" / "r.jsonl"
        message = f"--report {report} cannot be written: {tmp_path / 'notes'} is not a writable folder"
    monkeypatch.chdir(tmp_path)
    code, _o, err = tiny_run(tiny_env, photo, "-o", tmp_path / "out", "--report", report)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_run_failing_before_any_work_leaves_no_output_folder_or_report(tiny_home, tmp_path, monkeypatch):
    """A corrupt weight is found only when the models load, after the output folder was locked (made): the folder
    goes again, and no report is written."""
    require_shared()
    home = tmp_path / "home"
    shutil.copytree(tiny_home, home)
    unet = home / "weights" / "iddpm_ffhq512_ema500000.pth"
    unet.write_bytes(unet.read_bytes()[:1000])  # corrupt after its hash was recorded: caught at load time
    monkeypatch.setenv("FACERESTORE_HOME", str(home))
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
    photo = make_one_face_photos(tmp_path / "in", ["a.png"])[0]
    report = tmp_path / "r.jsonl"
    code, _o, err = tiny_run(home / "difface-tiny.yaml", photo, "-o", tmp_path / "out", "--report", report)
    assert code == 4 and "iddpm_ffhq512_ema500000.pth" in err
    assert not (tmp_path / "out").exists() and not report.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_dangling_link_named_like_an_image_fails_with_its_reason(tiny_env, tmp_path):
    require_shared()
    src = tmp_path / "in"
    make_one_face_photos(src, ["a.png"])
    (src / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (src / "gone.txt").symlink_to(tmp_path / "deleted.txt")
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "out", "--report", tmp_path / "r.jsonl")
    assert code == 1
    records = {os.path.basename(r["input"]): r for r in report_lines(tmp_path / "r.jsonl")[:-1]}
    assert set(records) == {"a.png", "gone.jpg"}
    assert records["gone.jpg"]["status"] == "failed"
    assert records["gone.jpg"]["reason"] == f"broken symbolic link: it points to {tmp_path / 'deleted.jpg'}, which does not exist"
    assert report_lines(tmp_path / "r.jsonl")[-1]["summary"]["skipped_not_image"] == 1  # gone.txt


def test_nothing_found_says_what_was_skipped_and_why(tiny_env, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "notes.txt").write_text("hello")
    (src / "scan.psd").write_bytes(b"8BPS" + b"\0" * 30)
    (src / ".hidden.jpg").write_bytes(b"x")
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "out")
    assert code == 3
    assert "no input images found: skipped 2 not images (e.g. notes.txt, scan.psd), 1 hidden" in err


# -- HEIC ------------------------------------------------------------------------------------------------------------

def test_heic_photos_are_read_with_their_exif_and_icc_and_written_as_jpeg(tiny_env, tmp_path):
    require_shared()
    src = tmp_path / "in"
    src.mkdir()
    face = Image.open(PHOTOS / "group-of-eight.jpg").convert("RGB").crop((130, 110, 310, 310))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0112] = 6  # rotated: the pixels come out turned 90° clockwise
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    face.rotate(90, expand=True).save(src / "IMG_0001.HEIC", format="HEIF", exif=exif.tobytes(), icc_profile=icc,
                                      quality=95)
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "out", "--report", tmp_path / "r.jsonl")
    assert code == 0, err
    rec = report_lines(tmp_path / "r.jsonl")[0]
    assert rec["status"] == "restored" and len(rec["faces"]) == 1, rec
    out = Image.open(rec["output"])
    assert rec["output"].endswith("IMG_0001.jpg") and out.format == "JPEG" and out.size == face.size
    assert out.getexif()[0x010F] == "PhoneMaker" and out.getexif().get(0x0112, 1) == 1
    assert out.info.get("icc_profile") == icc
    assert any("HEIF cannot be written; wrote JPEG" in note for note in rec["notes"])


# -- detectors, readiness ----------------------------------------------------------------------------------------

def test_detector_by_weight_id_is_the_same_run(tiny_env, tmp_path):
    require_shared()
    photo = make_one_face_photos(tmp_path / "in", ["a.png"])[0]
    code, _o, err = invoke("run", photo, "-o", tmp_path / "out", "--preset", tiny_env, "--detector",
                           "retinaface-mobile0.25", "-q")
    assert code == 0, err
    code, _o, err = invoke("run", photo, "-o", tmp_path / "out", "--preset", tiny_env, "--detector",
                           "retinaface_mobile0.25", "--report", tmp_path / "r.jsonl")
    assert code == 0 and report_lines(tmp_path / "r.jsonl")[0]["status"] == "skipped"


def test_run_without_the_default_detector_suggests_the_installed_one(tiny_env, tmp_path):
    require_shared()
    photo = make_one_face_photos(tmp_path / "in", ["a.png"])[0]
    code, _o, err = invoke("run", photo, "-o", tmp_path / "out", "--preset", tiny_env)
    assert code == 4 and "detection_Resnet50_Final.pth" in err
    assert "or use --detector retinaface_mobile0.25, which is installed" in err


def test_methods_and_doctor_give_a_verdict(tiny_env):
    code, out, err = invoke("methods")
    assert code == 0, err
    assert ("difface: DifFace (TPAMI 2024) — diffused estimator + DDIM from t=400\n  ready with --detector "
            "retinaface_mobile0.25 (retinaface-resnet50, the default\n    detector, is missing)") in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "dr2: " in out and "not ready: missing dr2-unet, dr2-sparnethd" in out
    records = [json.loads(line) for line in invoke("methods", "--json")[1].splitlines()]
    assert {r["preset"]: r["ready"] for r in records} == {"difface": True, "dr2": False, "ipc-guided": False,
                                                          "diffbfr": False}
    code, out, err = invoke("doctor")
    assert code == 0 and "verdict: ready: difface can run" in out
    code, out, _err = invoke("doctor", "--json")
    assert code == 0 and json.loads(out)["verdict"] == "ready: difface can run"


# -- weights commands --------------------------------------------------------------------------------------------

def test_weights_list_fits_80_columns_and_greps_cleanly(tiny_env):
    code, out, _err = invoke("weights", "list")
    assert code == 0
    table = out.split("\n\n")[0].splitlines()
    assert len(table) == 1 + len(json.loads("[" + ",".join(invoke("weights", "list", "--json")[1].splitlines()) + "]"))
    assert max(len(line) for line in table) <= 80
    assert not re.search("[│┃━─]", out)
    row = next(line for line in out.splitlines() if line.startswith("dr2-unet "))
    assert row.split() == ["dr2-unet", "~357", "MiB", "missing", "DR2_FFHQ.pkl"]
    records = [json.loads(line) for line in invoke("weights", "list", "--json")[1].splitlines()]
    assert {r["id"] for r in records} >= {"difface-unet", "dr2-unet", "parsenet"}
    code, out, _err = invoke("weights", "show", "dr2-unet")
    assert code == 0 and "pan.baidu.com" in out and "facerestore weights import dr2-unet" in out


def test_weights_import_recognises_files_by_their_layout(tmp_path, monkeypatch):
    require_shared()
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    renamed = tmp_path / "downloaded.bin"
    shutil.copy(RETINA_MOBILE, renamed)
    code, _o, err = invoke("weights", "import", renamed)
    assert code == 0, err
    assert f"{renamed}: retinaface-mobile0.25 →" in err
    assert (tmp_path / "home" / "weights" / RETINA_MOBILE.name).read_bytes() == RETINA_MOBILE.read_bytes()
    not_weights = tmp_path / "other.pth"
    import torch

    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, not_weights)
    code, _o, err = invoke("weights", "import", not_weights)
    assert code == 4 and f"{not_weights} fits no weight id; nearest:" in err
    code, _o, err = invoke("weights", "import", "retinaface-mobile-0.25", RETINA_MOBILE)
    assert code == 2 and "unknown weight id 'retinaface-mobile-0.25'" in err and "retinaface-mobile0.25" in err


def test_weights_import_link_points_at_the_file(tmp_path, monkeypatch):
    require_shared()
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    code, _o, err = invoke("weights", "import", "--link", RETINA_MOBILE)
    assert code == 0, err
    cached = tmp_path / "home" / "weights" / RETINA_MOBILE.name
    assert cached.is_symlink() and cached.resolve() == RETINA_MOBILE.resolve()
    code, out, _e = invoke("weights", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_weights_import_of_two_ids_with_one_layout_asks_which(tmp_path, monkeypatch):
    """dr2-unet and p2-ffhq are the same network: a file named like neither must be named by its id."""
    import torch

    from facerestore_cli.weights.store import WeightStore

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    from tiny_configs import TINY_UNET_DR2

    from facerestore_cli.archs import build_arch

    preset = tmp_path / "p.yaml"
    preset.write_text("name: p\nmethod: dr2\ncomponents:\n  prior: {weights: dr2-unet, config: "
                      + json.dumps(TINY_UNET_DR2) + "}\n  alt: {weights: p2-ffhq, config: " + json.dumps(TINY_UNET_DR2)
                      + "}\nparameters: {}\n")
    path = tmp_path / "prior.pt"
    torch.save(build_arch("unet", TINY_UNET_DR2).state_dict(), path)
    code, _o, err = invoke("weights", "import", path, "--preset", preset)
    assert code == 4 and "fits dr2-unet and p2-ffhq; say which: facerestore weights import dr2-unet" in err
    code, _o, err = invoke("weights", "import", "p2-ffhq", path, "--preset", preset)
    assert code == 0, err
    assert WeightStore().is_present("p2-ffhq")


# -- help and version ------------------------------------------------------------------------------------------------

def test_version_and_help_show_every_global_flag(monkeypatch):
    code, out, _e = invoke("--version")
    assert code == 0 and out == "facerestore 0.1.0\n"
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _e = invoke("--help")
    assert code == 0 and "--debug" in out and "--version" in out and "<bool>" not in out


def test_run_help_groups_its_options_and_cuts_no_name_at_80_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _e = invoke("run", "--help")
    assert code == 0
    panels = re.findall(r"^([A-Z].*):$", out, flags=re.M)
    assert panels == ["Arguments", "Input and output", "Method", "Method knobs (default: the preset's)",
                      "Faces (default: the preset's)", "Paste-back and output size", "Device", "Archival runs",
                      "Output format and extras", "Progress and stdout", "Options"]
    assert "<bool>" not in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    for flag in ("--guidance-through-unet", "--identity-score", "--print-outputs", "--save-compare", "--max-failures"):
        assert re.search(rf"^  (-\w, )?{re.escape(flag)}\b", out, flags=re.M), flag
