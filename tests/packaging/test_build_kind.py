"""Which build runs, and the start-up warning when it is the slower pure-Python one."""

from __future__ import annotations

import logging

import pytest

from edgeproxy import PURE_BUILD_WARNING, build_kind, warn_if_pure_build
from edgeproxy.limits.locks import lock_kind
from edgeproxy.metrics.binding import recorder_kind


def test_a_pure_build_warns_once_at_start_and_a_compiled_one_does_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="edgeproxy"):
        warn_if_pure_build()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if build_kind() == "compiled":  # make test-compiled
        assert warnings == []
    else:
        assert warnings == [PURE_BUILD_WARNING]
        assert "\n" not in PURE_BUILD_WARNING


def test_the_compiled_build_has_the_spin_lock_and_a_pure_one_the_record_lock() -> None:
    # setup.py builds edgeproxy.limits._spinlock with the mypyc modules, or neither.
    assert lock_kind() == ("spin" if build_kind() == "compiled" else "record")


def test_the_compiled_build_has_the_c_metrics_recorders_and_a_pure_one_the_python_ones() -> None:
    # setup.py builds edgeproxy.metrics._rowstats with the mypyc modules, or neither.
    assert recorder_kind() == ("c" if build_kind() == "compiled" else "shadow")


def test_the_compiled_build_splits_response_heads_in_c_and_a_pure_one_in_python() -> None:
    # setup.py builds edgeproxy.http._fields with the mypyc modules, or neither.
    from edgeproxy.http import httptools_response

    try:
        from edgeproxy.http._fields import split_head
    except ImportError:
        in_c = False
    else:
        in_c = httptools_response.split_fields is split_head
    assert in_c == (build_kind() == "compiled")


def test_the_compiled_build_connects_upstream_on_its_own_epoll_and_a_pure_one_by_the_loop() -> None:
    # setup.py builds edgeproxy.upstream._stream with the mypyc modules, or neither.
    from edgeproxy.upstream.streams import stream_kind

    assert stream_kind() == ("epoll" if build_kind() == "compiled" else "loop")
