"""The node agent: source -> proxier (trackers, runner, translate, plan, diff, sync) -> pinned maps; devices -> tc.

Place in the data flow: the wiring. The source is a YAML file/directory (FileSource) or the
Kubernetes API (KubeSource: list + watch). The datapath compile runs in a child process from the
start (the CLI starts it before importing this module) while the source lists and the proxier
writes the maps, which are pinned before bcc runs (reused when already pinned); then the agent
attaches the programs to every pod device as they come and go, and runs the source and the
proxier until SIGTERM or SIGINT. On exit it leaves the programs and maps in place, so traffic
keeps flowing while no agent runs and a restarted agent rewrites only what changed.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from bpfproxy.controller.health import ProxierHealth, serve_endpoints
from bpfproxy.controller.metrics import HttpServer, ProxierMetrics, svcstat_reader
from bpfproxy.controller.plan import Limits
from bpfproxy.controller.proxier import Proxier, tune_gc
from bpfproxy.controller.source_file import FileSource
from bpfproxy.controller.source_kube import KubeSource, new_api_client
from bpfproxy.controller.sync import MapsWriter
from bpfproxy.controller.translate import NodeConfig
from bpfproxy.loader.build import DatapathSettings, PendingDatapath, start_compile
from bpfproxy.loader.maps import DatapathMaps

if TYPE_CHECKING:
    from bpfproxy.loader.attach import Attacher
    from bpfproxy.loader.devices import DeviceWatcher

log = logging.getLogger("bpfproxy.agent")


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent is started with."""

    source_path: str
    """file or directory of Service / EndpointSlice YAML (source_kind "file")"""
    pin_dir: str
    """bpffs directory of the maps"""
    pod_devices: tuple[str, ...]
    """globs of pod devices (host side of each pod's veth)"""
    node_name: str = ""
    """this node's name"""
    node_ips: tuple[str, ...] = ()
    """this node's addresses"""
    cluster_cidrs: tuple[str, ...] = ()
    """pod CIDRs"""
    service_cidrs: tuple[str, ...] = ()
    """service CIDRs: an address inside that no service owns is dropped"""
    nodeport_addresses: tuple[str, ...] = ()
    """CIDRs selecting the node IPs NodePorts answer on (empty: every node IP)"""
    min_sync_period: float = 1.0
    """seconds between two syncs at least"""
    full_sync_period: float = 60.0
    """seconds between full resyncs at most"""
    settings: DatapathSettings = field(default_factory=DatapathSettings)
    """map capacities of the datapath build"""
    source_kind: str = "file"
    """"file" (source_path) or "kube" (list+watch of the Kubernetes API)"""
    kubeconfig: str | None = None
    """kube: kubeconfig file; None = the in-cluster service account"""
    kube_server_timeout: int = 300
    """kube: seconds the API server keeps one watch open (the client read timeout is a few more)"""
    metrics_bind_address: str = "127.0.0.1:10249"
    """HOST:PORT of /metrics ("" = no metrics server)"""
    healthz_bind_address: str = "0.0.0.0:10256"
    """HOST:PORT of /healthz and /livez ("" = no health server)"""


