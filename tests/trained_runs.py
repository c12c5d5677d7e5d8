"""Every `train` target trained briefly on tiny configs (#26): on the shared crops (ALIGNED_LQ), validated on faces held
apart (ALIGNED_HQ), each run exported into one home, in the order their frozen parts need (IRM(-2) on IRM(-1)'s
samples, ipc-mask against the trained IPC and prior). The runs lie beside the home: ROOT/<target>/."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from archival_helpers import invoke
from conftest import (ALIGNED_HQ, ALIGNED_LQ, TINY_IPC_MASK, TINY_IPC_PRIOR, TINY_IRM1, TINY_IRM2, TINY_SWINIR_AT_128,
                      home_environment)
from tiny_configs import TINY_UNET_DIFFACE

# target → (tiny config, steps, its own options; "{root}" is the runs' folder, "{home}" the home). A 128-px step of
# a tiny UNet takes about a second here, an ipc-mask step three (ArcFace's gradient through the guidance): those
# targets take fewer steps at a higher rate.
RUNS = {
    "diffbfr-irm1": (TINY_IRM1, 20, ("--sample-every", "20", "--tensorboard")),
    "diffbfr-irm2": (TINY_IRM2, 6, ("--irm1", "{root}/diffbfr-irm1", "--irm1-steps", "2", "--lr", "2e-3")),
    "diffbfr-tem": (TINY_UNET_DIFFACE, 20, ()),  # at 32 px: no test runs the exported TEM
    "difface-estimator": (TINY_SWINIR_AT_128, 20, ()),
    "ipc": (TINY_SWINIR_AT_128, 6, ("--lr", "2e-3")),
    "ipc-prior": (TINY_IPC_PRIOR, 6, ("--lr", "2e-3", "--log-every", "3")),
    "ipc-mask": (TINY_IPC_MASK, 4, ("--preset", "{home}/ipc-tiny.yaml", "--lr", "5e-3")),
}
COMMON = ("--data", ALIGNED_LQ, "--val-data", ALIGNED_HQ, "--workers", "0", "--warmup", "5", "--lr", "1e-3",
          "--device", "cpu", "--batch-size", "2", "--log-every", "5", "--sample-every", "1000", "--ema-decay", "0.9")


def train_and_export(home: Path) -> Path:
    """Train every target into home.parent/<target> and export it into home (what both commands said: in
    home.parent/<target>.log); returns home.parent."""
    root = home.parent
    with home_environment(home):
        for target, (config, steps, own) in RUNS.items():
            config_file = root / f"{target}.yaml"
            config_file.write_text(yaml.safe_dump(config))
            own = [str(arg).format(root=root, home=home) for arg in own]
            code, _o, err = invoke("train", target, "-o", root / target, "--model-config", config_file, *COMMON,
                                   "--steps", str(steps), "--checkpoint-every", str(steps), *own)
            assert code == 0, f"{target}: {err}"
            code, _o, exported = invoke("train", "export", root / target)
            assert code == 0, f"{target}: {exported}"
            (root / f"{target}.log").write_text(err + exported)
    return root


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
