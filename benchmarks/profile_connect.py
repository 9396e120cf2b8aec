"""Instructions per request of a real edgeproxy worker in front of gunicorn's sync workers,
which close every connection: the path where each request pays a new upstream connect.

Runs edgeproxy (one worker) under callgrind twice, with a small and a larger number of
sequential keep-alive requests from one client, and prints the difference per request, so
start-up and shutdown cancel out. Only the worker's own instructions are counted (the
kernel's are not: `strace -c` and `perf` say where those go).

    make compile
    python benchmarks/profile_connect.py --root build/compiled            # the compiled build
    python benchmarks/profile_connect.py --keep /tmp/cg                   # keep the profiles
    callgrind_annotate --inclusive=yes /tmp/cg/callgrind.800.<pid> | head -60

Needs valgrind and gunicorn. Deterministic enough (PYTHONHASHSEED=0) to compare one change
against another on a busy machine, where req/s are not.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from harness import free_port, wait_until

HOST = "127.0.0.1"
APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: profile\r\n\r\n"


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    def listening() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"exited before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(f"something listening on {port}", listening, timeout)


def send_requests(port: int, count: int) -> None:
    """`count` requests one after another on one keep-alive connection."""
    with socket.create_connection((HOST, port), timeout=30) as sock:
        for _ in range(count):
            sock.sendall(REQUEST)
            received = b""
            while not received.endswith(b"\r\n\r\nok"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit(f"connection closed after {received!r}")
                received += chunk
            if not received.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"unexpected answer {received[:80]!r}")


def worker_instructions(out_dir: Path, label: str, master_pid: int) -> int:
    """Total instructions of the worker's profile (the file whose pid is not the master's)."""
    counts = []
    for path in out_dir.glob(f"callgrind.{label}.*"):
        if path.name.endswith(f".{master_pid}"):
            continue
        text = path.read_text(errors="replace")
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
        if found:
            counts.append(int(found.group(1)))
    if len(counts) != 1:
        raise SystemExit(f"expected one worker profile for {label}, found {len(counts)}")
    return counts[0]


def profile(root: Path, backend_port: int, count: int, out_dir: Path) -> int:
    port = free_port()
    config = {
        "workers": 1,
        "pid_file": str(out_dir / f"edgeproxy.{count}.pid"),
        "temp_path": str(out_dir),
        "access_log": {"path": "/dev/null", "format": "off"},
        "error_log": {"path": "stderr", "level": "warning"},
        "upstreams": {"backend": {"keepalive": 32, "servers": [f"{HOST}:{backend_port}"]}},
        "servers": [
            {"listen": [f"{HOST}:{port}"], "locations": [{"path": "/", "proxy_pass": "backend"}]}
        ],
    }
    conf = out_dir / f"edgeproxy.{count}.yaml"
    conf.write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(root))
    argv = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out_dir}/callgrind.{count}.%p",
        sys.executable,
        "-m",
        "edgeproxy",
        "-c",
        str(conf),
    ]
    proc = subprocess.Popen(argv, cwd=root, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, timeout=120)
        send_requests(port, count)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    return worker_instructions(out_dir, str(count), proc.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=800)
    parser.add_argument("--keep", type=Path, help="write the profiles here")
    args = parser.parse_args()
    out_dir = args.keep or Path(tempfile.mkdtemp(prefix="profile-connect-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "profile_app.py").write_text(APP)
    backend_port = free_port()
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class", "sync",
         "--bind", f"{HOST}:{backend_port}", "--chdir", str(out_dir), "--log-level",
         "warning", "profile_app:app"],
    )  # fmt: skip
    try:
        wait_for_port(backend_port, gunicorn, timeout=30)
        small = profile(args.root.resolve(), backend_port, args.small, out_dir)
        large = profile(args.root.resolve(), backend_port, args.large, out_dir)
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)
    per_request = (large - small) / (args.large - args.small)
    print(f"{per_request:,.0f} instructions per request ({small:,} for {args.small}, "
          f"{large:,} for {args.large}; profiles in {out_dir})")  # fmt: skip


if __name__ == "__main__":
    main()
