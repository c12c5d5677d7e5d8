"""`facerestore weights list|fetch|verify|import|path`: the CLI face of the weights registry and cache."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from facerestore_cli.errors import UsageError, WeightsError

weights_app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


def _console(stderr: bool = True):
    from rich.console import Console

    # markup off: paths and messages are printed verbatim ("[draft]/x.pth" is not a style tag)
    return Console(stderr=stderr, highlight=False, markup=False)


def _store(offline: bool = False):
    from facerestore_cli.weights.store import WeightStore

    return WeightStore(offline=True if offline else None)


def _ids_for(store, ids: List[str], method: Optional[str], all_: bool) -> list[str]:
    from facerestore_cli import presets

    chosen = list(ids)
    if method:
        from facerestore_cli.methods import method_for

        preset = presets.load_builtin(method)
        chosen += method_for(preset).required_weights(preset, method_for(preset).Params.resolve(preset))
    if all_:
        chosen += list(store.registry)
    if not chosen:
        raise UsageError("name weight ids, --method NAME or --all", hint="see `facerestore weights list`")
    for wid in chosen:
        store.spec(wid)  # unknown ids fail here, listing the known ones
    return list(dict.fromkeys(chosen))


def _size(spec) -> str:
    if spec.size:
        return f"{spec.size / 2**20:.0f} MiB"
    return f"~{spec.approx_size:.0f} MiB" if spec.approx_size else "?"


@weights_app.command("list")
def list_weights() -> int:
    """Every weight file any preset uses: size, license, source, and whether it is in the cache."""
    from rich.table import Table

    store = _store()
    table = Table(title=f"weights in {store.root}")
    for col in ("id", "file", "size", "license", "status", "source"):
        # ids and statuses are what people copy and grep: never fold them, even at 80 columns
        table.add_column(col, overflow="fold", no_wrap=col in ("id", "status"))
    for wid, spec in store.registry.items():
        source = spec.urls[0] if spec.urls else f"no direct URL: {spec.obtain or spec.source}"
        table.add_row(wid, spec.file, _size(spec), spec.license, store.status(wid), source)
    _console(stderr=False).print(table)
    return 0


@weights_app.command()
def fetch(
    ids: List[str] = typer.Argument(None, help="Weight ids (see `weights list`)."),
    method: Optional[str] = typer.Option(None, "--method", help="Fetch every file this preset needs."),
    all_: bool = typer.Option(False, "--all", help="Fetch every downloadable file."),
    offline: bool = typer.Option(False, "--offline", help="Refuse any network access (also FACERESTORE_OFFLINE=1)."),
) -> int:
    """Download weights into the cache (resumable, size- and hash-checked, atomic)."""
    from rich.markup import escape

    from facerestore_cli.weights.download import rich_progress

    store = _store(offline)
    console = _console()
    failures = []
    for wid in _ids_for(store, ids or [], method, all_):
        if store.is_present(wid):
            console.print(f"{wid}: already present at {store.path(wid)}")
            continue
        try:
            with rich_progress(f"{wid}", console=console) as progress:
                path = store.fetch(wid, progress=progress)
            console.print(f"{wid}: saved {path}")
        except WeightsError as exc:
            failures.append(exc)
            console.print(f"[red]error:[/red] {escape(f'{wid}: {exc.message}')}", markup=True)
            if exc.hint:
                console.print(f"hint: {exc.hint}", markup=False)
    if failures:
        raise WeightsError(f"{len(failures)} file(s) could not be fetched")
    return 0


@weights_app.command()
def verify(ids: List[str] = typer.Argument(None, help="Weight ids; default: every file present in the cache.")) -> int:
    """Re-hash cached files and compare with the registry (or the hash recorded at download/import)."""
    store = _store()
    console = _console(stderr=False)
    chosen = list(ids) if ids else [wid for wid in store.registry if store.is_present(wid)]
    bad = 0
    for wid in chosen:
        result = store.verify(wid)
        bad += not result.ok
        mark = "ok" if result.ok else "BAD"
        console.print(f"{mark:3} {wid}: {result.reason}" + (f" (sha256 {result.sha256})" if result.sha256 else ""))
    if bad:
        raise WeightsError(f"{bad} weight file(s) failed verification", hint="delete them and fetch or import again")
    return 0


@weights_app.command("import")
def import_weights(
    weight_id: str = typer.Argument(..., metavar="ID"),
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
) -> int:
    """Copy a file you obtained yourself into the cache after checking its keys and shapes against the network."""
    store = _store()
    dest = store.import_file(weight_id, path)
    _console().print(f"{weight_id}: imported {path} → {dest} (sha256 {store.recorded_sha256(weight_id)})")
    return 0


@weights_app.command()
def path(weight_id: Optional[str] = typer.Argument(None, metavar="[ID]")) -> int:
    """Print the cache folder, or where the file of ID lives (stdout, for scripts)."""
    store = _store()
    typer.echo(str(store.path(weight_id) if weight_id else store.weights_dir))
    return 0
