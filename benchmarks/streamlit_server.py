"""Start the real dashboard (`streamlit run`) on a free loopback port, for browser tests and load runs."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
# Without these, Chromium keeps trying to reach Google's services, which a closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str
    pid: int
    started: float  # time.monotonic() when the process was launched

    def resident_mb(self) -> float:
        """The server process's resident memory (VmRSS) now, in MB."""
        return self._status_mb("VmRSS")

    def peak_mb(self) -> float:
        """The server process's peak resident memory since it started (VmHWM), in MB: what a box's
        memory limit meets, including the moments between two samples of resident_mb."""
        return self._status_mb("VmHWM")

    def _status_mb(self, field: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} for the server process")


@contextlib.contextmanager
def streamlit_server(timeout_s: float = 90, app: Path = ROOT / "streamlit_app.py", env: dict[str, str] | None = None):
    """Yields the running dashboard, or another Streamlit script (URL, process id, launch time);
    stops it afterwards. env: variables set for the server on top of this process's (a deployment's settings)."""
    started = time.monotonic()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("streamlit did not start: "
                                       + process.stdout.read().decode(errors="replace")[-2000:]) from None
                time.sleep(0.5)
        yield Server(url, process.pid, started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
