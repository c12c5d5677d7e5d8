"""Counts in messages, in words: "1 face", "2 faces", never "1 faces" or "2 file(s)"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
