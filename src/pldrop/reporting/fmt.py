"""The number formats of every report pldrop writes (``report.md``, ``converge.md``, compare's ``report.md``)."""

from __future__ import annotations

from typing import Any


def num(x: float | None, d: int = 3, scale: float = 1.0) -> str:
    """``x·scale`` with ``d`` decimals; ``–`` for a missing value.

    >>> num(0.12345), num(None), num(0.5, 1, 100)
    ('0.123', '–', '50.0')
    """
    return "–" if x is None else f"{x * scale:.{d}f}"


def pm(agg: dict[str, Any] | None, d: int = 3, scale: float = 1.0) -> str:
    """``mean ± std`` of a :func:`~pldrop.reporting.stats.mean_std` dict (``mean`` alone for one value).

    >>> pm({"mean": 1.5, "std": 0.25, "n": 2}, 2), pm({"mean": 1.5, "std": None, "n": 1}, 2)
    ('1.50 ± 0.25', '1.50')
    """
    if not agg or agg.get("mean") is None:
        return "–"
    if agg.get("std") is None:
        return num(agg["mean"], d, scale)
    return f"{num(agg['mean'], d, scale)} ± {num(agg['std'], d, scale)}"


def pct(x: float | None, d: int = 1) -> str:
    """A fraction as a percentage: ``pct(0.243)`` -> ``'24.3 %'``."""
    return "–" if x is None else f"{num(x, d, 100)} %"


def less_or_more(x: float | None, d: int = 1) -> str:
    """A saving (a fraction, positive = less) as ``'12.7 % less'``, or ``'12.7 % more'`` when it is negative.

    >>> less_or_more(0.127), less_or_more(-0.127), less_or_more(0.0), less_or_more(None)
    ('12.7 % less', '12.7 % more', '0.0 % less', '–')
    """
    return "–" if x is None else f"{pct(abs(x), d)} {'less' if x >= 0 else 'more'}"


def below_or_above(x: float | None, d: int = 3) -> str:
    """How far a loss is below a reference (positive = below): ``'0.322 below'``, or ``'0.322 above'``
    when the difference is negative.

    >>> below_or_above(0.322), below_or_above(-0.322), below_or_above(None)
    ('0.322 below', '0.322 above', '–')
    """
    return "–" if x is None else f"{num(abs(x), d)} {'below' if x >= 0 else 'above'}"


def sci(x: float | None) -> str:
    """FLOPs: ``sci(1.234e12)`` -> ``'1.23e+12'``."""
    return "–" if x is None else f"{x:.2e}"


def times(x: float | None) -> str:
    """A speed-up: ``times(2.5)`` -> ``'2.50×'``."""
    return "–" if x is None else f"{x:.2f}×"


def ci(agg: dict[str, Any] | None, d: int = 2, unit: str = "×") -> str:
    """A mean with its confidence interval (:func:`pldrop.train.analysis.interval`), ``–`` if missing.

    >>> ci({"mean": 2.0, "lo": 1.5, "hi": 2.5, "n": 3}), ci({"mean": 2.0, "lo": 2.0, "hi": 2.0, "n": 1}), ci(None)
    ('2.00× [1.50, 2.50]', '2.00×', '–')
    """
    if not agg or agg.get("mean") is None:
        return "–"
    if agg.get("n", 1) < 2:
        return f"{num(agg['mean'], d)}{unit}"
    return f"{num(agg['mean'], d)}{unit} [{num(agg['lo'], d)}, {num(agg['hi'], d)}]"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, as lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
