"""metrics_overhead: proxy_small through edgeproxy with `metrics` on (every request counted
into the shared rows: status class, request and upstream times, peer and byte counters),
against the same edgeproxy with metrics off (issue 14: at least 0.95 x).

The two run side by side in front of the same backend, rounds alternating, as
limits_overhead's (whose measurement this reuses); nothing scrapes meanwhile, so the
figure is the request path's cost alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import free_port
from limits_overhead import measure_overhead
from servers import RunOptions

TARGET = 0.95


def _with_metrics(config: dict[str, Any], tmp: Path) -> dict[str, Any]:
    config["metrics"] = {"listen": f"127.0.0.1:{free_port()}", "path": "/metrics"}
    return config


def _reworded(text: str) -> str:
    return text.replace("without zones", "without metrics").replace("zones", "metrics")


def measure_metrics_overhead(opts: RunOptions) -> dict[str, Any]:
    result = measure_overhead(opts, "metrics_overhead", _with_metrics, TARGET)
    # The shared measurement names its two runs after zones: here they differ by metrics.
    result["notes"] = [_reworded(note) for note in result["notes"]]
    result["target"] = _reworded(result["target"])
    result["row"]["nginx"] = _reworded(result["row"]["nginx"])
    return result
