"""The trained networks a target trains against, frozen: diffbfr-irm2's IRM(-1), whose samples are its condition
(conditions.py); ipc-prior's IPC with --condition ipc; ipc-mask's IPC, prior, ArcFace and LPIPS. The ipc parts are
those the ipc-guided preset given with --preset (default the built-in) runs with, so the mask branch learns for the
networks it will steer. What each is (weight id and sha256) goes into the run's settings: a resume must find them
again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from facerestore_cli.archs import architecture, build_arch
from facerestore_cli.device import Compute
from facerestore_cli.diffusion.schedule import preset_alphas_cumprod
from facerestore_cli.errors import UsageError
from facerestore_cli.files import sha256_file
from facerestore_cli.methods import ipc_guided
from facerestore_cli.methods.diffused_estimator import prior_condition
from facerestore_cli.networks import Network, NetworkLoader
from facerestore_cli.presets import Component, load_builtin, load_file
from facerestore_cli.training import checkpoints
from facerestore_cli.training.conditions import ConditionCache
from facerestore_cli.weights.store import WeightStore


# -- diffbfr-irm2: IRM(-1) samples --------------------------------------------------------------------------------

@dataclass
class Irm1Conditions:
    network: Network
    abar: torch.Tensor
    cache: ConditionCache


def irm1_conditions(cfg, device: torch.device, settings: dict) -> Irm1Conditions | None:
    """diffbfr-irm2's condition: IRM(-1) samples (Eq. 9) from --irm1 (a RUN folder, or a weight id, default
    diffbfr-irm1), or with --condition lq the LQ face at 128 (a stand-in: None). Sets settings["condition"]."""
    store = WeightStore()
    source = cfg.irm1 or "diffbfr-irm1"
    from_run = Path(source).is_dir()
    available = from_run or store.is_present(source)
    choice = cfg.condition or ("irm1" if available else None)
    if choice is None:
        raise UsageError("train diffbfr-irm2 conditions on IRM(-1) samples (DiffBFR Eq. 9), and no IRM(-1) "
                         "weights were found (diffbfr-irm1 is not in the weights cache)",
                         hint="train and export diffbfr-irm1 first, or pass --irm1 RUN_FOLDER or --irm1 ID; "
                              "--condition lq trains on the LQ face at 128 instead (a stand-in)")
    settings["condition"] = choice
    if choice == "lq":
        return None
    if not available:
        raise UsageError(f"--irm1 {source}: neither an IRM(-1) run folder nor weights in the cache",
                         hint="facerestore weights list, or point --irm1 at a train diffbfr-irm1 RUN folder")
    network, sha = _load_irm1(source, from_run, store, device)
    diffbfr = load_builtin("diffbfr")
    steps = cfg.irm1_steps or int(diffbfr.parameters["irm1_steps"])
    settings["condition"] = f"irm1 {sha[:16]}, {steps} steps"
    return Irm1Conditions(network, preset_alphas_cumprod(diffbfr.schedule("irm1")), ConditionCache(cfg.run, sha, steps))


def _load_irm1(source: str, from_run: bool, store, device) -> tuple[Network, str]:
    """IRM(-1) as a Network in fp32 on this device, and its weights' sha256 (a run's: its newest checkpoint's)."""
    compute = Compute(device, "fp32")
    if not from_run:
        store.require([source])
        return NetworkLoader(store, compute).load(Component(source)), store.recorded_sha256(source)
    found = checkpoints.latest(Path(source))
    if found is None:
        raise UsageError(f"--irm1 {source} holds no checkpoint", hint="train diffbfr-irm1 into it first")
    state = checkpoints.load(found)
    if state["target"] != "diffbfr-irm1":
        raise UsageError(f"--irm1 {source} is a {state['target']} run, not diffbfr-irm1")
    config, arch = state["settings"]["config"], architecture("unet")
    module = build_arch("unet", config)
    module.load_state_dict(state["ema"])
    module = module.eval().requires_grad_(False).to(device)
    network = Network(str(found), config, module, compute, arch.input_size(config), arch.output(config),
                      arch.condition_channels(config))
    return network, sha256_file(found).hexdigest()


# -- ipc-prior (--condition ipc) and ipc-mask: the ipc-guided preset's parts --------------------------------------

@dataclass
class IpcParts:
    """What ipc-mask trains against (ipc-prior --condition ipc needs `ipc` only): g_φ, the prior with its ᾱ and
    condition ("lq": x, "ipc": g_φ(x)), ArcFace, LPIPS (AlexNet, v0.1), the guidance scale s and T′."""

    ipc: Network
    prior: Network | None = None
    abar: torch.Tensor | None = None
    prior_condition: str = "lq"
    arcface: torch.nn.Module | None = None
    lpips: torch.nn.Module | None = None
    scale: float = 0.0
    start_t: int = 0

    def condition(self, x01: torch.Tensor, estimate01: torch.Tensor) -> torch.Tensor | None:
        """The prior's condition in [−1, 1], as ipc-guided's run feeds it."""
        kind = ipc_guided.PRIOR_CONDITION[self.prior_condition] if self.prior.condition_channels else None
        return prior_condition(kind, x01, estimate01)


def ipc_parts(cfg, device: torch.device, settings: dict) -> IpcParts | None:
    """The frozen networks cfg.target needs from the ipc-guided preset (--preset), None when it needs none; records
    each one's weight id and sha256 in settings["frozen"]."""
    needs_ipc = cfg.target == "ipc-mask" or (cfg.target == "ipc-prior" and cfg.condition == "ipc")
    if not needs_ipc:
        return None
    preset = load_file(cfg.preset) if cfg.preset else load_builtin("ipc-guided")
    if preset.method != "ipc_guided":
        raise UsageError(f"--preset {cfg.preset} is a {preset.method} preset, not ipc-guided")
    params = ipc_guided.Params.resolve(preset)
    chosen = ipc_guided.configure(preset, params)
    store, compute = WeightStore(), Compute(device, "fp32")
    roles = [chosen.ipc] + ([chosen.prior, "arcface"] if cfg.target == "ipc-mask" else [])
    store.require([preset.components[role].weights for role in roles])
    loader = NetworkLoader(store, compute)
    loaded = {role: loader.load(preset.components[role]) for role in roles}
    settings["frozen"] = {role: f"{preset.components[role].weights} {store.recorded_sha256(preset.components[role].weights)[:16]}"
                          for role in roles}
    parts = IpcParts(loaded[chosen.ipc])
    if cfg.target == "ipc-mask":
        from facerestore_cli.evaluation.networks import LPIPS_WEIGHTS, lpips_model

        store.require(list(LPIPS_WEIGHTS["alex"]))
        parts.prior, parts.arcface = loaded[chosen.prior], loaded["arcface"].module
        parts.abar = preset_alphas_cumprod(preset.schedule(chosen.prior))
        parts.prior_condition, parts.scale, parts.start_t = params.prior_condition, params.guidance_scale, params.start_t
        parts.lpips = lpips_model(loader, "alex")
        settings["frozen"].update(guidance_scale=parts.scale, start_t=parts.start_t, prior_condition=parts.prior_condition)
    return parts
