"""A drill record's values as a person reads them, shared by the HTML report and the terminal summary."""

from __future__ import annotations

from bookstore.drills.record import KindSummary


def number(value: float | int | str | None, unit: str = "") -> str:
    """A measured value as a person reads it: "0.84 s", "12 orders", "—" when nothing was measured."""
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def _rto_cell(kind: KindSummary) -> str:
    """A kind's RTO; "≥" when the recording ended before the kind went a whole window without a failure."""
    shown = number(kind["rtoS"], "s")
    return f"≥ {shown} (not recovered)" if kind.get("recovered") is False else shown


def kind_cells(kind: KindSummary) -> list[str]:
    """A kind's row as text: kind, requests, failed (by reason), RTO, p50, p99."""
    return [
        kind["kind"],
        str(kind["requests"]),
        str(kind["failed"])
        + (
            f" ({', '.join(f'{k}: {n}' for k, n in failures.items())})"
            if (failures := kind.get("failures"))
            else ""
        ),
        _rto_cell(kind),
        number(kind["p50Ms"], "ms"),
        number(kind["p99Ms"], "ms"),
    ]
