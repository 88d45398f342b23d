"""Scale objects for the Kubernetes source: N Services with one EndpointSlice of E endpoints each.

Place in the data flow: test and benchmark input. `build()` makes objects shaped like a real
cluster's (kubectl get -o json); `python -m kube.scale` (run from tests/) serves them from a fake API
server in its own process and measures KubeSource's cold list (wall seconds, this process's CPU
seconds, peak RSS), so the figure is our client's cost and not the fake server's.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any


def service_obj(i: int, ns: str = "scale") -> dict[str, Any]:
    """Service svc-I with a ClusterIP in 10.96.0.0/12 and two ports."""
    ip = f"10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256}"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"svc-{i}", "namespace": ns, "uid": f"00000000-0000-4000-8000-{i:012d}",
            "creationTimestamp": "2024-01-01T00:00:00Z", "labels": {"app": f"svc-{i}"},
        },
        "spec": {
            "type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster", "sessionAffinity": "None",
            "selector": {"app": f"svc-{i}"},
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090},
            ],
        },
        "status": {"loadBalancer": {}},
    }  # fmt: skip


def slice_obj(i: int, endpoints: int, ns: str = "scale", node_count: int = 100) -> dict[str, Any]:
    """EndpointSlice svc-I-abcde of `endpoints` ready endpoints in 10.0.0.0/8 spread over nodes."""
    eps = []
    for j in range(endpoints):
        n = i * endpoints + j
        eps.append({
            "addresses": [f"10.{1 + n // 65536}.{(n // 256) % 256}.{n % 256}"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": f"node-{n % node_count}",
            "zone": f"zone-{n % 3}",
            "targetRef": {"kind": "Pod", "name": f"svc-{i}-pod-{j}", "namespace": ns, "uid": f"pod-{n}"},
        })  # fmt: skip
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc-{i}-abcde", "namespace": ns, "generateName": f"svc-{i}-",
            "labels": {"kubernetes.io/service-name": f"svc-{i}",
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": f"svc-{i}", "uid": f"svc-uid-{i}",
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "metrics", "port": 9090, "protocol": "TCP"}],
    }  # fmt: skip


def build(services: int = 10_000, endpoints: int = 10) -> list[dict[str, Any]]:
    """services Services, each with one slice of `endpoints` endpoints."""
    out: list[dict[str, Any]] = []
    for i in range(services):
        out.append(service_obj(i))
        out.append(slice_obj(i, endpoints))
    return out


class Counter:
    """A SourceHandler that counts objects and endpoints and notes when both kinds are synced."""

    def __init__(self) -> None:
        self.objects: dict[str, int] = {}
        self.endpoints = 0
        self.synced: set[str] = set()
        self.done = threading.Event()

    def on_object(self, kind: str, key: str, obj: dict[str, Any] | None) -> None:
        self.objects[kind] = self.objects.get(kind, 0) + 1
        if obj is not None and kind == "EndpointSlice":
            self.endpoints += len(obj.get("endpoints") or ())

    def on_synced(self, kind: str) -> None:
        self.synced.add(kind)
        if {"Service", "EndpointSlice"} <= self.synced:
            self.done.set()


def main() -> int:
    """Serve build() from a fake API server process; print KubeSource's cold-list figures."""
    from bpfproxy.controller.source_kube import KubeSource

    services = int(os.environ.get("SERVICES", "10000"))
    endpoints = int(os.environ.get("ENDPOINTS", "10"))
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = os.path.join(tmp, "kubeconfig")
        server = subprocess.Popen(
            [sys.executable, "-m", "kube.fakeapi", "--scale", f"{services}:{endpoints}", "--kubeconfig", kubeconfig],
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            print(server.stdout.readline().strip())
            counter = Counter()
            source = KubeSource(counter, kubeconfig=kubeconfig)
            stop = threading.Event()
            wall, cpu = time.perf_counter(), time.process_time()
            t = threading.Thread(target=source.run, args=(stop,), daemon=True)
            t.start()
            counter.done.wait(120)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            stop.set()
            t.join(5)
        finally:
            server.terminate()
            server.wait(10)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"kube cold list services={counter.objects.get('Service', 0)} slices={counter.objects.get('EndpointSlice', 0)} "
        f"endpoints={counter.endpoints} wall_seconds={wall:.3f} client_cpu_seconds={cpu:.3f} peak_rss_mib={rss:.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
