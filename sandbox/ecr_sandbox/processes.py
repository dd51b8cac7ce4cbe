"""Start, watch and stop the world's processes; each runs in its own process group with its own log."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


class ProcessError(RuntimeError):
    """A world process failed to start, died, or did not become ready in time."""


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now; all sockets are held together so the ports are distinct."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log file (reads at most the last 256 KiB)."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - 256 * 1024))
            data = file.read()
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it when the thread that started it exits,
    # so a killed test run leaves no orphans behind.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class ManagedProcess:
    """One process of the world. ``log`` gets stderr (and stdout unless ``stdout_log`` is set)."""

    name: str
    executable: str
    pid: int
    log: Path
    stdout_log: Path | None = None
    _popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        stdout_log: Path | None = None,
        cwd: Path | None = None,
        detach: bool = False,
    ) -> ManagedProcess:
        """Start ``argv`` in a new session (its own process group).

        Unless ``detach``, the process gets SIGTERM when the calling *thread* exits, so start the world
        from a long-lived thread (pytest's main thread is).
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as files:
            stderr = files.enter_context(log.open("ab"))
            stdout = files.enter_context(stdout_log.open("ab")) if stdout_log else stderr
            try:
                popen = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=None if detach else _die_with_parent,
                )
            except OSError as error:
                raise ProcessError(f"{name}: cannot start {argv[0]}: {error}") from error
        return cls(name=name, executable=argv[0], pid=popen.pid, log=log, stdout_log=stdout_log, _popen=popen)

    def to_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "executable": self.executable,
            "pid": self.pid,
            "log": str(self.log),
            "stdout_log": str(self.stdout_log) if self.stdout_log else None,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ManagedProcess:
        """A handle on a process some other command started (``sandbox up``), found by its pid."""
        stdout_log = record.get("stdout_log")
        return cls(
            name=record["name"],
            executable=record["executable"],
            pid=int(record["pid"]),
            log=Path(record["log"]),
            stdout_log=Path(stdout_log) if stdout_log else None,
        )

    def alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return _is_running(self.pid, self.executable)

    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def signal_group(self, signum: int) -> None:
        # start_new_session made the process a group leader: its pgid is its pid.
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)

    def describe_failure(self, problem: str, lines: int = 60) -> str:
        code = self.exit_code()
        state = f"exited with {code}" if code is not None else ("running" if self.alive() else "gone")
        sections = [
            f"{self.name} {problem} (process {state}); last {lines} lines of {self.log}:",
            tail(self.log, lines),
        ]
        if self.stdout_log is not None:
            sections += [f"last {lines} lines of {self.stdout_log}:", tail(self.stdout_log, lines)]
        return "\n".join(sections)


def _is_running(pid: int, executable: str) -> bool:
    """True if ``pid`` is a live (not zombie) process running ``executable`` (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and cmdline.split(b"\0", 1)[0].decode(errors="replace") == executable


def wait_until(
    description: str,
    probe: Callable[[], T | None],
    *,
    process: ManagedProcess,
    timeout: float,
    also_watch: Iterable[ManagedProcess] = (),
) -> T:
    """Poll ``probe`` until it returns a value other than None (exceptions count as "not yet").

    Fails fast, with the process log, when ``process`` (or any of ``also_watch``) exits, and with the
    log and the last probe error on timeout.
    """
    watched = [process, *also_watch]
    deadline = time.monotonic() + timeout
    interval = 0.02
    last_error: BaseException | None = None
    while True:
        for watched_process in watched:
            if not watched_process.alive():
                raise ProcessError(watched_process.describe_failure(f"died while waiting for {description}"))
        try:
            result = probe()
        except Exception as error:
            last_error = error
        else:
            if result is not None:
                return result
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            raise ProcessError(
                process.describe_failure(f"not ready after {timeout:.0f}s: {description}{detail}")
            )
        time.sleep(interval)
        interval = min(interval * 1.5, 0.25)


def stop_all(processes: Sequence[ManagedProcess], timeout: float = 10.0) -> None:
    """SIGTERM every process group at once, then SIGKILL what is still alive after ``timeout``."""
    for process in processes:
        process.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(process.alive() for process in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in processes:
        process.signal_group(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(process.alive() for process in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