def run_agent(config: AgentConfig, compiling: PendingDatapath | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status. The datapath stays in place.

    compiling: the datapath compile the caller already started (start_compile with config's pin dir
    and settings; the CLI starts it before importing this module), else it starts here.
    """
    if compiling is None:
        compiling = start_compile(config.pin_dir, config.settings)
    try:
        return _run(config, compiling)
    finally:
        compiling.cancel()  # a no-op once the programs were received
        gc.enable()  # the CLI pauses it over the imports; _run enables it once started (an early return did not)


def _run(config: AgentConfig, compiling: PendingDatapath) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal received signal=%s: stopping, datapath left in place", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    api_client = None
    if config.source_kind == "kube":
        try:  # before anything is loaded: a bad kubeconfig is a clear error, not a half-started agent
            api_client = new_api_client(config.kubeconfig)
        except Exception as e:
            where = config.kubeconfig or "in-cluster service account"
            log.error("cannot configure the Kubernetes client kubeconfig=%s error=%s", where, e)
            return 1

    settings = config.settings
    limits = Limits(lb_entries=settings.lb_map_max, backends=settings.backend_map_max, svc_ids=settings.svc_id_max)
    node = NodeConfig(
        node_name=config.node_name,
        node_ips=config.node_ips,
        cluster_cidrs=config.cluster_cidrs,
        service_cidrs=config.service_cidrs,
        nodeport_addresses=config.nodeport_addresses,
    )
    # start_compile pins every map before bcc begins: the proxier writes them while it compiles
    compiling.maps_ready()
    maps = DatapathMaps(config.pin_dir, settings.size_defines())
    try:
        maps.set_service_cidrs(config.service_cidrs)
    except ValueError as e:
        log.error("bad --service-cidr: %s", e)
        maps.close()
        return 1
    # the CLI paused the cyclic GC before the imports (kubernetes alone allocates ~100k objects that
    # live as long as the process): keep them out of every later collection, then collect normally
    gc.freeze()
    tune_gc()
    gc.enable()
    metrics, health = ProxierMetrics(), ProxierHealth(2 * config.full_sync_period)
    proxier = Proxier(
        MapsWriter(maps),
        node=node,
        limits=limits,
        min_sync_period=config.min_sync_period,
        max_sync_period=config.full_sync_period,
        metrics=metrics,
        health=health,
    )
    metrics.add_frontend_stats(lambda: proxier.frontend_stats(svcstat_reader(maps)))
    source: FileSource | KubeSource
    if api_client is not None:
        source = KubeSource(
            proxier, node_name=config.node_name, server_timeout=config.kube_server_timeout, api_client=api_client
        )
        source_text = f"kube kubeconfig={config.kubeconfig or 'in-cluster'}"
    else:
        source = FileSource(config.source_path, proxier)
        source_text = f"file:{config.source_path}"
    # the source lists and the proxier writes the maps while bcc compiles in its child process (~1.2 s
    # each): only attaching to devices waits for the programs
    threads = [
        threading.Thread(target=source.run, args=(stop,), name="source", daemon=True),
        threading.Thread(target=proxier.run, args=(stop,), name="proxier", daemon=True),
    ]
    for t in threads:
        t.start()
    # pyroute2 (~0.1 s to import) is loaded only now: nothing before attaching needs it, and the
    # import overlaps the list's waits for the API server instead of delaying the list's start
    from bpfproxy.loader.attach import Attacher
    from bpfproxy.loader.devices import DeviceWatcher

    servers = serve_endpoints(metrics=metrics, health=health, metrics_bind=config.metrics_bind_address,
                              healthz_bind=config.healthz_bind_address)
    try:
        datapath = compiling.result()
    except BaseException:
        _stop(stop, threads, servers, maps)
        raise
    attacher = Attacher(datapath.prog_fds)
    watcher = DeviceWatcher(
        list(config.pod_devices),
        on_add=lambda ifname, ifindex: _attach(attacher, ifname, ifindex),
        on_remove=lambda ifname, ifindex: attacher.forget(ifname),
    )
    threads.append(threading.Thread(target=watcher.run, args=(stop,), name="devices", daemon=True))
    threads[-1].start()
    log.info(
        "agent started pin_dir=%s pod_devices=%s source=%s compile_seconds=%.2f",
        config.pin_dir, ",".join(config.pod_devices), source_text, datapath.compile_seconds,
    )  # fmt: skip
    _announce_ready(proxier, watcher, stop)
    stop.wait()
    _stop(stop, threads, servers, maps)
    log.info("agent stopped: programs and maps left in place pin_dir=%s", config.pin_dir)
    return 0


def _stop(
    stop: threading.Event, threads: list[threading.Thread], servers: list[HttpServer], maps: DatapathMaps
) -> None:
    """End the threads and servers, close the maps (the datapath itself stays)."""
    stop.set()
    for t in threads:
        t.join(timeout=5)
    for server in servers:
        server.close()
    maps.close()


def _attach(attacher: Attacher, ifname: str, ifindex: int) -> None:
    attached = attacher.attach_pod_device(ifname, ifindex)
    log.info("attached device=%s programs=%s", ifname, ",".join(f"{a.direction}:{a.name}" for a in attached))


def _announce_ready(proxier: Proxier, watcher: DeviceWatcher, stop: threading.Event) -> None:
    """Log 'agent ready' once the first sync is written and the devices are attached."""
    for done in (proxier.first_synced, watcher.synced):
        while not done.wait(0.1):
            if stop.is_set():
                return
    applied = proxier.applied
    frontends = len(applied.frontends) if applied else 0
    log.info("agent ready frontends=%d devices=%d", frontends, len(watcher.known()))
