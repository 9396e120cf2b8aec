"""Property: every timeout fires on time, whatever else happens on the wheel meanwhile.

Random sequences of start/touch/stop/suspend/close on several timers, clock advances and
loop stalls, against a fake clock; each expiry may itself start, move or stop timers
(as a connection's timeout handler does) while the sweep that fired it is running. A model
of each timer (armed or not, and its deadline) checks every expiry: never before the
deadline, at most one RESOLUTION after it (or at the end of a stall that passed it), never
when disarmed; and no armed timer stays overdue without firing.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import cast

from hypothesis import event, given, settings
from hypothesis import strategies as st

from edgeproxy.timer import RESOLUTION, LazyTimer
from tests.unit.fake_loop import FakeLoop

# Float rounding, plus the wheel's SLOT_TOLERANCE for a deadline that falls just before a
# sweep's instant.
SLACK = 1e-6
MAX_EXPIRY_REACTIONS = 3  # expiries of one timer that do something in the sweep
LONGEST = 12.0  # the longest timeout drawn

timeouts = st.one_of(
    st.sampled_from([0.0, 0.05, 0.1, 0.3, 0.6, 1.0, 2.0, 10.0]),
    st.floats(min_value=0.0, max_value=LONGEST, allow_nan=False),
)


def timer_ops(count: int) -> st.SearchStrategy[tuple[str, int, float]]:
    index = st.integers(0, count - 1)
    return st.one_of(
        st.tuples(st.sampled_from(["start", "touch"]), index, timeouts),
        st.tuples(st.sampled_from(["stop", "suspend", "close"]), index, st.just(0.0)),
    )


def loop_ops() -> st.SearchStrategy[tuple[str, int, float]]:
    return st.tuples(
        st.sampled_from(["advance", "advance", "stall"]),
        st.just(0),
        st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
    )


@dataclass
class Model:
    armed: bool = False
    closed: bool = False
    deadline: float = 0.0
    fired: int = 0


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    count=st.integers(1, 8),
    start_time=st.one_of(
        st.sampled_from([0.0, 4.2, 1000.0, 86400.05]),
        st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    ),
    early=st.sampled_from([0.0, 1e-9, 5e-8]),
)
def test_every_timeout_fires_on_time(
    data: st.DataObject, count: int, start_time: float, early: float
) -> None:
    loop = FakeLoop(now=start_time, early=early)
    models = [Model() for _ in range(count)]
    # reactions[i][k]: what timer i's expiry number k does (a bounded supply, so chains end).
    reactions = data.draw(
        st.lists(
            st.lists(st.lists(timer_ops(count), max_size=2), max_size=MAX_EXPIRY_REACTIONS),
            min_size=count,
            max_size=count,
        ),
        label="on expiry",
    )
    reactions_done = [0]

    def apply(op: tuple[str, int, float]) -> None:
        name, index, value = op
        model, timer = models[index], timers[index]
        if name == "start":
            timer.start(value)
            if not model.closed:  # a closed timer has let go of its callback
                model.armed, model.deadline = True, loop.now + value
        elif name == "touch":
            timer.touch(value)
            if model.armed:
                model.deadline = loop.now + value
        elif name in ("stop", "suspend"):
            getattr(timer, name)()
            model.armed = False
        elif name == "close":
            timer.close()
            model.armed, model.closed = False, True

    def on_expiry(index: int) -> None:
        model = models[index]
        assert model.armed, f"timer {index} fired while disarmed"
        assert loop.now >= model.deadline, f"timer {index} fired early"
        latest = max(model.deadline + RESOLUTION, loop.last_stall_end) + SLACK
        assert loop.now <= latest, f"timer {index} fired {loop.now - model.deadline}s late"
        model.armed = False
        model.fired += 1
        # What a timeout handler does, in the middle of the sweep: arm, move, stop timers.
        # Drawn beforehand: timers in one bucket expire in no set order.
        if model.fired <= len(reactions[index]):
            for op in reactions[index][model.fired - 1]:
                reactions_done[0] += 1
                apply(op)

    def check_none_overdue() -> None:
        for index, model in enumerate(models):
            if model.armed:
                latest = max(model.deadline + RESOLUTION, loop.last_stall_end) + SLACK
                assert loop.now <= latest, f"timer {index} is overdue and has not fired"

    timers = [
        LazyTimer(cast(asyncio.AbstractEventLoop, loop), functools.partial(on_expiry, i))
        for i in range(count)
    ]
    for index in range(count):  # every connection has its timer running
        apply(("start", index, data.draw(timeouts, label=f"first timeout of {index}")))
    ops = data.draw(st.lists(st.one_of(timer_ops(count), loop_ops()), max_size=40), label="ops")
    for op in ops:
        name, _, value = op
        if name == "advance":
            loop.advance(value)
            check_none_overdue()
        elif name == "stall":
            loop.stall(value)
        else:
            apply(op)
    # Run until every chain of expiries has ended: each link is at most LONGEST long.
    for _ in range(count * MAX_EXPIRY_REACTIONS + 2):
        loop.advance(LONGEST + 1)
        check_none_overdue()
    assert not [i for i, model in enumerate(models) if model.armed], "armed timers never fired"
    expiries = sum(model.fired for model in models)
    event("expiries: " + ("none" if not expiries else "1-4" if expiries < 5 else "5 or more"))
    event(f"operations done by expiries: {'some' if reactions_done[0] else 'none'}")
