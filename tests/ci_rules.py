"""CI rules for the suite (a pytest plugin, loaded by conftest.py): where the CI variable is set, a missing ../shared
ends the run with a clear message instead of skipping every end-to-end test, and any skip is a failure, except of
tests marked `gpu`, which need CUDA and say so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACERESTORE_SHARED", REPO.parent / "shared"))
SHARED_PARTS = ("weights/detection_mobilenet0.25_Final.pth", "data/photos", "data/aligned-lq", "checkpoint-formats")
EXIT_SHARED_MISSING = 3


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_shared_parts() -> list[str]:
    return [part for part in SHARED_PARTS if not (SHARED / part).exists()]


def pytest_sessionstart(session) -> None:
    missing = missing_shared_parts()
    if in_ci() and missing:
        pytest.exit(f"CI is set but the shared test data is incomplete at {SHARED} (missing: {', '.join(missing)}); "
                    "put the shared/ folder beside the checkout or set FACERESTORE_SHARED", EXIT_SHARED_MISSING)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("gpu") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped in CI ({reason}): CI runs every test except those marked gpu"
