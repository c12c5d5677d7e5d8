"""DR2 (Wang et al., CVPR 2023): diffusion-based robust degradation remover + enhancement module (DR2E), §3.3–3.4;
the sampling core is in degradation_remover.py."""

from __future__ import annotations

from dataclasses import dataclass

from facerestore_cli.errors import UsageError
from facerestore_cli.methods.params import MethodParams, knob


GIVES_ESTIMATE = False  # DR2's output is its own restoration: no e(y) or g_φ(x) beside it

@dataclass(frozen=True)
class Params(MethodParams):
    refused = {
        "--steps": "DR2 runs ω − τ + 1 network evaluations, set by --dr2-n and --dr2-tau",
        "--eta": "DR2 samples with DDPM ancestral steps (no η)",
        "--start-t": "DR2 starts at ω = min(τ + f(N), 99), set by --dr2-n and --dr2-tau",
    }

    dr2_n: int = knob("--dr2-n", "Low-pass factor N of Φ_N: bigger = cleaner, less faithful (4 mild, 8 medium, 16 "
                                 "severe).", min=1)
    dr2_tau: int = knob("--dr2-tau", "Output step τ of the 100-step respaced chain: bigger = cleaner, less faithful "
                                     "(22 mild, 35 medium or severe).", min=0)
    enhancer: str = knob("--dr2-enhancer", "Enhancement module; none writes DR2's coarse output, upsampled.",
                         choices=("sparnethd", "none"), old=("--enhancer",))
    prior: str = knob("--dr2-prior", "Diffusion prior: the authors' DR2_FFHQ.pkl, or P2-weighting's ffhq_p2.pt.",
                      shown="dr2|p2")

    def check(self, preset) -> None:
        respace = preset.schedule("prior").respace
        if respace is None:
            raise UsageError(f"preset {preset.source}: DR2's prior schedule needs `respace:` (the official 100)")
        last = respace - 2
        if self.dr2_tau > last:
            raise UsageError(f"--dr2-tau must be in [0, {last}], got {self.dr2_tau}")
        choices = prior_choices(preset)
        if self.prior not in choices:
            raise UsageError(f"--dr2-prior must be one of {', '.join(choices)}, got '{self.prior}'")


def prior_choices(preset) -> dict[str, str]:
    """--dr2-prior value → weight id, from the preset's prior component (`choices`, else its one file)."""
    prior = preset.components["prior"]
    return dict(prior.choices or {"default": prior.weights})


def required_weights(preset, params: Params) -> list[str]:
    ids = [prior_choices(preset)[params.prior]]
    if params.enhancer == "sparnethd":
        ids.append(preset.components["enhancer"].weights)
    return ids


def build(preset, params: Params, networks):
    import dataclasses

    from facerestore_cli.diffusion.schedule import preset_alphas_cumprod, timesteps
    from facerestore_cli.methods.degradation_remover import DegradationRemover

    schedule = preset.schedule("prior")
    abar = preset_alphas_cumprod(schedule)
    respaced = timesteps(len(abar), schedule.respace, "rounded")[::-1]
    prior = networks.load(dataclasses.replace(preset.components["prior"], weights=prior_choices(preset)[params.prior]))
    enhancer = networks.load(preset.components["enhancer"]) if params.enhancer == "sparnethd" else None
    return DegradationRemover(prior, enhancer, abar, respaced, params, preset.face_size)
