"""The harness's side of a benchmark worker: a ``worker.py`` process for one runtime, driven through
JSON lines on its stdin and a pipe back (``Worker.call``); a crash or a hang is a ``WorkerError``
carrying the tail of the worker's log."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")


class WorkerError(Exception):
    """The worker process died or timed out, or reported a failure (``error``: "Type: message")."""


class Worker:
    """A ``worker.py`` process for one runtime, talked to through JSON lines."""

    def __init__(self, runtime: str, env: dict[str, str], log: Path) -> None:
        self.runtime = runtime
        self.log_path = log
        rfd, wfd = os.pipe()
        with open(log, "wb") as logf:
            self.proc = subprocess.Popen([sys.executable, str(WORKER), str(wfd)], stdin=subprocess.PIPE,
                                         stdout=logf, stderr=subprocess.STDOUT, pass_fds=(wfd,), env=env)
        os.close(wfd)
        self.fd = rfd
        self.buf = b""
        self.peak_rss_kb: int | None = None

    def call(self, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._died()) from None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready = select.select([self.fd], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                self.kill()
                raise WorkerError(f"timed out after {timeout:g} s ({msg['cmd']})")
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise WorkerError(self._died())
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        reply = json.loads(line)
        self.peak_rss_kb = reply.get("rss_kb", self.peak_rss_kb)
        if not reply.get("ok"):
            raise WorkerError(reply.get("error") or "unknown failure")
        return reply

    def _died(self) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        how = f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return f"worker process died ({how}): {self.log_tail()}"

    def log_tail(self, n: int = 600) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return text[-n:].replace("\n", " | ")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call({"cmd": "exit"}, timeout=30)
            except WorkerError:
                pass
        self.kill()
        os.close(self.fd)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
