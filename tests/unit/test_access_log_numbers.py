"""The access log's times are written without Python's float formatter where that is exact
(edgeproxy.logging.fields.fixed3/fixed6): byte for byte what f"{x:.3f}" / f"{x:.6f}" give,
ties and near-ties included."""

from __future__ import annotations

import math
import random

import pytest

from edgeproxy.logging.fields import fixed3, fixed6


def samples() -> list[float]:
    rng = random.Random(20261203)
    values = [0.0, -0.0, 1.0, 0.5, 0.0005, 0.0015, 0.0025, 0.0000005, 0.0000015, 0.125,
              0.0125, 1e-9, 4.9999e-7, 5e-7, 999.9995, 1_700_000_000.75, 1_700_000_000.0005,
              4398046511.104, 4398046511104.0, 1e300, -0.001, -1.5, math.inf, -math.inf,
              math.nan]  # fmt: skip
    for scale in (1e-6, 1e-3, 1.0, 1e3, 1e6, 1.7e9):
        values += [rng.random() * scale for _ in range(2000)]
    for places in (1000, 1000000):  # decimal ties and their float neighbours
        for _ in range(2000):
            tie = (rng.randrange(0, 10**7) + 0.5) / places
            values += [tie, math.nextafter(tie, 0.0), math.nextafter(tie, math.inf)]
    values += [n / 1000 for n in range(3000)] + [n / 1000000 for n in range(3000)]
    return values


@pytest.mark.parametrize(("fixed", "spec"), [(fixed3, ".3f"), (fixed6, ".6f")])
def test_fixed_point_text_is_the_float_formatters(fixed, spec) -> None:
    wrong = [(v, fixed(v), format(v, spec)) for v in samples() if fixed(v) != format(v, spec)]
    assert wrong == []
