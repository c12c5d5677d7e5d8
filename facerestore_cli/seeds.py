"""Seeds derived from names: what makes every random draw of a run or a training a function of what it is for
(a face of a photo, a training sample, an epoch's order, a degradation), not of the order work happens in."""

from __future__ import annotations

import hashlib


def hashed_seed(*parts: object, bits: int = 63) -> int:
    """The first 8 bytes (little-endian) of sha256 of the parts joined by NUL, cut to `bits` bits."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << bits) - 1)
