"""Which presets can run now with the weights in the cache, and what the others miss (`methods`, `doctor`, and the
detector `run` suggests when the default one is missing)."""

from __future__ import annotations

from dataclasses import dataclass, field

from facerestore_cli import presets
from facerestore_cli.faces import DEFAULT_DETECTOR, DETECTOR_WEIGHTS
from facerestore_cli.methods import method_for


def installed_detector(store, preferred: str = DEFAULT_DETECTOR) -> str | None:
    """`preferred` when its weights are in the cache, else another installed detector, else None."""
    names = [preferred] + [name for name in DETECTOR_WEIGHTS if name != preferred]
    return next((name for name in names if store.is_present(DETECTOR_WEIGHTS[name])), None)


@dataclass
class Verdict:
    preset: str
    title: str
    ready: bool
    detector: str | None  # what whole photos would be detected with: the default when present, else one installed
    missing: list[str]  # weight ids a run at the preset's defaults needs and the cache lacks
    components: list[dict]  # role, weights, status, optional, provenance
    defaults: dict
    runs_as: str | None = None  # what a run at the defaults would use, for methods that choose (ipc-guided)
    unfit: dict[str, str] = field(default_factory=dict)  # weight id present → how it does not fit its network

    @property
    def summary(self) -> str:
        if not self.ready:
            return "not ready: " + "; ".join(
                (["missing " + ", ".join(self.missing)] if self.missing else [])
                + [f"{wid} {problem}" for wid, problem in self.unfit.items()])
        if self.detector != DEFAULT_DETECTOR:
            return (f"ready with --detector {self.detector} "
                    f"({DETECTOR_WEIGHTS[DEFAULT_DETECTOR]}, the default detector, is missing)")
        return "ready"

    def as_record(self) -> dict:
        return {"preset": self.preset, "title": self.title, "ready": self.ready, "status": self.summary,
                "detector": self.detector, "missing": self.missing, "components": self.components,
                "defaults": self.defaults, "runs_as": self.runs_as, "unfit": self.unfit}


def verdict(preset, store, checked: dict | None = None) -> Verdict:
    """Whether a run at the preset's defaults can start: every weight file it needs present, and every file present
    fitting the network the preset builds from it (checked: layout checks already made, by weight id and config)."""
    method = method_for(preset)
    params = method.Params.resolve(preset)
    needed = method.required_weights(preset, params)
    missing = [wid for wid in dict.fromkeys(needed) if not store.is_present(wid)]
    detector = installed_detector(store)
    if detector is None:
        missing.append(DETECTOR_WEIGHTS[DEFAULT_DETECTOR])
    checked = {} if checked is None else checked
    unfit = {}
    for component in preset.components.values():
        for wid in sorted(component.weight_ids()):
            if store.is_present(wid):
                key = component.network_key(wid)
                if key not in checked:
                    checked[key] = store.layout_problem(wid, component.config)
                if checked[key]:
                    unfit[wid] = checked[key]
    components = [{"role": role, "weights": c.weights,
                   "status": "does not fit its network" if c.weights in unfit else store.status(c.weights),
                   "optional": c.optional, "provenance": preset.provenance.get(role)}
                  for role, c in preset.components.items()]
    describe = getattr(method.module, "describe", None)
    return Verdict(preset.name, preset.title, not missing and not unfit, detector, missing, components,
                   params.as_record(), describe(preset, params) if describe else None, unfit)


def builtin_verdicts(store) -> list[Verdict]:
    checked: dict = {}
    return [verdict(presets.load_builtin(name), store, checked) for name in presets.builtin_names()]
