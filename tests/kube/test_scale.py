"""10,000 Services and 10,000 EndpointSlices of 10 endpoints through KubeSource: correctness at scale.

Not timed (tests never assert wall-clock time); the seconds are printed. `python -m kube.scale`
(from tests/) measures the same list with the fake server in its own process.
"""

from __future__ import annotations

import threading
import time

from bpfproxy.controller.source_kube import KubeSource
from kube.fakeapi import FakeApiServer
from kube.scale import Counter, build


def test_cold_list_of_10k_services_and_100k_endpoints(fake: FakeApiServer, kubeconfig: str) -> None:
    fake.load(build(10_000, 10))
    counter = Counter()
    source = KubeSource(counter, kubeconfig=kubeconfig)
    stop = threading.Event()
    started = time.perf_counter()
    thread = threading.Thread(target=source.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert counter.done.wait(120), "the initial lists did not complete"
        seconds = time.perf_counter() - started
        assert counter.objects == {"Service": 10_000, "EndpointSlice": 10_000}
        assert counter.endpoints == 100_000
        # ten pages of 1000 per kind, each resumed with its continue token
        assert len(fake.list_requests("Service")) == 10
        # a change after the list arrives through the watch, alone
        fake.wait_watching(2)
        fake.delete("EndpointSlice", "scale", "svc-7-abcde")
        deadline = time.monotonic() + 10
        while counter.objects["EndpointSlice"] != 10_001 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert counter.objects == {"Service": 10_000, "EndpointSlice": 10_001}
        print(f"cold list of 10k services + 100k endpoints (fake server in-process): {seconds:.2f} s")
    finally:
        stop.set()
        thread.join(10)
