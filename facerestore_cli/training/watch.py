"""What a training run shows while it runs: RUN/metrics.jsonl (one JSON line per log), RUN/loss.png (the training and
validation losses and the learning rate so far, matplotlib, redrawn at each log) and, with --tensorboard,
RUN/tensorboard/ (the same scalars and each validation grid, torch.utils.tensorboard). A resume trims the lines logged
after its checkpoint and goes on drawing from the lines kept, so the curve continues across resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facerestore_cli.errors import UsageError
from facerestore_cli.files import atomic_open

SCALARS = ("loss", "lr", "it_per_s", "val_loss", "val_psnr", "val_lpips")


class Watch:
    def __init__(self, run: Path, tensorboard: bool):
        self.run, self.writer = run, None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise UsageError(f"--tensorboard needs the tensorboard package ({exc})",
                                 hint="pip install tensorboard (basicsr's tb-nightly provides it)") from None
            self.writer = SummaryWriter(log_dir=str(run / "tensorboard"))

    @property
    def metrics(self) -> Path:
        return self.run / "metrics.jsonl"

    def trim(self, step: int) -> None:
        """A resume continues from its checkpoint: lines logged after it (before a crash) are dropped."""
        if not self.metrics.exists():
            return
        kept = [line for line in self.metrics.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        with atomic_open(self.metrics, "w") as handle:
            handle.write("".join(line + "\n" for line in kept))

    def log(self, record: dict) -> None:
        """One log: a metrics line, the scalars to TensorBoard, loss.png redrawn."""
        self.run.mkdir(parents=True, exist_ok=True)
        with open(self.metrics, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name in SCALARS:
                if record.get(name) is not None:
                    self.writer.add_scalar(f"train/{name}", record[name], record["step"])
            for name, value in record.get("terms", {}).items():
                self.writer.add_scalar(f"train/{name}", value, record["step"])
            self.writer.flush()
        self.draw()

    def image(self, grid_hwc: np.ndarray, step: int) -> None:
        """A validation grid (uint8 H×W×3) to TensorBoard."""
        if self.writer is not None:
            self.writer.add_image("validation", grid_hwc, step, dataformats="HWC")
            self.writer.flush()

    def draw(self) -> Path:
        """RUN/loss.png from every line of metrics.jsonl: the training loss and the EMA network's validation loss (log
        scale) over steps, the learning rate beside."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        records = list(map(json.loads, filter(str.strip, self.metrics.read_text().splitlines())))
        lines = [r for r in records if "loss" in r]
        if not lines:  # a validation score before the first log
            return self.run / "loss.png"
        validated = [r for r in records if r.get("val_loss") is not None]
        steps = [r["step"] for r in lines]
        figure = Figure(figsize=(8, 3.2), dpi=100, layout="constrained")
        loss, lr = figure.subplots(1, 2)
        loss.plot(steps, [r["loss"] for r in lines], marker="." if len(lines) < 50 else None, label="training")
        loss.plot([r["step"] for r in validated], [r["val_loss"] for r in validated], marker="o", label="validation")
        loss.set(xlabel="step", ylabel="loss", title=f"loss (mean of each log's steps), step {steps[-1]}")
        loss.legend()
        if all(r["loss"] > 0 for r in lines) and all(r["val_loss"] > 0 for r in validated):
            loss.set_yscale("log")
        lr.plot(steps, [r["lr"] for r in lines], color="tab:orange")
        lr.set(xlabel="step", ylabel="learning rate", title="learning rate")
        path = self.run / "loss.png"
        with atomic_open(path, "wb") as handle:
            figure.savefig(handle, format="png")
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
