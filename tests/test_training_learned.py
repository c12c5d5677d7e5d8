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
# ε-network's L1 starts near E|ε| ≈ 0.8 and halves in ten steps here; a SwinIR's L1 falls a third in twenty; the mask
# branch moves its loss least: it only chooses where the guidance acts (README "What a tiny run's curves look like").
MARGIN = {"diffbfr-irm1": 0.3, "diffbfr-irm2": 0.3, "diffbfr-tem": 0.3, "difface-estimator": 0.2, "ipc": 0.3,
          "ipc-prior": 0.3, "ipc-mask": 0.02}


def resumed_trainer(run: Path):
    """A Trainer on RUN at its last checkpoint, built from the options RUN/train.json holds (as --resume builds it)."""
    from facerestore_cli.cli_train import OPTIONS_FILE, PASSED
    from facerestore_cli.training import checkpoints
    from facerestore_cli.training.trainer import TrainConfig, Trainer

    options = json.loads((run / OPTIONS_FILE).read_text())
    target = checkpoints.load(checkpoints.latest(run))["target"]
    paths = {name: None if options[name] is None else Path(options[name]) for name in ("preset", "val_data")}
    cfg = TrainConfig(target, Path(options["data"]), run, **{name: options[name] for name in PASSED}, **paths,
                      model_config=options["model_config"], resume=True)
    return Trainer(cfg, lambda line: None)


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
