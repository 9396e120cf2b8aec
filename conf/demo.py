"""`make demo`: two gunicorn servers on 127.0.0.1:8001/8002 and edgeproxy on :8080 in front.

Stops everything on Ctrl-C. Try: curl -i localhost:8080/  (run it twice: both servers answer)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PORTS = (8001, 8002)


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"demo: a process exited early (status {process.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"demo: nothing listens on 127.0.0.1:{port} after {timeout}s")


def main() -> int:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index, port in enumerate(PORTS):
            env = dict(os.environ, DEMO_SERVER="ab"[index])
            gunicorn = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                 "--chdir", str(HERE), "demo_app:app"],
                env=env,
            )  # fmt: skip
            processes.append(gunicorn)
            wait_for_port(port, gunicorn)
        proxy = subprocess.Popen(
            [sys.executable, "-m", "edgeproxy", "-c", str(HERE / "proxy.yaml")]
        )
        processes.append(proxy)
        wait_for_port(8080, proxy)
        print("\ndemo: edgeproxy listens on http://127.0.0.1:8080 -- try: curl -i localhost:8080/")
        print("demo: Ctrl-C stops edgeproxy and both gunicorn servers\n", flush=True)
        return proxy.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    raise SystemExit(main())
