"""Frontend builders for plan and diff tests."""

from __future__ import annotations

from bpfproxy.controller.translate import BackendRef, Frontend


def fe(
    svc: str = "default/web",
    addr: str = "10.96.0.10",
    port: int = 80,
    *,
    backends: list[str] | None = None,
    terminating: list[str] | None = None,
    proto: int = 6,
    affinity: int = 0,
) -> Frontend:
    """A frontend with backends given as "ip:port" strings."""
    refs = [BackendRef(b.split(":")[0], int(b.split(":")[1]), False) for b in backends or []]
    refs += [BackendRef(b.split(":")[0], int(b.split(":")[1]), True) for b in terminating or []]
    return Frontend(
        service=svc, port_name="", name=f"{svc}:{port}/{'TCP' if proto == 6 else 'UDP'}", addr=addr,
        port=port, proto=proto, scope=0, backends=tuple(sorted(refs)), affinity_timeout=affinity,
        drop_no_ep=False,
    )
