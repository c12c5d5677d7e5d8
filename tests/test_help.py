"""Every help page reads at 80 columns (#25): no line wider, no type placeholder or markup leak, every option and
argument explained, descriptions never squeezed under 40 columns; bench's own options first, no run-only ones."""

from __future__ import annotations

import re

import pytest
import typer

from archival_helpers import invoke
from facerestore_cli.cli import build_app

PLACEHOLDER = re.compile(r"<[a-z][\w\[\], ]*>|\{[A-Z_]+\}")
ROW = re.compile(r"^  (-\S.*?|[A-Z][A-Z0-9|.\[\]-]*)\s{2,}(\S.*)$")  # an option or argument and its description


def command_paths() -> list[tuple[str, ...]]:
    paths = []

    def walk(command, path):
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, (*path, name))

    walk(typer.main.get_command(build_app(["run"])), ())
    return paths


def help_page(path, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = invoke(*path, "--help")
    assert code == 0, err
    return out


@pytest.mark.parametrize("path", command_paths(), ids=lambda path: " ".join(path) or "facerestore")
def test_every_help_page_reads_at_80_columns(path, monkeypatch):
    page = help_page(path, monkeypatch)
    assert max(len(line) for line in page.splitlines()) <= 80, page
    assert not PLACEHOLDER.search(page), PLACEHOLDER.search(page).group()
    described = 0
    for line in page.splitlines():
        row = ROW.match(line)
        if row:
            described += 1
            assert 80 - row.start(2) >= 40, line
    command = typer.main.get_command(build_app([*path[:1]]))
    for name in path:
        command = command.commands[name]
    for param in command.params:
        if not getattr(param, "hidden", False) and param.name != "help":
            assert (getattr(param, "help", None) or "").strip(), f"{' '.join(path)}: {param.name} has no help"
    assert described or not command.params


def test_markup_in_help_texts_is_shown_as_written(monkeypatch):
    assert "needs facerestore[ray]" in " ".join(help_page(("run",), monkeypatch).split())
    assert "on [y_t, x] (Eq. 5)" in " ".join(help_page(("train", "ipc-prior"), monkeypatch).split())


def test_bench_shows_its_own_options_first_and_no_run_only_ones(monkeypatch):
    page = help_page(("bench",), monkeypatch)
    sections = [line.rstrip(":") for line in page.splitlines() if re.match(r"^[A-Z].*:$", line)]
    assert sections[:2] == ["Arguments", "Benchmark"], sections
    for flag in ("--shard", "--base", "--draw-boxes", "--report", "--review"):
        assert not re.search(rf"^  (-\w, )?{flag}\b", page, flags=re.M), flag
