"""A real `flowstudio serve` subprocess on a free loopback port, and its memory as Linux sees it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flowstudio_command() -> list[str]:
    """The installed `flowstudio` script next to this interpreter, else `python -m`."""
    script = Path(sys.executable).parent / "flowstudio"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "flowstudio.cli"]


class ServeProcess:
    """`flowstudio serve [--no-worker]` with the given settings (FLOWSTUDIO_* variables).

    `start()` returns the seconds from spawning the process to `/readyz` answering 200.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        settings: dict[str, str] | None = None,
        worker: bool = True,
        log_path: Path | None = None,
        ready_timeout: float = 180.0,
        poll_interval: float = 0.02,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = log_path or data_dir / "serve.log"
        self.worker = worker
        self.ready_timeout = ready_timeout
        self.poll_interval = poll_interval
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTUDIO_")}
        env.update({"FLOWSTUDIO_DATA_DIR": str(data_dir), "FLOWSTUDIO_ENVIRONMENT": "development"})
        env.update(settings or {})
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = False
        self._log = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> float:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        command = [*flowstudio_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if not self.worker:
            command.append("--no-worker")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.ready_timeout
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"flowstudio serve exited early; see {self.log_path}")
                try:
                    if http.get(f"{self.base}/readyz").status_code == 200:
                        return time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                time.sleep(self.poll_interval)
        self.stop()
        raise RuntimeError(f"flowstudio serve was not ready in time; see {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (graceful: the worker finishes its jobs), SIGKILL after 30 s.

        uvicorn re-raises the captured SIGTERM after its shutdown: -15 is a clean stop too."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.killed = True
                    self.proc.kill()
                    self.proc.wait(10)
            code = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def stopped_cleanly(self) -> bool:
        code = self.proc.returncode if self.proc is not None else None
        return (
            not self.killed
            and code in (0, -signal.SIGTERM)
            and "Application shutdown complete" in self.log_text()
        )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# -- memory ------------------------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/<pid>/task/<tid>/children)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def tree_rss_kib(pid: int) -> int:
    return sum(_status_kib(p, "VmRSS") for p in process_tree(pid))


def reset_peak(pid: int) -> bool:
    """Reset VmHWM (peak RSS) of the process tree: writing 5 to clear_refs (Linux >= 4.0)."""
    ok = True
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            ok = False
    return ok


def tree_hwm_kib(pid: int) -> int:
    return sum(_status_kib(p, "VmHWM") for p in process_tree(pid))


class RssSampler:
    """Samples the RSS of a process tree every `interval` s in a thread; `peak_kib` is the
    highest sum seen, next to the kernel's own peak (VmHWM, reset when sampling starts)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self.hwm_reset = False
        self.hwm_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(tree_rss_kib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.hwm_reset = reset_peak(self.pid)
        self.start_kib = tree_rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.end_kib = tree_rss_kib(self.pid)
        self.hwm_kib = tree_hwm_kib(self.pid)

    @property
    def peak_kib(self) -> int:
        return max([*self.samples, self.hwm_kib if self.hwm_reset else 0])

    def summary(self) -> dict[str, float]:
        mib = 1024
        return {
            "start_mib": round(self.start_kib / mib, 1),
            "peak_sampled_mib": round(max(self.samples, default=0) / mib, 1),
            "peak_hwm_mib": round(self.hwm_kib / mib, 1) if self.hwm_reset else None,
            "peak_mib": round(self.peak_kib / mib, 1),
            "end_mib": round(self.end_kib / mib, 1),
            "samples": len(self.samples),
        }
