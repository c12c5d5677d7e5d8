"""DifFace (Yue & Loy, TPAMI 2024): diffused estimator + partial reverse diffusion, Algorithm 1 of the paper, with
DDIM as the official inference code runs it (see diffused_estimator.py)."""

from __future__ import annotations

from dataclasses import dataclass

from facerestore_cli.errors import UsageError
from facerestore_cli.methods.params import MethodParams, knob


@dataclass(frozen=True)
class Params(MethodParams):
    steps: int = knob("--steps", "Network evaluations of the diffusion loop (100 = the official respacing below "
                                 "--start-t; 20 is nearly as good, Table IX).", min=1)
    eta: float = knob("--eta", "DDIM η of Eq. 6: 0 deterministic, 1 DDPM (§III); official 0.5 (Table II).",
                      min=0.0, max=1.0)
    start_t: int = knob("--start-t", "Start timestep N: higher = more realism, less fidelity (400–450, Fig. 6/7).",
                        min=1)

    def check(self, preset) -> None:
        timesteps = preset.schedule("prior").num_timesteps
        if self.start_t >= timesteps:
            raise UsageError(f"--start-t must be in [1, {timesteps - 1}], got {self.start_t}")
        if self.steps > self.start_t:
            raise UsageError(f"--steps must be in [1, --start-t={self.start_t}], got {self.steps}")


def required_weights(preset, params: Params) -> list[str]:
    return [preset.components["estimator"].weights, preset.components["prior"].weights]


def build(preset, params: Params, networks):
    from facerestore_cli.diffusion.schedule import preset_alphas_cumprod
    from facerestore_cli.methods.diffused_estimator import DiffusedEstimator

    return DiffusedEstimator(networks.load(preset.components["estimator"]), networks.load(preset.components["prior"]),
                             preset_alphas_cumprod(preset.schedule("prior")), params, preset.face_size)
