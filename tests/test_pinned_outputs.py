"""Each preset's fixed-seed output on a real photo is pinned (tests/pinned/*.npz, see pinned_outputs.py): any change
in the math, the seeding, the masks or the paste-back fails here. Regenerate only on purpose: `make pinned`."""

from __future__ import annotations

import pytest

from conftest import require_shared
from pinned_outputs import CASES, compare, load, run_case


@pytest.mark.parametrize("case", sorted(CASES))
def test_preset_output_matches_the_pinned_one(case, tmp_path):
    require_shared()
    problems = compare(case, run_case(case, tmp_path), load(case))
    assert not problems, "\n".join(problems) + "\n(regenerate with `make pinned` only if the change is intended)"
