"""Identity you can trust (#23): --samples K restores each face K times and keeps the one --select prefers,
--min-identity T leaves out (or replaces with the estimate) a kept face whose ArcFace cosine to its input is below T."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cli_helpers import read_report, run_cli
from conftest import ALIGNED_LQ, PHOTOS, TINY_FACE_SIZE

DET = ("--detector", "retinaface_mobile0.25")


@pytest.fixture
def face(tmp_path):
    """A 128-px aligned crop: the tiny presets' face size, so nothing is resized around the method."""
    path = tmp_path / "face.png"
    Image.open(ALIGNED_LQ / "256.png").convert("RGB").resize((TINY_FACE_SIZE, TINY_FACE_SIZE), Image.BICUBIC).save(path)
    return path


def run(capsys, preset, inputs, out, *args):
    report = out.parent / f"{out.name}.jsonl"
    code, _o, err = run_cli(capsys, "run", *inputs, "-o", out, "--preset", preset, "--report", report, "-q",
                            "--batch-size", "3", *args)
    assert code == 0, err
    records, summary = read_report(report)
    return records, summary, err


def test_samples_differ_are_reproducible_and_the_kept_one_is_the_best(tiny_ipc_home, face, tmp_path, capsys,
                                                                      monkeypatch):
    from conftest import use_home

    use_home(monkeypatch, tiny_ipc_home)
    preset = tiny_ipc_home / "difface-tiny.yaml"
    samples = {}
    for name in ("a", "b"):
        records, _s, _e = run(capsys, preset, [face], tmp_path / name, "--aligned", "--samples", "2", "--save-samples")
        record = records[0]
        samples[name] = [np.asarray(Image.open(p)) for p in record["sample_files"]]
    assert len(samples["a"]) == 2 and all(np.array_equal(x, y) for x, y in zip(samples["a"], samples["b"]))
    assert not np.array_equal(samples["a"][0], samples["a"][1])
    rec_face = record["faces"][0]
    scores = [s["identity"]["vs_input"] for s in rec_face["samples"]]
    assert rec_face["kept"] == int(np.argmax(scores))
    assert rec_face["identity"] == rec_face["samples"][rec_face["kept"]]["identity"]
    assert rec_face["seed"] == rec_face["samples"][rec_face["kept"]]["seed"]
    # sample 0 is what a one-sample run restores
    single, _s, _e = run(capsys, preset, [face], tmp_path / "one", "--aligned", "--save-faces")
    assert np.array_equal(np.asarray(Image.open(single[0]["face_files"][0])), samples["a"][0])


def test_select_keeps_the_best_score_it_names_and_ties_keep_the_first():
    from types import SimpleNamespace

    from facerestore_cli.keeping import Sample, keep

    def sample(k, vs_input, vs_estimate):
        return Sample(k, 100 + k, f"image{k}", f"estimate{k}", None, {}, {"vs_input": vs_input, "vs_estimate": vs_estimate})

    samples = [sample(0, 0.5, 0.9), sample(1, 0.7, 0.2), sample(2, 0.7, 0.9)]
    for select, kept in (("identity", 1), ("estimate", 0)):
        face = SimpleNamespace(gate=None)
        keep(face, samples, select, None, "original")
        assert face.kept == kept and face.restored == f"image{kept}" and face.seed == 100 + kept
    face = SimpleNamespace(gate=None)
    keep(face, samples, "identity", 0.75, "estimate")
    assert face.gate == {"identity": 0.7, "threshold": 0.75, "action": "estimate"} and face.restored == "estimate1"


def test_min_identity_gates_as_asked(tiny_ipc_home, face, tmp_path, capsys, monkeypatch):
    """T = 1.0: no pixel of any photo changes (every face left out; PNG and JPEG alike, written as they came); T = −1
    gates nothing (the plain run's pixels); --fallback estimate pastes the method's estimate; report and summary.
    (One face per photo: --faces 0.)"""
    from conftest import use_home
    from facerestore_cli.device import resolve
    from facerestore_cli.networks import NetworkLoader
    from facerestore_cli.pixels import to_float, to_tensor
    from facerestore_cli.presets import load_file
    from facerestore_cli.weights.store import WeightStore

    use_home(monkeypatch, tiny_ipc_home)
    preset = tiny_ipc_home / "difface-tiny.yaml"
    photos = [PHOTOS / "old-portrait-00.jpg", PHOTOS / "whole-02.png"]
    one_face = (*DET, "--faces", "0")
    records, summary, _e = run(capsys, preset, photos, tmp_path / "all", *one_face, "--min-identity", "1.0")
    for photo, record in zip(photos, records):
        assert (tmp_path / "all" / photo.name).read_bytes() == photo.read_bytes()
        assert record["status"] == "restored" and record["faces"]
        assert all(f["gate"]["action"] == "original" and f["gate"]["threshold"] == 1.0 for f in record["faces"])
    assert summary["gated"] == sum(len(r["faces"]) for r in records) > 0

    plain, _s, _e = run(capsys, preset, [face], tmp_path / "plain", "--aligned")
    none, summary, _e = run(capsys, preset, [face], tmp_path / "none", "--aligned", "--min-identity", "-1")
    assert summary["gated"] == 0 and {f["gate"]["action"] for f in none[0]["faces"]} == {"pasted"}
    assert plain[0]["faces"][0]["gate"] is None
    assert np.array_equal(np.asarray(Image.open(tmp_path / "plain" / "face.png")),
                          np.asarray(Image.open(tmp_path / "none" / "face.png")))

    records, summary, _e = run(capsys, preset, [face], tmp_path / "est", "--aligned", "--min-identity", "1.0",
                               "--fallback", "estimate")
    assert records[0]["faces"][0]["gate"]["action"] == "estimate" and summary["gated"] == 1
    estimator = NetworkLoader(WeightStore(), resolve("cpu", "fp32")).load(load_file(preset).components["estimator"])
    estimate = estimator(to_tensor(to_float(np.asarray(Image.open(face))))).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    written = np.asarray(Image.open(tmp_path / "est" / "face.png")).astype(int)
    assert np.abs(written - np.rint(estimate * 255)).max() <= 1


def test_estimate_choices_are_refused_where_the_method_has_none(tiny_dr2_env, face, tmp_path, capsys):
    for args in (("--samples", "2", "--select", "estimate"), ("--min-identity", "0.5", "--fallback", "estimate")):
        code, _o, err = run_cli(capsys, "run", face, "-o", tmp_path / "o", "--preset", tiny_dr2_env, "--aligned", *args)
        assert code == 2 and "makes no estimate of its own" in err, err
    code, _o, err = run_cli(capsys, "run", face, "-o", tmp_path / "o", "--preset", tiny_dr2_env, "--aligned",
                            "--save-samples")
    assert code == 2 and "give --samples K > 1" in err
    assert not (tmp_path / "o").exists()


def test_keeping_settings_are_in_the_rerun_signature(tiny_env):
    """--samples, --select, --min-identity and --fallback shape the restoration: they are in the parameters the
    rerun signature and the records carry (each under its record name); --save-samples only adds files."""
    from facerestore_cli.options import RUN_SETTINGS
    from facerestore_cli.settings import RESTORATION

    shaping = {spec.flag: spec.record_as or spec.name for spec in RUN_SETTINGS if spec.shapes == RESTORATION}
    assert {flag: shaping.get(flag) for flag in ("--samples", "--select", "--min-identity", "--fallback")} == \
        {"--samples": "samples", "--select": "keep_by", "--min-identity": "min_identity", "--fallback": "fallback"}
    assert "--save-samples" not in shaping
