"""The lab's network: a node namespace, pod namespaces on veths, servers, the agent, a YAML directory.

Place in the data flow: scaffolding around the real agent. Pods reach the node through veth pairs
whose host sides (named bpx<run>p<N>) are the agent's --pod-devices; the agent runs in the node
namespace on a YAML directory the lab writes. Every name carries the run id; `destroy` ends only
the processes the lab started (by PID), deletes its namespaces and removes its pins, and is safe
to call twice or after a half-built lab.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bpfproxy.lab import netns
from bpfproxy.lab.client import Tally

#: where every lab keeps its state, manifests and logs
LAB_ROOT = Path("/run/bpfproxy-lab")
#: pod addresses are POD_NET.<10 + n>
POD_NET = "10.244.1"
#: the lab's pod CIDR (the agent's --cluster-cidr)
CLUSTER_CIDR = "10.244.0.0/16"
#: service CIDR of the lab: an address inside that no service owns is dropped
SERVICE_CIDR = "10.96.0.0/16"
#: the lab's node name (nodeName of local endpoints)
NODE_NAME = "lab-node"


@dataclass
class Pod:
    """One pod namespace and its veth."""

    name: str
    """pod name, also what its servers answer"""
    ns: str
    """network namespace"""
    ip: str
    """pod address (/32 on eth0)"""
    host_dev: str
    """host side of the veth, in the node namespace"""
    server_pid: int = 0
    """pid of its HTTP/UDP server (0: none)"""


@dataclass
class Lab:
    """A built lab; its state is saved in LAB_ROOT/<rid>/state.json."""

    rid: str
    """run id in every name"""
    node_ns: str
    """the node namespace, where the agent runs"""
    pin_dir: str
    """the agent's --pin-dir"""
    pods: dict[str, Pod] = field(default_factory=dict)
    """pods by name"""
    agent_pid: int = 0
    """pid of the running agent (0: none)"""
    next_pod: int = 0
    """index of the next pod created"""

    # -- paths -------------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        """The lab's folder."""
        return LAB_ROOT / self.rid

    @property
    def manifests(self) -> Path:
        """The YAML directory the agent reads."""
        return self.dir / "manifests"

    @property
    def agent_log(self) -> Path:
        """The agent's stdout and stderr."""
        return self.dir / "agent.log"

    @property
    def pod_glob(self) -> str:
        """The --pod-devices glob matching every pod veth of this lab."""
        return f"bpx{self.rid}p*"

    # -- build -------------------------------------------------------------------------------
    @classmethod
    def create(cls, pods: Sequence[str] = ("client", "web-1", "web-2", "web-3"), *, servers: bool = True) -> Lab:
        """Build the node namespace and the given pods (servers in all but 'client'); destroy on failure."""
        rid = netns.run_id()
        lab = cls(rid=rid, node_ns=f"bpx-{rid}-node", pin_dir=f"/sys/fs/bpf/bpfproxy-lab-{rid}")
        lab.dir.mkdir(parents=True, exist_ok=True)
        lab.manifests.mkdir(exist_ok=True)
        lab.save()
        try:
            netns.create(lab.node_ns)
            node = lab.node_ns
            netns.sh(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns=node)
            for key in ("all", "default"):
                netns.sh(["sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0"], ns=node)
            for name in pods:
                lab.add_pod(name, server=servers and name != "client")
        except BaseException:
            lab.destroy()
            raise
        return lab

    def add_pod(self, name: str, *, server: bool = True) -> Pod:
        """Create a pod namespace wired to the node by a veth (and start its server)."""
        index = self.next_pod
        self.next_pod += 1
        pod = Pod(
            name=name, ns=f"bpx-{self.rid}-{name}", ip=f"{POD_NET}.{10 + index}", host_dev=f"bpx{self.rid}p{index}"
        )
        self.pods[name] = pod
        self.save()
        netns.wire_pod(self.node_ns, pod.ns, host_dev=pod.host_dev, ip=pod.ip)
        if server:
            pod.server_pid = self._spawn(
                pod.ns,
                [sys.executable, "-m", "bpfproxy.lab.server", "--name", name],
                self.dir / f"{name}.log",
            )
            self.save()
            self._wait_listening(pod)
        return pod

    def remove_pod(self, name: str) -> None:
        """Stop a pod's server and delete its namespace (its veth vanishes from the node)."""
        pod = self.pods.pop(name)
        _end(pod.server_pid)
        netns.delete(pod.ns)
        self.save()

    # -- agent -------------------------------------------------------------------------------
    def start_agent(self, extra: Sequence[str] = ()) -> int:
        """Start the agent in the node namespace on the manifests directory; returns its pid."""
        argv = [
            sys.executable, "-m", "bpfproxy", "agent",
            "--source", f"file:{self.manifests}",
            "--pod-devices", self.pod_glob,
            "--pin-dir", self.pin_dir,
            "--node-name", NODE_NAME,
            "--cluster-cidr", CLUSTER_CIDR,
            "--service-cidr", SERVICE_CIDR,
            *extra,
        ]  # fmt: skip
        self.agent_pid = self._spawn(self.node_ns, argv, self.agent_log)
        self.save()
        return self.agent_pid

    def stop_agent(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the agent and wait for it; returns its exit status."""
        pid, self.agent_pid = self.agent_pid, 0
        self.save()
        return _end(pid, sig, timeout)

    def wait_agent_ready(self, timeout: float = 30.0, *, since: int = 0) -> None:
        """Wait until the agent's log says its first sync is written (after byte offset since)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.agent_log.read_text() if self.agent_log.exists() else ""
            if "agent ready" in text[since:]:
                return
            if self.agent_pid and not _alive(self.agent_pid):
                raise RuntimeError(f"agent exited early; its log:\n{text[since:]}")
            time.sleep(0.05)
        raise TimeoutError(f"agent not ready after {timeout} s; its log:\n{self.agent_log.read_text()}")

    def agent_log_size(self) -> int:
        """Current size of the agent log (an offset for wait_agent_ready)."""
        return self.agent_log.stat().st_size if self.agent_log.exists() else 0

    # -- manifests ---------------------------------------------------------------------------
    def write_manifest(self, filename: str, objects: Sequence[dict[str, Any]] | str) -> Path:
        """Write one YAML file of the manifests directory atomically (raw text is written as is)."""
        path = self.manifests / filename
        tmp = path.with_name(f".{filename}.tmp")
        text = objects if isinstance(objects, str) else yaml.safe_dump_all(list(objects), sort_keys=False)
        tmp.write_text(text)
        os.replace(tmp, path)
        return path

    def remove_manifest(self, filename: str) -> None:
        """Delete one YAML file of the manifests directory."""
        (self.manifests / filename).unlink(missing_ok=True)

    # -- traffic and commands ------------------------------------------------------------------
    def client(
        self, mode: str, addr: str, port: int, *, count: int = 30, source_port: int = 0, pod: str = "client"
    ) -> Tally:
        """Run a burst of requests from a pod to addr:port; the tally of answers."""
        argv = [sys.executable, "-m", "bpfproxy.lab.client", mode, addr, str(port), "--count", str(count)]
        if source_port:
            argv += ["--source-port", str(source_port)]
        out = netns.sh(argv, ns=self.pods[pod].ns, timeout=120)
        return Tally(**json.loads(out))

    def bpfproxy(self, args: Sequence[str], *, check: bool = True) -> str:
        """Run a bpfproxy command in the node namespace against this lab's pins; its stdout."""
        return netns.sh(
            [sys.executable, "-m", "bpfproxy", *args, "--pin-dir", self.pin_dir], ns=self.node_ns, check=check
        )

    # -- teardown ----------------------------------------------------------------------------
    def destroy(self) -> None:
        """End the lab's processes (by pid), delete its namespaces and pins and its folder."""
        _end(self.agent_pid)
        for pod in self.pods.values():
            _end(pod.server_pid)
            netns.delete(pod.ns)
        if netns.exists(self.node_ns):
            netns.sh(
                [sys.executable, "-m", "bpfproxy", "cleanup", "--pin-dir", self.pin_dir], ns=self.node_ns, check=False
            )
            netns.delete(self.node_ns)
        shutil.rmtree(self.pin_dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- state -------------------------------------------------------------------------------
    def save(self) -> None:
        """Record the lab so `bpfproxy lab down` finds it from another process."""
        state = asdict(self)
        (self.dir / "state.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, rid: str) -> Lab:
        """The lab recorded under rid."""
        state = json.loads((LAB_ROOT / rid / "state.json").read_text())
        pods = {k: Pod(**v) for k, v in state.pop("pods").items()}
        return cls(pods=pods, **state)

    @staticmethod
    def recorded() -> list[str]:
        """Run ids of every lab recorded on this machine."""
        return sorted(p.parent.name for p in LAB_ROOT.glob("*/state.json"))

    # -- internals ---------------------------------------------------------------------------
    def _spawn(self, ns: str, argv: Sequence[str], log: Path) -> int:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [*netns.ns_prefix(ns), *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return proc.pid

    def _wait_listening(self, pod: Pod, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ":8080" in netns.sh(["ss", "-Hltn"], ns=pod.ns):
                return
            time.sleep(0.05)
        raise TimeoutError(f"server of pod {pod.name} did not start; see {self.dir / (pod.name + '.log')}")


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
    return waited == 0


def _end(pid: int, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
    """Signal a process we started (by pid), wait for it, SIGKILL after timeout; its exit status."""
    if not pid:
        return None
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waited, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (another process started it): poll for its end
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            time.sleep(0.05)
            continue
        if waited:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    try:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        return None
