"""Independent readers of SynthVQA question texts, used by the tests to re-derive answers from scene metadata
without going through the generator's own helpers."""

from __future__ import annotations

import re

from stepprune.data.synthvqa.vocab import COLOR_NAMES, SHAPE_PLURALS, SHAPES, SIZE_NAMES

# ---- an independent reader of the question texts, used to re-derive answers from scene metadata
# ------------------
_PLURAL_TO_SHAPE = {v: k for k, v in SHAPE_PLURALS.items()}


def parse_ref(phrase: str) -> dict[str, str]:
    """'large red star' -> {'size': 'large', 'color': 'red', 'shape': 'star'}; 'small object' -> size only."""
    attrs: dict[str, str] = {}
    for w in phrase.split():
        if w in SIZE_NAMES:
            attrs["size"] = w
        elif w in COLOR_NAMES:
            attrs["color"] = w
        elif w in SHAPES:
            attrs["shape"] = w
        elif w in _PLURAL_TO_SHAPE:
            attrs["shape"] = _PLURAL_TO_SHAPE[w]
        elif w not in ("object", "objects", "the"):
            raise AssertionError(f"unexpected word {w!r} in referring phrase {phrase!r}")
    return attrs


def find(objects: list[dict], attrs: dict[str, str]) -> list[dict]:
    """Scene-record objects matching every attribute."""
    return [o for o in objects if all(o[k] == v for k, v in attrs.items())]


def match(pattern: str, text: str) -> re.Match:
    m = re.fullmatch(pattern, text)
    assert m, f"{text!r} does not match {pattern!r}"
    return m
