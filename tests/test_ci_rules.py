"""In CI the suite never skips: a missing ../shared stops it with a clear message, and any skip of a test not
marked gpu fails. Outside CI, tests that need ../shared skip with a reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

SAMPLE = '''
import pytest
from conftest import require_shared

def test_needs_shared():
    require_shared()

def test_skips():
    pytest.skip("no reason to run")

@pytest.mark.gpu
def test_needs_cuda():
    pytest.skip("CUDA is not available")
'''


def run_sample(tmp_path: Path, ci: str | None, shared: Path | None) -> subprocess.CompletedProcess:
    folder = tmp_path / "suite"
    folder.mkdir(exist_ok=True)
    (folder / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (folder / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "FACERESTORE_SHARED")}
    env["PYTHONPATH"] = str(TESTS)
    if ci is not None:
        env["CI"] = ci
    if shared is not None:
        env["FACERESTORE_SHARED"] = str(shared)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "markers=gpu: CUDA",
                           str(folder)], capture_output=True, text=True, env=env, cwd=folder, timeout=120)


def test_missing_shared_stops_a_ci_run_with_a_clear_message(tmp_path):
    result = run_sample(tmp_path, "true", tmp_path / "nowhere")
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"shared test data is incomplete at {tmp_path / 'nowhere'}" in result.stdout + result.stderr


def test_outside_ci_missing_shared_skips(tmp_path):
    result = run_sample(tmp_path, None, tmp_path / "nowhere")
    assert result.returncode == 0, result.stdout
    assert "3 skipped" in result.stdout


@pytest.mark.parametrize("ci", ["1", "true"])
def test_in_ci_a_skip_fails_unless_marked_gpu(tmp_path, ci):
    from conftest import SHARED, missing_shared_parts

    if missing_shared_parts():
        pytest.fail(f"this test needs ../shared at {SHARED}")
    result = run_sample(tmp_path, ci, SHARED)
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed, 1 skipped" in result.stdout
    assert "skipped in CI (no reason to run)" in result.stdout


def test_ci_value_zero_or_false_is_not_ci(tmp_path):
    assert run_sample(tmp_path, "0", tmp_path / "nowhere").returncode == 0
    assert run_sample(tmp_path, "false", tmp_path / "nowhere").returncode == 0
