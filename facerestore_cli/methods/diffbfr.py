"""DiffBFR (Qiu et al. 2023): a cascaded Identity Restoration Module (a conditional DDPM at 128 from pure noise,
then a conditional DDPM at 512 started truncated at N1 from the upsampled result) and a Texture Enhancement Module
(an unconditional DDPM started truncated at N2 from the IRM output), Algorithm 1; the sampling core is in
cascade.py. Fewer steps than a stage's chain respace it (schedule.timesteps(..., "rounded"))."""

from __future__ import annotations

from dataclasses import dataclass

from facerestore_cli.errors import UsageError
from facerestore_cli.methods.params import MethodParams, knob


@dataclass(frozen=True)
class Params(MethodParams):
    refused = {
        "--steps": "DiffBFR's stages take --irm1-steps, --irm2-steps and --tem-steps",
        "--eta": "DiffBFR samples with ancestral DDPM steps, σ² = β (Algorithm 1: no η)",
        "--start-t": "DiffBFR's truncated stages start at --irm2-start-t (N1) and --tem-start-t (N2)",
    }

    irm1_steps: int = knob("--irm1-steps", "IRM(-1) evaluations from pure noise (2000 = the paper's whole chain).",
                           min=1)
    irm2_start: int = knob("--irm2-start-t", "N1: the step IRM(-2) starts from, truncated (paper 1000, Table 3).",
                           min=1, old=("--irm2-start",))
    irm2_steps: int = knob("--irm2-steps", "IRM(-2) evaluations from N1 (N1 = every step).", min=1)
    tem_start: int = knob("--tem-start-t", "N2: the step TEM starts from (paper 100, Table 4).", min=1,
                          old=("--tem-start",))
    tem_steps: int = knob("--tem-steps", "TEM evaluations from N2 (N2 = every step).", min=1)

    def check(self, preset) -> None:
        irm, tem = preset.schedule("irm1").num_timesteps, preset.schedule("tem").num_timesteps
        for name, top in (("irm1_steps", irm), ("irm2_start", irm), ("irm2_steps", self.irm2_start),
                          ("tem_start", tem), ("tem_steps", self.tem_start)):
            if getattr(self, name) > top:
                raise UsageError(f"{self.flag(name)} must be in [1, {top}], got {getattr(self, name)}")


def required_weights(preset, params: Params) -> list[str]:
    return [preset.components[part].weights for part in ("irm1", "irm2", "tem")]


def build(preset, params: Params, networks):
    from facerestore_cli.diffusion.schedule import preset_alphas_cumprod
    from facerestore_cli.methods.cascade import DiffBFRCascade

    parts = preset.components
    return DiffBFRCascade(networks.load(parts["irm1"]), networks.load(parts["irm2"]), networks.load(parts["tem"]),
                          preset_alphas_cumprod(preset.schedule("irm1")), preset_alphas_cumprod(preset.schedule("tem")),
                          params, preset.face_size)
