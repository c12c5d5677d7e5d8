"""Training you can trust (#26), on trained runs (trained_runs.py: every target, tiny configs, a few tens of steps on
the shared crops, validated on faces held apart): what `train export` wrote is the run's EMA, and it beats the
initial network on the held-apart faces by a stated margin; and degrade → train → export → run restores held-apart
faces measurably better than the untrained network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import use_home
from trained_runs import RUNS, metrics

# how far below the initial network's validation loss the exported one must be, per target. From scratch an
# ε-network's L1 starts near E|ε| ≈ 0.8 and halves within ten steps here; a SwinIR's L1 falls a third in twenty; the
# mask branch moves its loss least: it only chooses where the guidance acts (README "What a tiny run's curves look
# like").
MARGIN = {"diffbfr-irm1": 0.3, "diffbfr-irm2": 0.3, "diffbfr-tem": 0.3, "difface-estimator": 0.2, "ipc": 0.25,
          "ipc-prior": 0.3, "ipc-mask": 0.05}


def resumed_trainer(run: Path):
    """A Trainer on RUN at its last checkpoint, built from the options RUN/train.json holds (as --resume builds it)."""
    from facerestore_cli.cli_train import OPTIONS_FILE, train_config
    from facerestore_cli.training import checkpoints
    from facerestore_cli.training.trainer import Trainer

    options = json.loads((run / OPTIONS_FILE).read_text())
    target = checkpoints.load(checkpoints.latest(run))["target"]
    return Trainer(train_config(target, run, options, resume=True), lambda line: None)


@pytest.mark.parametrize("target", list(RUNS))
def test_the_exported_network_is_the_runs_ema_and_beats_the_initial_one(trained_home, target, monkeypatch):
    """The exported file is the EMA of the run's last checkpoint, tensor for tensor (not its trained weights: the EMA
    decay is 0.9), and, loaded as `run` loads it, it scores below the initial network (logged at step 0) on the
    held-apart validation faces by the target's margin."""
    from facerestore_cli.device import Compute
    from facerestore_cli.networks import NetworkLoader
    from facerestore_cli.presets import Component
    from facerestore_cli.training import checkpoints
    from facerestore_cli.training.targets import TARGETS
    from facerestore_cli.weights.store import WeightStore

    use_home(monkeypatch, trained_home)
    run = trained_home.parent / target
    state = checkpoints.load(checkpoints.latest(run))
    store = WeightStore()
    written = torch.load(store.path(TARGETS[target].weight_id), weights_only=True)
    assert state["step"] == RUNS[target][1] and written.keys() == state["ema"].keys()
    assert all(torch.equal(written[k], state["ema"][k]) for k in written)
    assert not all(torch.equal(written[k], state["model"][k]) for k in written)
    first = next(line for line in metrics(run) if "val_loss" in line)
    assert first["step"] == 0
    network = NetworkLoader(store, Compute(torch.device("cpu"), "fp32")).load(Component(TARGETS[target].weight_id))
    exported = resumed_trainer(run).validation_loss(network.module)
    assert exported < (1 - MARGIN[target]) * first["val_loss"], (exported, first["val_loss"])


def test_degrade_train_export_run_restores_held_apart_faces_better_than_the_untrained_network(trained_home, tmp_path,
                                                                                              monkeypatch):
    """`degrade` makes LQ test faces of the held-apart faces (DifFace's Eq. 17, the model difface-estimator trains on);
    the trained home's difface-estimator (trained on the other crops, exported) restores them through `run` with a
    copy of the tiny difface preset naming estimator-swinir, and `eval` measures PSNR and LPIPS against the clean
    faces: better than the same preset with the run's initial network imported in its place. The chain starts at
    t = 20 (`--start-t 20 --steps 1`): the tiny prior UNet is random, and from the preset's t = 400 it spoils any
    estimate (about 9 dB with either estimator)."""
    import shutil

    import yaml

    from archival_helpers import invoke
    from conftest import ALIGNED_HQ
    from facerestore_cli.archs import build_arch

    use_home(monkeypatch, trained_home)
    code, _o, err = invoke("degrade", ALIGNED_HQ, "-o", tmp_path / "lq", "--model", "difface", "--seed", "7")
    assert code == 0, err
    preset = yaml.safe_load((trained_home / "difface-tiny.yaml").read_text())
    preset["components"]["estimator"]["weights"] = "estimator-swinir"  # its tiny config: the one trained
    (tmp_path / "difface-trained.yaml").write_text(yaml.safe_dump(preset))
    config, _steps, _own = RUNS["difface-estimator"]
    assert preset["components"]["estimator"]["config"] == config

    untrained = tmp_path / "untrained-home"
    shutil.copytree(trained_home, untrained)
    (untrained / "weights" / "estimator_swinir_512.pth").unlink()
    torch.manual_seed(0)  # what `train difface-estimator --seed 0` starts from
    torch.save(build_arch("swinir_difface", config).state_dict(), tmp_path / "initial.pth")
    scores = {}
    for name, home in (("trained", trained_home), ("untrained", untrained)):
        use_home(monkeypatch, home)
        if name == "untrained":
            code, _o, err = invoke("weights", "import", "estimator-swinir", tmp_path / "initial.pth", "--preset",
                                   tmp_path / "difface-trained.yaml")
            assert code == 0, err
        code, _o, err = invoke("run", tmp_path / "lq", "-o", tmp_path / name, "--preset",
                               tmp_path / "difface-trained.yaml", "--aligned", "--start-t", "20", "--steps", "1", "-q")
        assert code == 0, err
        code, out, err = invoke("eval", tmp_path / name, "--gt", ALIGNED_HQ, "--metrics", "psnr,lpips", "--json", "-q",
                                "--device", "cpu")
        assert code == 0, err
        row = json.loads(out)["rows"][0]
        assert row["pairs"] == 5
        scores[name] = row["metrics"]
    assert scores["trained"]["psnr"] > scores["untrained"]["psnr"] + 3.0, scores  # 17.3 against 12.2 dB here
    assert scores["trained"]["lpips"] < 0.6 * scores["untrained"]["lpips"], scores  # 0.070 against 0.212
