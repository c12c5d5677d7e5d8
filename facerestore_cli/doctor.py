"""`facerestore doctor`: what this machine can run and which weights are here."""

from __future__ import annotations

import os
import platform
import tempfile


def report(console) -> int:
    from rich.markup import escape
    from rich.table import Table

    from facerestore_cli import __version__
    from facerestore_cli.weights.registry import load_registry
    from facerestore_cli.weights.store import WeightStore, home, offline

    problems = 0
    console.print(f"facerestore {__version__} · python {platform.python_version()} · {platform.platform()}")
    try:
        import torch

        console.print(f"torch {torch.__version__} · {torch.get_num_threads()} CPU threads")
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                console.print(f"cuda:{i} {torch.cuda.get_device_name(i)} · {free / 2**30:.1f}/{total / 2**30:.1f} GiB free"
                              f" · bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
        else:
            console.print("CUDA: not available (runs on the CPU; expect minutes per face at full size)")
    except Exception as exc:  # doctor reports, never crashes
        problems += 1
        console.print(f"[red]torch import failed:[/red] {escape(str(exc))}")
    root = home()
    try:
        (root / "weights").mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root / "weights"):
            pass
        console.print(f"cache: {escape(str(root))} (writable){' · offline' if offline() else ''}")
    except OSError as exc:
        problems += 1
        console.print(f"[red]cache: {escape(str(root))} is not writable:[/red] {escape(str(exc.strerror))}")
    store = WeightStore()
    table = Table(title="weights")
    for col in ("id", "file", "status"):
        table.add_column(col)
    for wid, spec in load_registry().items():
        table.add_row(wid, spec.file, store.status(wid))
    console.print(table)
    if os.environ.get("FACERESTORE_HOME"):
        console.print("FACERESTORE_HOME is set")
    return 1 if problems else 0
