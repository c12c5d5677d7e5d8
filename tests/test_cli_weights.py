"""`facerestore weights list|path|verify|import|fetch`, `methods` and `doctor` through the real CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket

import pytest

from cli_helpers import run_cli
from conftest import RETINA_MOBILE, require_shared

ALL_IDS = ("difface-unet", "difface-swinir", "retinaface-resnet50", "retinaface-mobile0.25", "parsenet",
           "arcface-ir-se50", "dr2-unet", "dr2-sparnethd", "p2-ffhq")
TINY_PRESENT = ("difface-unet", "difface-swinir", "retinaface-mobile0.25", "realesrgan-x2plus", "realesrgan-x4plus")


def _table_rows(out: str) -> dict[str, list[str]]:
    """Rows of a plain aligned table keyed by their first cell (cells: whitespace-separated words)."""
    return {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    home = tmp_path / "empty-home"
    monkeypatch.setenv("FACERESTORE_HOME", str(home))
    monkeypatch.delenv("FACERESTORE_OFFLINE", raising=False)
    return home


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or call the downloader fails the test."""
    import facerestore_cli.weights.download as download_mod
    import facerestore_cli.weights.store as store_mod

    calls = []

    def refuse(*args, **_kwargs):
        calls.append(args)
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(store_mod, "download", refuse)
    monkeypatch.setattr(download_mod, "urlopen", refuse)
    return calls


# -- list / path -----------------------------------------------------------------------------------------------

def test_weights_list_shows_every_id_and_its_status(tiny_env, capsys):
    code, out, err = run_cli(capsys, "weights", "list")
    assert code == 0, err
    rows = _table_rows(out)
    assert set(ALL_IDS) <= set(rows), sorted(rows)
    for wid in ALL_IDS:
        status = "present" if wid in TINY_PRESENT else "missing"
        assert status in rows[wid], (wid, rows[wid])


def test_weights_list_in_empty_home_all_missing(empty_home, capsys):
    code, out, err = run_cli(capsys, "weights", "list")
    assert code == 0, err
    rows = _table_rows(out)
    assert set(ALL_IDS) <= set(rows)
    assert all("missing" in rows[wid] for wid in ALL_IDS)
    assert not empty_home.exists()  # listing never creates the cache


def test_weights_path_prints_only_the_weights_dir(tiny_env, tiny_home, capsys):
    code, out, err = run_cli(capsys, "weights", "path")
    assert code == 0, err
    assert out == f"{tiny_home.resolve() / 'weights'}\n"
    assert err == ""


def test_weights_path_of_an_id(tiny_env, tiny_home, capsys):
    code, out, err = run_cli(capsys, "weights", "path", "difface-unet")
    assert code == 0, err
    assert out == f"{tiny_home.resolve() / 'weights' / 'iddpm_ffhq512_ema500000.pth'}\n"
    assert err == ""


def test_weights_path_unknown_id_is_a_usage_error_listing_the_known_ids(tiny_env, capsys):
    code, out, err = run_cli(capsys, "weights", "path", "no-such-weights")
    assert code == 2 and out == ""
    assert "unknown weight id 'no-such-weights'" in err and "difface-unet" in err and "weights list" in err


# -- verify --------------------------------------------------------------------------------------------------------

def test_weights_verify_tiny_home_all_ok(tiny_env, capsys):
    code, out, err = run_cli(capsys, "weights", "verify")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line[:3] in ("ok ", "BAD")]
    assert len(lines) == len(TINY_PRESENT), out
    for wid in TINY_PRESENT:
        assert any(line.startswith("ok ") and f" {wid}: " in line for line in lines), (wid, out)
    assert "BAD" not in out


def test_weights_verify_detects_a_corrupted_file(tiny_home, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    shutil.copytree(tiny_home / "weights", home / "weights")
    monkeypatch.setenv("FACERESTORE_HOME", str(home))
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
    # First pass records each file's sha256 (the registry pins none for these files).
    code, _out, err = run_cli(capsys, "weights", "verify")
    assert code == 0, err
    unet = home / "weights" / "iddpm_ffhq512_ema500000.pth"
    data = bytearray(unet.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])  # same size, other bytes
    unet.write_bytes(bytes(data))

    code, out, err = run_cli(capsys, "weights", "verify")
    assert code == 4
    bad = [line for line in out.splitlines() if line.startswith("BAD")]
    assert len(bad) == 1 and "difface-unet" in bad[0], out
    assert any(line.startswith("ok ") and "difface-swinir" in line for line in out.splitlines())
    assert "failed verification" in err
    # The session home was not touched.
    assert (tiny_home / "weights" / unet.name).read_bytes() != bytes(data)


