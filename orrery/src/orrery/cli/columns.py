"""Plain columns, as kubectl and squeue print them: a header line, cells separated by
spaces, no borders. Fitted to the terminal without ever cutting a name or an ID — the
thing a user copies into the next command — by wrapping the one free-text column and then
dropping optional columns, least useful first.

Output that is not a terminal (a pipe, a CI log) is never fitted: every column, whole.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

GAP = 3  # spaces between columns, as kubectl
MIN_WRAP = 16  # a wrapping column narrower than this is dropped rather than squeezed


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    drop: int = 0  # 0: always shown; higher numbers go first when the terminal is narrow
    wrap: bool = False  # free text: wrapped onto more lines rather than widening the table


def _natural(col: Column, cells: Sequence[str]) -> int:
    return max([len(col.header), *(len(c) for c in cells)])


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None) -> list[int]:
    """The indices of the columns to show within ``width`` (None: all)."""
    keep = list(range(len(columns)))
    if width is None:
        return keep
    widths = [_natural(c, [r[i] for r in rows]) for i, c in enumerate(columns)]

    def total(idx: list[int]) -> int:
        fixed = sum(MIN_WRAP if columns[i].wrap else widths[i] for i in idx)
        return fixed + GAP * (len(idx) - 1)

    # The columns always shown, then each optional one, most useful (lowest `drop`)
    # first, wherever it still fits beside them: a wide one left out leaves room for
    # narrower ones after it.
    chosen = [i for i in keep if columns[i].drop == 0]
    for i in sorted((i for i in keep if columns[i].drop), key=lambda i: columns[i].drop):
        if total(sorted([*chosen, i])) <= width:
            chosen.append(i)
    return sorted(chosen)


def render(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None = None
) -> str:
    """The table as text, fitted to ``width`` characters (None: not fitted)."""
    idx = fit(columns, rows, width)
    cols = [columns[i] for i in idx]
    body = [[r[i] for i in idx] for r in rows]
    widths = [_natural(c, [r[j] for r in body]) for j, c in enumerate(cols)]
    if width is not None:
        fixed = sum(w for c, w in zip(cols, widths, strict=True) if not c.wrap)
        n_wrap = sum(1 for c in cols if c.wrap)
        room = width - fixed - GAP * (len(cols) - 1)
        if n_wrap:
            share = max(MIN_WRAP, room // n_wrap)
            widths = [min(w, share) if c.wrap else w for c, w in zip(cols, widths, strict=True)]
    lines = [_line([c.header for c in cols], widths)]
    for r in body:
        # A wrapped cell takes more lines; the other cells of its row stay on the first.
        parts = [
            (textwrap.wrap(cell, w, break_long_words=False) or [""]) if c.wrap else [cell]
            for c, w, cell in zip(cols, widths, r, strict=True)
        ]
        for k in range(max(len(p) for p in parts)):
            lines.append(_line([p[k] if k < len(p) else "" for p in parts], widths))
    return "\n".join(lines)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    out = "".join(c.ljust(w + GAP) for c, w in zip(cells[:-1], widths[:-1], strict=True))
    return (out + cells[-1]).rstrip()
