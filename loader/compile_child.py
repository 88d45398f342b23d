"""The short-lived process that compiles the datapath with bcc and hands the program fds back.

Place in the data flow: loader.build.load_datapath starts `python -m bpfproxy.loader.compile_child`
with one end of a UNIX SOCK_SEQPACKET socketpair (--fd) and the request (pin dir, settings) as
JSON (--request). This process imports bcc, compiles bpf/bpf_tc.c (the maps are created or reused
at their pins, as in-process), then sends one message: JSON metadata (program names, compile
seconds, bcc's table layouts, its own peak RSS) with the program fds attached (SCM_RIGHTS), and
exits. On failure the message is {"error": ...} without fds. bcc/LLVM's ~250 MiB thus live and die
here, never in the agent.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from dataclasses import fields

from bpfproxy.loader.build import DatapathSettings, compile_in_process, table_layouts

#: the JSON key of the program names, in the order of the attached fds
KEY_PROGRAMS = "programs"


def settings_to_json(settings: DatapathSettings) -> dict[str, object]:
    """The settings as a JSON object (tuples become lists)."""
    out: dict[str, object] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def settings_from_json(obj: dict[str, object]) -> DatapathSettings:
    """Inverse of settings_to_json."""
    kwargs = dict(obj)
    kwargs["extra_cflags"] = tuple(str(x) for x in kwargs.get("extra_cflags", []))  # type: ignore[attr-defined]
    return DatapathSettings(**kwargs)  # type: ignore[arg-type]


def _peak_rss_kib() -> int:
    """This process's VmHWM in KiB (0 when unreadable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def serve(sock: socket.socket, pin_dir: str, settings: DatapathSettings) -> int:
    """Compile, send the result (or the error) on sock; the process exit code."""
    try:
        bpf, prog_fds, elapsed = compile_in_process(pin_dir, settings)
        names = sorted(prog_fds)
        meta = {
            KEY_PROGRAMS: names,
            "compile_seconds": elapsed,
            "layouts": table_layouts(bpf),
            "peak_rss_kib": _peak_rss_kib(),
        }
        socket.send_fds(sock, [json.dumps(meta).encode()], [prog_fds[n] for n in names])
        return 0
    except Exception as e:  # everything goes back to the parent, which raises DatapathBuildError
        sock.send(json.dumps({"error": str(e)}).encode())
        return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point: --fd N --request JSON."""
    parser = argparse.ArgumentParser(description="compile the bpfproxy datapath and send its program fds")
    parser.add_argument("--fd", type=int, required=True, help="our end of the socketpair")
    parser.add_argument("--request", required=True, help='JSON {"pin_dir": ..., "settings": {...}}')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    request = json.loads(args.request)
    sock = socket.socket(fileno=args.fd)
    try:
        return serve(sock, str(request["pin_dir"]), settings_from_json(request["settings"]))
    finally:
        sock.close()
        sys.stderr.flush()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip bcc's teardown: the maps stay pinned, the parent holds the programs
