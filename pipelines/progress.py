"""The progress callbacks library steps accept, so the CLI can draw bars and the DAGs can stay silent.

Three shapes, each with a no-op default: an item wrapper, a counter of named events, and one call per trained
branch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

ItemProgress = Callable[[Iterable[Any]], Iterable[Any]]  # wraps the items of a loop, yields them unchanged
CountProgress = Callable[[str, int], None]  # (event, how many): "todo", "embedded", "skipped", ...
BranchProgress = Callable[[str, int, int], None]  # (holdout just trained, done, total)


def no_items(items: Iterable[Any]) -> Iterable[Any]:
    return items


def no_counts(event: str, n: int) -> None:
    return None