def test_weights_verify_named_missing_id_is_bad(empty_home, capsys):
    code, out, _err = run_cli(capsys, "weights", "verify", "parsenet")
    assert code == 4
    assert out.startswith("BAD") and "missing" in out


# -- import --------------------------------------------------------------------------------------------------------

def test_weights_import_into_empty_home(empty_home, capsys):
    require_shared()
    code, out, err = run_cli(capsys, "weights", "import", "retinaface-mobile0.25", RETINA_MOBILE)
    assert code == 0, err
    assert out == ""
    dest = empty_home / "weights" / RETINA_MOBILE.name
    assert dest.is_file() and dest.read_bytes() == RETINA_MOBILE.read_bytes()
    sha = hashlib.sha256(RETINA_MOBILE.read_bytes()).hexdigest()
    records = json.loads((empty_home / "weights" / "hashes.json").read_text())
    assert records[RETINA_MOBILE.name]["sha256"] == sha
    assert sha in err and "imported" in err
    assert not list((empty_home / "weights").glob(".*.import"))  # no temp file left behind
    # And it now shows as present.
    code, out, _err = run_cli(capsys, "weights", "list")
    assert code == 0 and "present" in _table_rows(out)["retinaface-mobile0.25"]


def test_weights_import_wrong_network_is_refused(empty_home, capsys):
    require_shared()
    code, out, err = run_cli(capsys, "weights", "import", "difface-unet", RETINA_MOBILE)
    assert code == 4
    assert out == ""
    assert "does not fit difface-unet" in err
    assert "missing key" in err and "unexpected key" in err
    assert not (empty_home / "weights" / "iddpm_ffhq512_ema500000.pth").exists()


def test_weights_import_missing_file_is_usage_error(empty_home, tmp_path, capsys):
    code, _out, err = run_cli(capsys, "weights", "import", "parsenet", tmp_path / "nope.pth")
    assert code == 2 and "nope.pth" in err


# -- fetch ---------------------------------------------------------------------------------------------------------

def test_weights_fetch_without_url_points_to_import(empty_home, no_network, capsys):
    code, out, err = run_cli(capsys, "weights", "fetch", "dr2-unet")
    assert code == 4
    assert out == ""
    assert "cannot be downloaded automatically" in err
    assert "facerestore weights import dr2-unet" in err
    assert not no_network


def test_weights_fetch_offline_refuses_without_network(empty_home, no_network, capsys):
    code, out, err = run_cli(capsys, "weights", "fetch", "difface-unet", "--offline")
    assert code == 4
    assert out == ""
    assert "offline" in err
    assert "facerestore weights import difface-unet" in err
    assert not no_network
    assert not (empty_home / "weights" / "iddpm_ffhq512_ema500000.pth").exists()


def test_weights_fetch_offline_from_environment(empty_home, no_network, monkeypatch, capsys):
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
    code, _out, err = run_cli(capsys, "weights", "fetch", "parsenet")
    assert code == 4 and "offline" in err
    assert not no_network


def test_weights_fetch_present_file_is_a_no_op(tiny_env, no_network, capsys):
    code, _out, err = run_cli(capsys, "weights", "fetch", "retinaface-mobile0.25")
    assert code == 0, err
    assert "already present" in err
    assert not no_network


def test_weights_fetch_needs_an_id(empty_home, capsys):
    code, _out, err = run_cli(capsys, "weights", "fetch")
    assert code == 2 and "--all" in err


# -- methods / doctor ----------------------------------------------------------------------------------------------

def test_methods_lists_every_preset_with_weight_status(tiny_env, capsys, monkeypatch):
    code, out, err = run_cli(capsys, "methods")
    assert code == 0, err
    status = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1].rstrip(":") in ("difface-unet", "difface-swinir", "dr2-unet", "dr2-sparnethd"):
            status[words[1].rstrip(":")] = words[2].rstrip(",")
    assert status == {"difface-unet": "present", "difface-swinir": "present", "dr2-unet": "missing",
                      "dr2-sparnethd": "missing"}


def test_methods_in_empty_home_shows_missing(empty_home, capsys):
    code, out, err = run_cli(capsys, "methods")
    assert code == 0, err
    assert "difface" in out and "missing" in out and "present" not in out


def test_doctor_mentions_cache_dir(tmp_path, monkeypatch, capsys):
    home = tmp_path / "cache [test]"
    monkeypatch.setenv("FACERESTORE_HOME", str(home))
    code, out, err = run_cli(capsys, "doctor")
    assert code == 1, err  # nothing can run from an empty cache
    assert err == "" and "verdict: not ready" in out  # on stdout: `facerestore doctor | grep` finds it
    flat = out.replace("\n", "")
    assert f"cache: {home.resolve()}" in flat and "writable" in flat
    assert "torch" in out
    for wid in ALL_IDS:
        assert wid in out
