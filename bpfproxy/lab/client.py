"""A lab client pod's traffic: HTTP requests or UDP datagrams to a service, answers tallied by backend.

Place in the data flow: the near end. Runs inside the client pod's namespace (the demo and tests
start it with nsenter) and prints one JSON summary: answers per backend pod, the client addresses
the backends saw, refusals and timeouts.
Run: python -m bpfproxy.lab.client http 10.96.0.10 80 --count 30
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass, field


@dataclass
class Tally:
    """What a burst of requests got back."""

    answers: dict[str, int] = field(default_factory=dict)
    """answers per backend pod name"""
    clients: list[str] = field(default_factory=list)
    """distinct client addresses (IP only) the backends reported"""
    refused: int = 0
    """requests refused at once (TCP RST or ICMP port unreachable)"""
    timeouts: int = 0
    """requests with no answer before the timeout"""
    errors: int = 0
    """other failures"""
    seconds: float = 0.0
    """wall time of the whole burst"""


def parse_answer(data: bytes) -> tuple[str, str]:
    """('web-1', '10.244.1.10') from b'pod=web-1 client=10.244.1.10:43210'."""
    fields = dict(part.split("=", 1) for part in data.decode().split())
    return fields["pod"], fields["client"].rsplit(":", 1)[0]


def http_once(addr: str, port: int, timeout: float) -> bytes:
    """One HTTP/1.0 GET on a new connection; the response body."""
    with socket.create_connection((addr, port), timeout=timeout) as sock:
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).split(b"\r\n\r\n", 1)[-1]


def udp_once(addr: str, port: int, timeout: float, sock: socket.socket | None) -> bytes:
    """One datagram and its answer, on sock (kept source port) or a new socket (new source port)."""
    own = sock is None
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.connect((addr, port))
        s.send(b"ping")
        return s.recv(2048)
    finally:
        if own:
            s.close()


def burst(mode: str, addr: str, port: int, *, count: int, timeout: float = 1.0, source_port: int = 0) -> Tally:
    """Send count requests (mode 'http' or 'udp'); with source_port, UDP keeps that source port."""
    answers: Counter[str] = Counter()
    clients: set[str] = set()
    tally = Tally()
    fixed: socket.socket | None = None
    if mode == "udp" and source_port:
        fixed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fixed.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        fixed.bind(("0.0.0.0", source_port))
    started = time.monotonic()
    for _ in range(count):
        try:
            data = http_once(addr, port, timeout) if mode == "http" else udp_once(addr, port, timeout, fixed)
            pod, client = parse_answer(data)
            answers[pod] += 1
            clients.add(client)
        except ConnectionRefusedError:
            tally.refused += 1
        except TimeoutError:
            tally.timeouts += 1
        except (OSError, ValueError, KeyError):
            tally.errors += 1
    if fixed is not None:
        fixed.close()
    tally.seconds = round(time.monotonic() - started, 3)
    tally.answers = dict(sorted(answers.items()))
    tally.clients = sorted(clients)
    return tally


def main(argv: list[str] | None = None) -> int:
    """Run one burst and print its tally as JSON."""
    parser = argparse.ArgumentParser(prog="bpfproxy-lab-client")
    parser.add_argument("mode", choices=["http", "udp"])
    parser.add_argument("addr")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--source-port", type=int, default=0, help="UDP: send every datagram from this port")
    args = parser.parse_args(argv)
    tally = burst(args.mode, args.addr, args.port, count=args.count, timeout=args.timeout, source_port=args.source_port)
    print(json.dumps(asdict(tally)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
