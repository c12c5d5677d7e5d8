"""Each preset's fixed-seed output on a real photo is pinned (tests/pinned/*.npz, see pinned_outputs.py): any change
in the math, the seeding, the masks or the paste-back fails here, on any CPU. Regenerate only on purpose: `make
pinned`."""

from __future__ import annotations

import pytest

from conftest import require_shared
from pinned_outputs import CASES, compare, load, run_case, run_cases_under


@pytest.mark.parametrize("case", sorted(CASES))
def test_preset_output_matches_the_pinned_one(case, tmp_path):
    require_shared()
    problems = compare(case, run_case(case, tmp_path), load(case))
    assert not problems, "\n".join(problems) + "\n(regenerate with `make pinned` only if the change is intended)"


def test_pinned_outputs_hold_under_other_cpu_kernels(tmp_path):
    """The same runs in processes held to ATen's scalar kernels (and oneDNN to SSE4.1) on one thread each, two side by
    side: another kernel set and reduction order than this machine's, as another CPU would bring, still within the
    tolerance (pinned cases must not amplify rounding)."""
    require_shared()
    fresh = run_cases_under("scalar", sorted(CASES), tmp_path, processes=2)
    problems = [p for case in sorted(CASES) for p in compare(case, fresh[case], load(case))]
    assert not problems, "\n".join(problems)
