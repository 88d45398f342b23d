"""BoundedFrequencyRunner with a fake clock: coalescing, min interval, max interval, retry."""

from __future__ import annotations

from bpfproxy.controller.runner import BoundedFrequencyRunner


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


class Fn:
    """A function that records calls and returns the scripted results."""

    def __init__(self, *results: bool) -> None:
        self.calls: list[float] = []
        self.results = list(results)
        self.clock: FakeClock | None = None

    def __call__(self) -> bool:
        assert self.clock is not None
        self.calls.append(self.clock.t)
        return self.results.pop(0) if self.results else True


def make(fn: Fn, clock: FakeClock) -> BoundedFrequencyRunner:
    fn.clock = clock
    return BoundedFrequencyRunner(fn, min_interval=1.0, max_interval=30.0, retry_interval=5.0, clock=clock)


def test_first_request_runs_at_once_and_requests_coalesce() -> None:
    clock, fn = FakeClock(), Fn()
    r = make(fn, clock)
    assert r.tick() > 0 and fn.calls == []
    r.run()
    r.run()
    r.run()
    r.tick()
    assert fn.calls == [1000.0]
    r.tick()
    assert fn.calls == [1000.0]


def test_min_interval() -> None:
    clock, fn = FakeClock(), Fn()
    r = make(fn, clock)
    r.run()
    r.tick()
    clock.t += 0.3
    r.run()
    r.run()
    assert abs(r.tick() - 0.7) < 1e-9
    assert len(fn.calls) == 1
    clock.t += 0.7
    r.tick()
    assert fn.calls == [1000.0, 1001.0]
    # after an idle period, a request runs at once
    clock.t += 10
    r.run()
    r.tick()
    assert fn.calls[-1] == 1011.0


def test_max_interval() -> None:
    clock, fn = FakeClock(), Fn()
    r = make(fn, clock)
    r.run()
    r.tick()
    clock.t += 29.9
    r.tick()
    assert len(fn.calls) == 1
    clock.t += 0.1
    r.tick()
    assert len(fn.calls) == 2


def test_retry_after_failure_and_exception() -> None:
    clock, fn = FakeClock(), Fn(False)
    r = make(fn, clock)
    r.run()
    assert abs(r.tick() - 5.0) < 1e-9
    clock.t += 4.9
    r.tick()
    assert len(fn.calls) == 1
    clock.t += 0.1
    r.tick()
    assert len(fn.calls) == 2 and r.failures == 1

    def boom() -> bool:
        raise RuntimeError("x")

    r2 = BoundedFrequencyRunner(boom, min_interval=1, max_interval=30, retry_interval=2, clock=clock)
    r2.run()
    assert abs(r2.tick() - 2.0) < 1e-9 and r2.failures == 1


def test_retry_respects_min_interval() -> None:
    clock, fn = FakeClock(), Fn(False)
    fn.clock = clock
    r = BoundedFrequencyRunner(fn, min_interval=3.0, max_interval=30.0, retry_interval=1.0, clock=clock)
    r.run()
    assert abs(r.tick() - 3.0) < 1e-9
