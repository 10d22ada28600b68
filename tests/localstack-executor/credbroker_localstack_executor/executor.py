"""`HostRuntimeExecutor`: one LocalStack execution environment = one `bootstrap` host process.

Interface: `localstack.services.lambda_.invocation.runtime_executor.RuntimeExecutor` (reference
implementation beside it: `docker_runtime_executor.py`). What Lambda does and this emulates:

- start: Runtime API on a free 127.0.0.1 port, `<code>/bootstrap` spawned with the function's
  environment, `LAMBDA_TASK_ROOT` and cwd = the unzipped code; ready at the runtime's first
  `next`. An init error (`/runtime/init/error`, or the process exiting first) raises
  `StatusErrorException` with Lambda's error document; a stop meanwhile raises
  `ShutdownDuringStartup`.
- invoke: the job goes to the waiting `next` with the usual headers; the result comes back
  in-process (no `/_localstack_lambda` callback). The function timeout is enforced here
  (`Sandbox.Timedout`); a process that dies mid-invocation gives `Runtime.ExitError`. After
  either, the process is gone and the next invoke starts a new one (a new generation, with a
  Runtime API server of its own).
- logs: init output, `START`/`END`/`REPORT` lines and the function's output per invocation,
  like CloudWatch shows them.
- layers: extracted in order into one directory per function version. A host process cannot
  have its own `/opt`, so environment values that start with `/opt` are pointed there instead
  (code that hard-codes `/opt` paths would not see layers).
- processes: see `processes.py` (one spawner thread, process groups, parent-death signal,
  exit hook).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from localstack.aws.api.lambda_ import PackageType
from localstack.services.lambda_.invocation.executor_endpoint import (
    ShutdownDuringStartup,
    StatusErrorException,
)
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import (
    LambdaRuntimeException,
    RuntimeExecutor,
)

from .processes import spawner
from .runtime_api import Job, RuntimeApi

LOG = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Lambda's init phase limit; also bounds a restart inside invoke.
INIT_LIMIT_S = 10.0
# After a result, wait this long for the process to go quiet so its last lines land in the
# right invocation's logs.
DRAIN_QUIET_S = 0.02
DRAIN_MAX_S = 0.25
# Environment variables of LocalStack's own process passed on to functions: the marker
# scripts/localstack.sh uses to find every process of an instance it started.
PASSTHROUGH = ("CREDBROKER_LOCALSTACK_HOME",)
WORK_ROOT = Path(tempfile.gettempdir()) / "credbroker-host-executor"

_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "arm64"}
_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine().lower(), platform.machine()
)


class _Logs:
    """Output of one environment's processes, line by line, with marks for each invocation."""

    MAX_LINES = 20_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._base = 0
        self.last_write = time.monotonic()

    def append(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
            self.last_write = time.monotonic()
            if len(self._lines) > self.MAX_LINES:
                drop = len(self._lines) - self.MAX_LINES
                del self._lines[:drop]
                self._base += drop

    def mark(self) -> int:
        with self._lock:
            return self._base + len(self._lines)

    def since(self, mark: int) -> str:
        with self._lock:
            return "".join(self._lines[max(0, mark - self._base) :])

    def all(self) -> str:
        with self._lock:
            return "".join(self._lines)


class _Process:
    """One bootstrap process generation and its Runtime API."""

    def __init__(self, proc: subprocess.Popen, api: RuntimeApi, logs: _Logs) -> None:
        self.proc = proc
        self.api = api
        self.started = time.monotonic()
        self.init_duration_ms: float | None = None
        self.init_reported = False
        self.init_mark = 0
        self.max_rss_mb = 0
        self.pump = threading.Thread(target=self._pump, args=(logs,), name=f"bootstrap-{proc.pid}-output", daemon=True)
        self.pump.start()

    def _pump(self, logs: _Logs) -> None:
        stream = self.proc.stdout
        if stream is None:
            return
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", "replace")
            logs.append(text if text.endswith("\n") else text + "\n")
        stream.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample_memory(self) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.max_rss_mb = max(self.max_rss_mb, math.ceil(int(line.split()[1]) / 1024))
        except (OSError, ValueError, IndexError):
            pass
        return self.max_rss_mb

    def kill(self) -> None:
        self.api.close()
        spawner().kill_group(self.proc, grace=0.2)
        self.pump.join(timeout=1)


def _exit_detail(returncode: int | None) -> str:
    if returncode is None:
        return "Runtime exited without providing a reason"
    if returncode < 0:
        import signal

        try:
            name = signal.Signals(-returncode).name.removeprefix("SIG").lower()
        except ValueError:
            name = str(-returncode)
        return f"Runtime exited with error: signal: {name}"
    return f"Runtime exited with error: exit status {returncode}"


def _error_doc(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


class HostRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:  # noqa: A002 - LocalStack's signature
        super().__init__(id=id, function_version=function_version)
        self._env: dict[str, str] = {}
        self._logs = _Logs()
        self._state = threading.Lock()
        self._invoke_lock = threading.Lock()
        self._stopped = threading.Event()
        self._process: _Process | None = None
        self._generation = 0
        code = function_version.config.code
        self._code_dir = Path(code.get_unzipped_code_location()) if code is not None else Path("/nonexistent")
        self._label = f"{function_version.id.function_name}-{id[:8]}"

    # ------------------------------------------------------------------ RuntimeExecutor API

    def start(self, env_vars: dict[str, str]) -> None:
        self._env = self._process_env(env_vars)
        mark = self._logs.mark()
        error = self._launch()
        if error is not None:
            # LocalStack drops the output of a failed start (only its debug log shows it).
            self._drain()
            LOG.warning(
                "%s: init failed: %s\n--- bootstrap output ---\n%s---",
                self.function_version.qualified_arn,
                error.decode("utf-8", "replace"),
                self._logs.since(mark),
            )
            raise StatusErrorException("Environment startup failed", payload=error)

    def stop(self) -> None:
        self._stopped.set()
        with self._state:
            process, self._process = self._process, None
        if process is not None:
            process.kill()

    def get_address(self) -> str:
        return LOOPBACK

    def get_endpoint_from_executor(self) -> str:
        return LOOPBACK

    def get_runtime_endpoint(self) -> str:
        # Not used by host processes (results are handed over in-process); kept meaningful.
        with self._state:
            api = self._process.api.address if self._process else f"{LOOPBACK}:0"
        return f"http://{api}"

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        with self._invoke_lock:
            return self._invoke(payload)

    def get_logs(self) -> str:
        return self._logs.all()

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        config = function_version.config
        if config.package_type != PackageType.Zip or config.code is None:
            raise LambdaRuntimeException("host executor: only .zip packages run as host processes")
        if not str(config.runtime or "").startswith("provided"):
            raise LambdaRuntimeException(
                f"host executor: runtime {config.runtime} is not supported (provided.* bootstraps only)"
            )
        config.code.prepare_for_execution()
        bootstrap = Path(config.code.get_unzipped_code_location()) / "bootstrap"
        if not bootstrap.is_file():
            raise LambdaRuntimeException("host executor: the package has no bootstrap at its root")
        if not os.access(bootstrap, os.X_OK):
            raise LambdaRuntimeException("host executor: bootstrap is not executable")
        with bootstrap.open("rb") as f:
            head = f.read(20)
        if head[:4] == b"\x7fELF" and len(head) >= 20:
            arch = _ELF_MACHINES.get(int.from_bytes(head[18:20], "little"), f"machine {head[18]:#x}")
            if arch != _HOST_ARCH:
                raise LambdaRuntimeException(
                    f"host executor: bootstrap is built for {arch} but this host runs {_HOST_ARCH}: "
                    f"deploy with Architectures: [{_HOST_ARCH}] for LocalStack"
                )
        cls._prepare_layers(function_version)

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        shutil.rmtree(cls._opt_dir(function_version).parent, ignore_errors=True)
        try:
            WORK_ROOT.rmdir()  # only when no other version has layers prepared
        except OSError:
            pass

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _opt_dir(function_version: FunctionVersion) -> Path:
        key = f"{function_version.qualified_arn}:{function_version.config.revision_id}"
        return WORK_ROOT / hashlib.sha256(key.encode()).hexdigest()[:16] / "opt"

    @classmethod
    def _prepare_layers(cls, function_version: FunctionVersion) -> None:
        layers = function_version.config.layers or []
        opt = cls._opt_dir(function_version)
        if not layers or opt.is_dir():
            return
        staging = opt.with_name(f"opt.{os.getpid()}.{threading.get_ident()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for layer in layers:  # in order: a later layer's files win, as in /opt on Lambda
            if layer.code is None:
                raise LambdaRuntimeException(f"host executor: layer {layer.layer_version_arn} has no code")
            layer.code.prepare_for_execution()
            shutil.copytree(layer.code.get_unzipped_code_location(), staging, dirs_exist_ok=True, symlinks=True)
        try:
            staging.rename(opt)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # prepared concurrently: keep the first

    def _process_env(self, env_vars: dict[str, str]) -> dict[str, str]:
        env = {k: str(v) for k, v in env_vars.items() if v is not None}
        env["LAMBDA_TASK_ROOT"] = str(self._code_dir)
        env.setdefault("PATH", DEFAULT_PATH)
        if self.function_version.config.layers:
            opt = str(self._opt_dir(self.function_version))
            for k, v in env.items():
                if v == "/opt" or v.startswith("/opt/"):
                    env[k] = opt + v[len("/opt") :]
        for name in PASSTHROUGH:
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def _launch(self, limit_s: float | None = None) -> bytes | None:
        """Starts a new process generation; None when its runtime asked for work, else the error."""
        if self._stopped.is_set():
            raise ShutdownDuringStartup("environment stopped before start")
        self._generation += 1
        api = RuntimeApi(self._generation, self._label)
        env = dict(self._env)
        env["AWS_LAMBDA_RUNTIME_API"] = api.address
        mark = self._logs.mark()
        try:
            proc = spawner().spawn([str(self._code_dir / "bootstrap")], env, str(self._code_dir))
        except OSError as e:
            api.close()
            return _error_doc("Runtime.InvalidEntrypoint", f"RequestId: {self.id} Error: {e}")
        process = _Process(proc, api, self._logs)
        process.init_mark = mark
        with self._state:
            if self._stopped.is_set():
                process.kill()
                raise ShutdownDuringStartup("environment stopped during start")
            self._process = process
        deadline = None if limit_s is None else time.monotonic() + limit_s
        while not api.first_next.wait(0.005):
            if self._stopped.is_set():
                process.kill()
                raise ShutdownDuringStartup("environment stopped during start")
            if api.init_error is not None:
                self._discard(process)
                return api.init_error
            if not process.alive():
                self._discard(process)
                return _error_doc("Runtime.ExitError", f"RequestId: {self.id} Error: {_exit_detail(proc.returncode)}")
            if deadline is not None and time.monotonic() > deadline:
                self._discard(process)
                return _error_doc("Sandbox.Timedout", f"RequestId: {self.id} Error: init did not finish in {limit_s:.2f} seconds")
        process.init_duration_ms = (time.monotonic() - process.started) * 1000
        return None

    def _discard(self, process: _Process) -> None:
        with self._state:
            if self._process is process:
                self._process = None
        process.kill()

    def _invoke(self, payload: dict[str, str]) -> InvocationResult:
        request_id = payload["invoke-id"]
        if self._stopped.is_set():
            raise LambdaRuntimeException(f"host executor {self.id} is stopped")
        with self._state:
            process = self._process
        if process is None or not process.alive():
            # Crashed or timed out last time (or exited between invokes): a cold start.
            if process is not None:
                self._discard(process)
            mark = self._logs.mark()
            error = self._launch(limit_s=max(INIT_LIMIT_S, float(self.function_version.config.timeout)))
            if error is not None:
                self._drain()
                return InvocationResult(request_id, error, is_error=True, logs=self._logs.since(mark))
            with self._state:
                process = self._process
            if process is None:
                raise LambdaRuntimeException(f"host executor {self.id} is stopped")

        timeout_s = float(self.function_version.config.timeout)
        init_text = ""
        if not process.init_reported:
            init_text = self._logs.since(process.init_mark)
        mark = self._logs.mark()
        job = Job(
            request_id=request_id,
            payload=(payload.get("payload") or "").encode(),
            deadline_ms=int(time.time() * 1000 + timeout_s * 1000),
            invoked_function_arn=payload.get("invoked-function-arn", ""),
            trace_id=payload.get("trace-id", ""),
        )
        started = time.monotonic()
        process.api.submit(job)
        outcome = "done"
        while not job.done.wait(0.005):
            if self._stopped.is_set():
                outcome = "stopped"
                break
            if not process.alive():
                outcome = "exited"
                break
            if time.monotonic() - started > timeout_s:
                outcome = "timeout"
                break
        duration_ms = (time.monotonic() - started) * 1000
        memory = process.sample_memory()
        extra = ""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if outcome == "done":
            body, is_error = job.body, job.is_error
            self._drain()
        else:
            process.api.withdraw(job)
            if outcome == "timeout":
                body = _error_doc("Sandbox.Timedout", f"RequestId: {request_id} Error: Task timed out after {timeout_s:.2f} seconds")
                extra = f"{stamp} {request_id} Task timed out after {timeout_s:.2f} seconds\n"
            elif outcome == "exited":
                detail = _exit_detail(process.proc.returncode)
                body = _error_doc("Runtime.ExitError", f"RequestId: {request_id} Error: {detail}")
                extra = f"RequestId: {request_id} Error: {detail}\nRuntime.ExitError\n"
            else:
                body = _error_doc("Runtime.Stopped", f"RequestId: {request_id} Error: environment stopped")
            is_error = True
            self._discard(process)
        report = (
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {max(1, math.ceil(duration_ms))} ms\t"
            f"Memory Size: {self.function_version.config.memory_size} MB\tMax Memory Used: {memory} MB\t"
        )
        if not process.init_reported and process.init_duration_ms is not None:
            report += f"Init Duration: {process.init_duration_ms:.2f} ms\t"
        process.init_reported = True
        logs = (
            f"{init_text}START RequestId: {request_id} Version: {self.function_version.id.qualifier}\n"
            f"{self._logs.since(mark)}{extra}END RequestId: {request_id}\n{report}\n"
        )
        return InvocationResult(request_id, body, is_error=is_error, logs=logs)

    def _drain(self) -> None:
        """Lets the process's last output lines arrive (they belong to this invocation)."""
        start = time.monotonic()
        time.sleep(DRAIN_QUIET_S / 2)
        while time.monotonic() - start < DRAIN_MAX_S:
            if time.monotonic() - max(self._logs.last_write, start) >= DRAIN_QUIET_S:
                return
            time.sleep(0.005)
