"""`facerestore doctor`: what this machine can run, which weights are here, and a verdict (exit 1 when no preset
can run, so a deployment script can check it)."""

from __future__ import annotations

import json
import os
import platform
import tempfile

from facerestore_cli import __version__
from facerestore_cli.readiness import builtin_verdicts
from facerestore_cli.weights.registry import load_registry
from facerestore_cli.weights.store import WeightStore, home, offline_from_environment


def findings() -> dict:
    """Everything doctor knows, as data."""
    facts: dict = {"facerestore": __version__, "python": platform.python_version(), "platform": platform.platform(),
                   "problems": []}
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["cpu_threads"] = torch.get_num_threads()
        facts["cuda"] = [{"device": f"cuda:{i}", "name": torch.cuda.get_device_name(i),
                          "free_gib": round(torch.cuda.mem_get_info(i)[0] / 2**30, 1),
                          "total_gib": round(torch.cuda.mem_get_info(i)[1] / 2**30, 1),
                          "bf16": torch.cuda.is_bf16_supported()}
                         for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception as exc:  # doctor reports, never crashes
        facts["problems"].append(f"torch import failed: {exc}")
    root = home()
    facts["cache"] = {"path": str(root), "offline": offline_from_environment(),
                      "home_from_env": bool(os.environ.get("FACERESTORE_HOME"))}
    try:
        (root / "weights").mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root / "weights"):
            facts["cache"]["writable"] = True
    except OSError as exc:
        facts["cache"]["writable"] = False
        facts["problems"].append(f"cache {root} is not writable: {exc.strerror}")
    store = WeightStore()
    facts["weights"] = {wid: store.status(wid) for wid in load_registry()}
    facts["presets"] = [v.as_record() for v in builtin_verdicts(store)]
    ready = [p["preset"] for p in facts["presets"] if p["ready"]]
    facts["verdict"] = (f"ready: {', '.join(ready)} can run" if ready else
                        "not ready: no preset can run until its weights are fetched (see `facerestore methods`)")
    return facts


def report(console, as_json: bool = False) -> int:
    facts = findings()
    if as_json:
        print(json.dumps(facts, ensure_ascii=False))
    else:
        _show(console, facts)
    return 0 if any(p["ready"] for p in facts["presets"]) and not facts["problems"] else 1


def _show(console, facts: dict) -> None:
    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    say(f"facerestore {facts['facerestore']} · python {facts['python']} · {facts['platform']}")
    if "torch" in facts:
        say(f"torch {facts['torch']} · {facts['cpu_threads']} CPU threads")
        for gpu in facts["cuda"]:
            say(f"{gpu['device']} {gpu['name']} · {gpu['free_gib']}/{gpu['total_gib']} GiB free · "
                f"bf16 {'yes' if gpu['bf16'] else 'no'}")
        if not facts["cuda"]:
            say("CUDA: not available (runs on the CPU; expect minutes per face at full size)")
    cache = facts["cache"]
    say(f"cache: {cache['path']} ({'writable' if cache.get('writable') else 'NOT writable'})"
        + (" · offline" if cache["offline"] else "") + (" · FACERESTORE_HOME is set" if cache["home_from_env"] else ""))
    width = max(len(wid) for wid in facts["weights"])
    for wid, status in facts["weights"].items():
        say(f"  {wid:<{width}}  {status}")
    for preset in facts["presets"]:
        say(f"{preset['preset']}: {preset['status']}")
    for problem in facts["problems"]:
        say(f"problem: {problem}")
    say(f"verdict: {facts['verdict']}")
