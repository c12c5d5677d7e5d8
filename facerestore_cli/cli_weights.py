"""`facerestore weights list|show|fetch|verify|import|path`: the CLI face of the weights registry and cache.

Tables are plain aligned text (no box characters) that fit 80 columns and read well through grep; long texts
(license, source, how to obtain a file) are in `weights show ID`; `--json` gives the same as data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from facerestore_cli.errors import UsageError, WeightsError
from facerestore_cli.wording import counted

weights_app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


def _json_option(what: str):
    return typer.Option(False, "--json", metavar="", help=f"JSON Lines: {what}.")


def _console(stderr: bool = True):
    from rich.console import Console

    # markup off: paths and messages are printed verbatim ("[draft]/x.pth" is not a style tag)
    return Console(stderr=stderr, highlight=False, markup=False, soft_wrap=True)


def _store(offline: bool = False):
    from facerestore_cli.weights.store import WeightStore

    return WeightStore(offline=True if offline else None)


def _ids_for(store, ids: List[str], method: Optional[str], all_: bool) -> list[str]:
    from facerestore_cli import presets
    from facerestore_cli.methods import method_for

    chosen = list(ids)
    if method:
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
    return f"~{spec.approx_size:g} MiB" if spec.approx_size else "?"


def _rows(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _record(store, wid: str) -> dict:
    """size: the file's own when it is present, else the registry's (null when the registry states none);
    config: the network the file is built as, recorded_config: what of it was recorded beside the file."""
    spec, path = store.spec(wid), store.path(wid)
    return {"id": wid, "file": spec.file, "size": path.stat().st_size if path.is_file() else spec.size,
            "approx_size_mib": spec.approx_size, "status": store.status(wid), "path": str(path),
            "sha256": store.recorded_sha256(wid), "license": spec.license, "source": spec.source,
            "urls": list(spec.urls), "obtain": spec.obtain, "arch": spec.arch, "config": store.config(wid),
            "recorded_config": store.recorded_config(wid)}


@weights_app.command("list")
def list_weights(json_out: bool = _json_option("one object per weight file")) -> int:
    """Every weight file any preset uses: id, size, whether it is in the cache, file name."""
    store = _store()
    if json_out:
        for wid in store.registry:
            typer.echo(json.dumps(_record(store, wid), ensure_ascii=False))
        return 0
    _rows(("id", "size", "status", "file"),
          [(wid, _size(spec), store.status(wid), spec.file) for wid, spec in store.registry.items()])
    typer.echo(f"\ncache: {store.weights_dir}\ndetails: facerestore weights show ID")
    return 0


@weights_app.command()
def show(weight_id: str = typer.Argument(..., metavar="ID", help="A weight id (see `weights list`)."),
         json_out: bool = _json_option("one object, the weight file")) -> int:
    """Everything about one weight file: where it comes from, its license, how to get it, where it is."""
    store = _store()
    record = _record(store, weight_id)
    if json_out:
        typer.echo(json.dumps(record, ensure_ascii=False))
        return 0
    spec = store.spec(weight_id)
    for key, value in (("id", weight_id), ("file", spec.file), ("size", _size(spec)), ("status", record["status"]),
                       ("path", record["path"]), ("sha256", record["sha256"] or "not recorded yet"),
                       ("license", spec.license), ("source", spec.source),
                       ("download", " or ".join(spec.urls) or "no direct URL"), ("obtain", spec.obtain or ""),
                       ("network", f"{spec.arch} {json.dumps(record['config'])}"
                                   + (f" (recorded beside the file: {', '.join(record['recorded_config'])})"
                                      if record["recorded_config"] else "")),
                       ("get it", spec.fetch_command() if spec.downloadable else spec.import_command())):
        typer.echo(f"{key + ':':<9} {value}")
    return 0


@weights_app.command()
def fetch(
    ids: List[str] = typer.Argument(None, metavar="ID...", help="Weight ids (see `weights list`)."),
    method: Optional[str] = typer.Option(None, "--method", metavar="NAME", help="Fetch every file this preset needs."),
    all_: bool = typer.Option(False, "--all", metavar="", help="Fetch every downloadable file."),
    offline: bool = typer.Option(False, "--offline", metavar="", help="Refuse any network access (also FACERESTORE_OFFLINE=1)."),
) -> int:
    """Download weights into the cache (resumable, size- and hash-checked, atomic)."""
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
            console.print(f"error: {wid}: {exc.message}")
            if exc.hint:
                console.print(f"hint: {exc.hint}")
    if failures:
        raise WeightsError(f"{counted(len(failures), 'file')} could not be fetched")
    return 0


@weights_app.command()
def verify(ids: List[str] = typer.Argument(None, metavar="ID...",
                                          help="Weight ids; default: every file present in the cache."),
           json_out: bool = _json_option("one object per file checked")) -> int:
    """Re-hash cached files and compare with the registry (or the hash recorded at download/import)."""
    store = _store()
    chosen = list(ids) if ids else [wid for wid in store.registry if store.is_present(wid)]
    bad = 0
    for wid in chosen:
        result = store.verify(wid)
        bad += not result.ok
        if json_out:
            typer.echo(json.dumps({"id": wid, "ok": result.ok, "sha256": result.sha256, "reason": result.reason}))
        else:
            mark = "ok" if result.ok else "BAD"
            typer.echo(f"{mark:3} {wid}: {result.reason}" + (f" (sha256 {result.sha256})" if result.sha256 else ""))
    if bad:
        raise WeightsError(f"{counted(bad, 'weight file')} failed verification", hint="delete them and fetch or import again")
    return 0


@weights_app.command("import")
def import_weights(
    args: List[str] = typer.Argument(..., metavar="[ID] PATH...",
                                     help="Files to import, recognised by their keys and shapes; or one ID and its file."),
    link: bool = typer.Option(False, "--link", metavar="", help="Link to the file instead of copying it."),
    preset: Optional[Path] = typer.Option(None, "--preset", metavar="FILE.yaml",
                                          help="Check against the networks as this preset configures them."),
) -> int:
    """Put files you obtained yourself into the cache, after checking their keys and shapes against the network."""
    store = _store()
    configs = _preset_configs(preset)
    console = _console()
    if not Path(args[0]).exists() and len(args) == 2:
        wid, path = args[0], Path(args[1])
        store.spec(wid)
        if not path.is_file():
            raise UsageError(f"{path} is not a file", hint=f"facerestore weights import {wid} PATH")
        dest = store.import_file(wid, path, configs.get(store.spec(wid).id), link=link)
        console.print(f"{wid}: imported {path} → {dest} (sha256 {store.recorded_sha256(wid)})")
        return 0
    for arg in args:
        if not Path(arg).is_file():
            store.spec(arg)  # a mistyped id fails here, listing the known ones
            raise UsageError(f"{arg} is not a file", hint="weights import PATH... or weights import ID PATH")
    failed = 0
    for path in map(Path, args):
        fits, nearest = store.identify(path, configs)
        by_name = [wid for wid in fits if store.spec(wid).file == path.name]
        if len(fits) == 1 or len(by_name) == 1:
            wid = fits[0] if len(fits) == 1 else by_name[0]
            dest = store.import_file(wid, path, configs.get(wid), link=link)
            console.print(f"{path}: {wid} → {dest} (sha256 {store.recorded_sha256(wid)})")
            continue
        failed += 1
        if fits:
            console.print(f"error: {path} fits {' and '.join(fits)}; say which: "
                          f"facerestore weights import {fits[0]} {path}")
        else:
            near = f"; nearest: {nearest[0]} ({nearest[1].summary(3)})" if nearest else ""
            console.print(f"error: {path} fits no weight id{near}")
    if failed:
        raise WeightsError(f"{failed} of {counted(len(args), 'file')} not imported")
    return 0


def _preset_configs(preset: Optional[Path]) -> dict[str, dict]:
    """weight id → the config a preset file gives its component (to import networks of that size)."""
    if preset is None:
        return {}
    from facerestore_cli import presets

    return {c.weights: dict(c.config) for c in presets.load_file(preset).components.values() if c.config}


@weights_app.command()
def path(weight_id: Optional[str] = typer.Argument(None, metavar="ID",
                                                   help="A weight id; none: the cache folder.")) -> int:
    """Print the cache folder, or where the file of ID lives (stdout, for scripts)."""
    store = _store()
    typer.echo(str(store.path(weight_id) if weight_id else store.weights_dir))
    return 0
