"""Shared parts every method composes: loading a network from the weights registry, the β schedule."""

from __future__ import annotations

from typing import Any

from facerestore_cli.errors import UsageError, WeightsError


def load_network(store, component: dict[str, Any], compute):
    """Build the component's architecture (registry config, overridden by the preset's `config`) and load its
    weights strictly. Returns the module in eval mode, frozen, on the compute device."""
    from facerestore_cli.archs import build_arch
    from facerestore_cli.archs.layout import compare_layouts, layout_of

    weight_id = component["weights"]
    spec = store.spec(weight_id)
    config = {**(spec.config or {}), **component.get("config", {})}
    model = build_arch(component.get("arch", spec.arch), config)
    state = store.load_state_dict(weight_id)
    diff = compare_layouts(layout_of(model), layout_of(state))
    if not diff.ok:
        raise WeightsError(f"{store.path(weight_id)} does not fit the {spec.arch} network of this preset: {diff.summary()}",
                           hint=f"re-fetch it (facerestore weights fetch {weight_id}) or check the preset's config")
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False).to(compute.device)


def diffusion_schedule(schedule: dict[str, Any]):
    """ᾱ_t for the preset's schedule (float64, CPU)."""
    from facerestore_cli.diffusion.schedule import alphas_cumprod, linear_betas

    kind = schedule.get("kind", "linear")
    if kind != "linear":
        raise UsageError(f"unsupported schedule kind '{kind}'", hint="supported: linear")
    betas = linear_betas(int(schedule.get("num_timesteps", 1000)),
                         float(schedule.get("beta_start", 1e-4)), float(schedule.get("beta_end", 0.02)))
    return alphas_cumprod(betas)
