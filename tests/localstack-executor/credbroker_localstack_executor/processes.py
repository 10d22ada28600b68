"""Process hygiene for host-mode Lambda environments.

Every `bootstrap` is started from ONE long-lived thread (the spawner), in a process group of
its own, with a parent-death signal:

- Linux delivers the parent-death signal when the *thread* that forked the child exits, not the
  process. LocalStack creates environments on short-lived threads, so spawning from those
  would kill the function as soon as that thread ends. The spawner thread lives as long as
  LocalStack does: if LocalStack is SIGKILLed, the kernel kills every bootstrap.
- Its own process group lets `stop()` and the exit hook kill whatever the bootstrap started.
- An `atexit` hook kills all groups that are still registered when LocalStack exits normally
  (SIGTERM included).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

LOG = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_SETPRIV = shutil.which("setpriv")


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Spawner:
    """Runs every `subprocess.Popen` on one long-lived daemon thread."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen], Future]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._groups: dict[int, subprocess.Popen] = {}
        self._thread = threading.Thread(target=self._run, name="credbroker-host-spawner", daemon=True)
        self._thread.start()
        atexit.register(self.kill_all)

    def _run(self) -> None:
        while True:
            make, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(make())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                future.set_exception(e)

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str) -> subprocess.Popen:
        """Starts `argv` (stdout+stderr merged into one pipe) in its own process group."""
        if _SETPRIV:
            # setpriv sets the parent-death signal and then execs: same pid, no Python code
            # between fork and exec.
            full = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
            preexec = None
        else:
            full = list(argv)
            preexec = _set_pdeathsig

        def make() -> subprocess.Popen:
            proc = subprocess.Popen(
                full,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=preexec,
                close_fds=True,
            )
            with self._lock:
                self._groups[proc.pid] = proc
            return proc

        future: Future = Future()
        self._jobs.put((make, future))
        return future.result()

    def kill_group(self, proc: subprocess.Popen, grace: float = 0.0) -> None:
        """Kills the process group led by `proc` (SIGTERM first when `grace` > 0) and reaps it."""
        pgid = proc.pid
        if grace > 0 and proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        # SIGKILL the group even when the leader has exited: its children may still run.
        _signal_group(pgid, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            LOG.warning("bootstrap pid %s survived SIGKILL for 5 s", pgid)
        with self._lock:
            self._groups.pop(pgid, None)

    def forget(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._groups.pop(proc.pid, None)

    def live_pids(self) -> list[int]:
        with self._lock:
            return [pid for pid, p in self._groups.items() if p.poll() is None]

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._groups.values())
            self._groups.clear()
        for proc in procs:
            _signal_group(proc.pid, signal.SIGKILL)
        for proc in procs:
            try:
                proc.wait(timeout=2)
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        LOG.warning("cannot signal process group %s", pgid)


_SPAWNER: Spawner | None = None
_SPAWNER_LOCK = threading.Lock()


def spawner() -> Spawner:
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = Spawner()
        return _SPAWNER
