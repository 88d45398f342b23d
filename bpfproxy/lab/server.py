"""A lab backend pod's servers: HTTP and UDP that answer with the pod's name and the client's address.

Place in the data flow: the far end. Runs inside a backend pod's namespace; what it answers shows
which backend the datapath chose and that the client's own address reached it (no SNAT).
Run: python -m bpfproxy.lab.server --name web-1 --http-port 8080 --udp-port 9000
"""

from __future__ import annotations

import argparse
import signal
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from types import FrameType


def answer(pod: str, client: tuple[str, int]) -> bytes:
    """The line every server answers: 'pod=NAME client=IP:PORT'."""
    return f"pod={pod} client={client[0]}:{client[1]}\n".encode()


class _ThreadingHTTPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


def _http_handler(pod: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = answer(pod, self.client_address)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def serve_udp(pod: str, port: int, stop: threading.Event) -> None:
    """Answer every datagram on port with the pod's name and the sender's address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            _, peer = sock.recvfrom(2048)
        except TimeoutError:
            continue
        sock.sendto(answer(pod, peer), peer)
    sock.close()


def main(argv: list[str] | None = None) -> int:
    """Serve HTTP and UDP until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="bpfproxy-lab-server")
    parser.add_argument("--name", required=True, help="pod name put in every answer")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--udp-port", type=int, default=9000)
    args = parser.parse_args(argv)

    stop = threading.Event()
    httpd = _ThreadingHTTPServer(("0.0.0.0", args.http_port), _http_handler(args.name))
    udp = threading.Thread(target=serve_udp, args=(args.name, args.udp_port, stop), daemon=True)
    udp.start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"{args.name}: http :{args.http_port} udp :{args.udp_port}", flush=True)
    httpd.serve_forever(poll_interval=0.2)
    udp.join(timeout=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
