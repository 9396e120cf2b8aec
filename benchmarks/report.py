"""The printed table: one row per scenario, edgeproxy beside nginx."""

from __future__ import annotations

from typing import Any

from scenarios import Scenario


def fmt_ms(ms: float) -> str:
    return f"{ms / 1000:.2f}s" if ms >= 1000 else f"{ms:.2f}ms"


COLUMNS = [
    "scenario",
    "unit",
    "edgeproxy",
    "nginx",
    "ratio",
    "edgeproxy p99",
    "nginx p99",
    "p99 ratio",
    "target",
    "met",
    "rounds",
]


def table_row(name: str, sc: Scenario | None, codec: str, result: dict[str, Any]) -> list[str]:
    if "median" not in result:
        return [name, *["-"] * 8, result["status"], "0"]
    assert sc is not None
    if "row" in result:  # a scenario with its own measure() says what its cells hold
        cells = result["row"]
        return [
            name,
            *(cells.get(c, "-") for c in COLUMNS[1:-3]),
            result["target"],
            result["met_text"],
            str(len(result["rounds"])),
        ]
    med = result["median"]
    edge, ref = med["edgeproxy"], med.get("nginx")
    p99_ratio = result.get("p99_ratio")
    return [
        name,
        "req/s",
        f"{edge['requests_per_sec']:,.0f}",
        f"{ref['requests_per_sec']:,.0f}" if ref else "n/a (no nginx)",
        f"{result['ratio']:.2f}x" if "ratio" in result else "-",
        fmt_ms(edge["p99_ms"]),
        fmt_ms(ref["p99_ms"]) if ref else "-",
        f"{p99_ratio:.2f}x" if p99_ratio is not None else "-",
        sc.target_text(codec),
        result["met_text"],
        str(len(result["rounds"])),
    ]


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(COLUMNS), sep, *(line(r) for r in rows)])
