"""Keyword arguments passed through as a TypedDict (``**fields: Unpack[T]``) are checked when
the call is made too: mypy checks them in this repository, but Python itself would take a
misspelt keyword from any other caller and drop it without a word."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_keywords(kind: Any, given: Mapping[str, object], *, call: str) -> None:
    """Raise ``TypeError`` (as Python does for a plain signature) when ``given`` holds a key
    the TypedDict ``kind`` does not declare. (A missing required key fails where it is read.)"""
    unknown = sorted(set(given) - kind.__required_keys__ - kind.__optional_keys__)
    if unknown:
        raise TypeError(f"{call} got unexpected keyword arguments: {', '.join(unknown)}")
