"""Tests of the host runtime executor, driven the way LocalStack drives it (prepare_version,
start, invoke, stop), with a small Python `bootstrap` speaking the Runtime API.

Run with the LocalStack venv's interpreter (it needs localstack-core):

    ~/.cache/credbroker/localstack-venv/bin/python tests/localstack-executor/tests/test_executor.py

The last line is `executor: N passed, N failed`; the exit code is non-zero on any failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localstack.aws.api.lambda_ import PackageType  # noqa: E402
from localstack.services.lambda_.invocation.executor_endpoint import (  # noqa: E402
    ShutdownDuringStartup,
    StatusErrorException,
)
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException  # noqa: E402

from credbroker_localstack_executor.executor import HostRuntimeExecutor  # noqa: E402
from credbroker_localstack_executor.processes import spawner  # noqa: E402

# The bootstrap: a Lambda runtime in a few lines. Behaviour is chosen per invocation by the
# payload ({"do": ...}) and at init by BOOT_MODE.
BOOTSTRAP = """#!{python}
import json, os, subprocess, sys, time, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
mode = os.environ.get("BOOT_MODE", "")
print("init: pid", os.getpid(), "mode", mode, flush=True)
if mode == "init-error":
    body = json.dumps({{"errorMessage": "bad config", "errorType": "Config.Invalid"}}).encode()
    urllib.request.urlopen(urllib.request.Request(api + "/init/error", data=body, method="POST"))
    sys.exit(1)
if mode == "init-exit":
    sys.exit(2)
if mode == "slow-init":
    time.sleep(30)
if mode == "grandchild":
    child = subprocess.Popen(["sleep", "300"])
    open(os.environ["PID_FILE"], "w").write(str(child.pid))
while True:
    with urllib.request.urlopen(api + "/invocation/next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        deadline = int(r.headers["Lambda-Runtime-Deadline-Ms"])
        arn = r.headers["Lambda-Runtime-Invoked-Function-Arn"]
        event = json.loads(r.read() or b"{{}}")
    do = event.get("do", "echo")
    print("handling", rid, do, flush=True)
    if do == "sleep":
        time.sleep(event["seconds"])
    if do == "crash":
        sys.exit(3)
    if do == "stale":
        req = urllib.request.Request(api + "/invocation/not-" + rid + "/response", data=b"{{}}", method="POST")
        try:
            urllib.request.urlopen(req)
        except urllib.error.HTTPError as e:
            print("stale response refused", e.code, flush=True)
    if do == "error":
        req = urllib.request.Request(api + "/invocation/" + rid + "/error", method="POST",
            data=json.dumps({{"errorMessage": "boom", "errorType": "Handler.Boom"}}).encode(),
            headers={{"Lambda-Runtime-Function-Error-Type": "Handler.Boom"}})
        urllib.request.urlopen(req)
        continue
    out = {{"pid": os.getpid(), "event": event, "arn": arn, "deadline_ms": deadline,
           "task_root": os.environ.get("LAMBDA_TASK_ROOT"), "cwd": os.getcwd(),
           "conf": open(os.environ["CONF_FILE"]).read() if os.environ.get("CONF_FILE") else None}}
    urllib.request.urlopen(urllib.request.Request(api + "/invocation/" + rid + "/response",
                                                  data=json.dumps(out).encode(), method="POST"))
    print("after response", rid, flush=True)
"""


@dataclass
class Code:
    path: Path

    def get_unzipped_code_location(self) -> Path:
        return self.path

    def prepare_for_execution(self) -> None:
        pass


@dataclass
class Layer:
    code: Code
    layer_version_arn: str = "arn:aws:lambda:us-east-1:000000000000:layer:conf:1"


@dataclass
class Config:
    code: Code
    timeout: int = 3
    memory_size: int = 128
    runtime: str = "provided.al2023"
    package_type: str = PackageType.Zip
    layers: list = field(default_factory=list)
    architectures: list = field(default_factory=lambda: ["x86_64"])
    revision_id: str = "rev-1"


@dataclass
class Id:
    function_name: str
    qualifier: str = "$LATEST"


@dataclass
class FunctionVersion:
    id: Id
    config: Config

    @property
    def qualified_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.id.function_name}:$LATEST"


def alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return st != "Z"


def wait_gone(pids, timeout=5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


class ExecutorTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="host-executor-test-")
        self.executors: list[HostRuntimeExecutor] = []
        self.versions: list[FunctionVersion] = []
        self.counter = 0

    def tearDown(self) -> None:
        for e in self.executors:
            try:
                e.stop()
            except Exception:  # noqa: BLE001
                pass
        for fv in self.versions:
            HostRuntimeExecutor.cleanup_version(fv)
        self.tmp.cleanup()

    def function(self, timeout=3, layers=None, bootstrap=None, arch=None) -> FunctionVersion:
        self.counter += 1
        code = Path(self.tmp.name) / f"code{self.counter}"
        code.mkdir()
        path = code / "bootstrap"
        if bootstrap is None:
            path.write_text(BOOTSTRAP.format(python=sys.executable))
            path.chmod(0o755)
        else:
            path.write_bytes(bootstrap)
            path.chmod(0o755)
        config = Config(code=Code(code), timeout=timeout, layers=layers or [])
        if arch:
            config.architectures = [arch]
        fv = FunctionVersion(Id(f"fn{self.counter}"), config)
        self.versions.append(fv)
        HostRuntimeExecutor.prepare_version(fv)
        return fv

    def executor(self, fv, env=None) -> HostRuntimeExecutor:
        e = HostRuntimeExecutor(f"{self.counter:08d}-executor", fv)
        self.executors.append(e)
        base = {"AWS_REGION": "us-east-1", "AWS_LAMBDA_FUNCTION_TIMEOUT": fv.config.timeout,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": 128, "LAMBDA_TASK_ROOT": "/var/task"}
        base.update(env or {})
        self._env = base
        return e

    @staticmethod
    def invoke(e, event, rid=None):
        rid = rid or f"req-{time.monotonic_ns()}"
        return e.invoke({"invoke-id": rid, "invoked-function-arn": "arn:aws:lambda:us-east-1:000000000000:function:f",
                         "payload": json.dumps(event), "trace-id": "Root=1-abc"})

    def started(self, env=None, **kw) -> HostRuntimeExecutor:
        fv = self.function(**kw)
        e = self.executor(fv, env)
        e.start(self._env)
        return e

    # ------------------------------------------------------------------------------ tests

    def test_invocations_return_the_response_with_lambda_headers_and_logs(self):
        e = self.started()
        t0 = time.time() * 1000
        first = self.invoke(e, {"n": 1}, rid="req-1")
        self.assertFalse(first.is_error, first.payload)
        body = json.loads(first.payload)
        self.assertEqual(body["event"], {"n": 1})
        self.assertEqual(body["arn"], "arn:aws:lambda:us-east-1:000000000000:function:f")
        self.assertAlmostEqual(body["deadline_ms"], t0 + 3000, delta=1000)
        code_dir = str(e.function_version.config.code.path)
        self.assertEqual((body["task_root"], body["cwd"]), (code_dir, code_dir), "LAMBDA_TASK_ROOT and cwd = code dir")
        self.assertIn("init: pid", first.logs, "init output goes with the first invocation")
        self.assertIn("START RequestId: req-1 Version: $LATEST", first.logs)
        self.assertIn("handling req-1 echo", first.logs)
        self.assertIn("after response req-1", first.logs, "output right after the response is drained into it")
        self.assertIn("END RequestId: req-1", first.logs)
        self.assertIn("Init Duration:", first.logs)
        second = self.invoke(e, {"n": 2}, rid="req-2")
        self.assertEqual(json.loads(second.payload)["pid"], body["pid"], "warm: same process")
        self.assertNotIn("init: pid", second.logs)
        self.assertNotIn("Init Duration", second.logs)
        self.assertNotIn("req-1", second.logs)
        self.assertIn("REPORT RequestId: req-2\tDuration:", second.logs)
        self.assertIn("init: pid", e.get_logs())

    def test_function_errors_come_back_as_errors(self):
        e = self.started()
        r = self.invoke(e, {"do": "error"})
        self.assertTrue(r.is_error)
        self.assertEqual(json.loads(r.payload), {"errorMessage": "boom", "errorType": "Handler.Boom"})
        self.assertFalse(self.invoke(e, {}).is_error, "the environment stays usable")

    def test_timeout_kills_the_process_and_the_next_invoke_starts_a_new_one(self):
        e = self.started(timeout=1)
        pid = json.loads(self.invoke(e, {}).payload)["pid"]
        t0 = time.monotonic()
        r = self.invoke(e, {"do": "sleep", "seconds": 30}, rid="req-slow")
        took = time.monotonic() - t0
        self.assertTrue(r.is_error)
        doc = json.loads(r.payload)
        self.assertEqual(doc["errorType"], "Sandbox.Timedout")
        self.assertIn("Task timed out after 1.00 seconds", doc["errorMessage"])
        self.assertIn("req-slow Task timed out after 1.00 seconds", r.logs)
        self.assertLess(took, 2.5)
        self.assertEqual(wait_gone([pid]), [], "the timed-out process is killed")
        again = self.invoke(e, {"n": 3})
        self.assertFalse(again.is_error, again.payload)
        self.assertNotEqual(json.loads(again.payload)["pid"], pid, "a new process (generation) serves it")
        self.assertIn("Init Duration:", again.logs, "that invocation is a cold start")

    def test_a_crash_is_reported_and_the_next_invoke_recovers(self):
        e = self.started()
        pid = json.loads(self.invoke(e, {}).payload)["pid"]
        r = self.invoke(e, {"do": "crash"}, rid="req-crash")
        self.assertTrue(r.is_error)
        self.assertEqual(json.loads(r.payload)["errorType"], "Runtime.ExitError")
        self.assertIn("exit status 3", json.loads(r.payload)["errorMessage"])
        self.assertIn("Runtime.ExitError", r.logs)
        self.assertEqual(wait_gone([pid]), [])
        self.assertFalse(self.invoke(e, {}).is_error)

    def test_a_response_for_another_request_id_is_refused(self):
        e = self.started()
        r = self.invoke(e, {"do": "stale"})
        self.assertFalse(r.is_error)
        self.assertIn("stale response refused 400", r.logs)

    def test_init_error_posted_by_the_runtime_fails_the_start(self):
        fv = self.function()
        e = self.executor(fv, {"BOOT_MODE": "init-error"})
        with self.assertRaises(StatusErrorException) as ctx:
            e.start(self._env)
        self.assertEqual(json.loads(ctx.exception.payload), {"errorMessage": "bad config", "errorType": "Config.Invalid"})
        self.assertEqual(spawner().live_pids(), [])

    def test_exit_during_init_fails_the_start_with_runtime_exit_error(self):
        fv = self.function()
        e = self.executor(fv, {"BOOT_MODE": "init-exit"})
        with self.assertRaises(StatusErrorException) as ctx:
            e.start(self._env)
        doc = json.loads(ctx.exception.payload)
        self.assertEqual(doc["errorType"], "Runtime.ExitError")
        self.assertIn("exit status 2", doc["errorMessage"])

    def test_stop_during_start_raises_shutdown_during_startup(self):
        fv = self.function()
        e = self.executor(fv, {"BOOT_MODE": "slow-init"})
        threading.Timer(0.3, e.stop).start()
        with self.assertRaises(ShutdownDuringStartup):
            e.start(self._env)
        self.assertEqual(wait_gone(spawner().live_pids()), [])

    def test_concurrent_environments_are_separate_processes_that_outlive_their_threads(self):
        fv = self.function()
        executors = [self.executor(fv) for _ in range(5)]
        env = self._env
        threads = [threading.Thread(target=e.start, args=(env,)) for e in executors]
        for t in threads:
            t.start()
        for t in threads:
            t.join()  # LocalStack's starting threads end here; the processes must live on
        results: list = [None] * 5

        def run(i):
            results[i] = self.invoke(executors[i], {"do": "sleep", "seconds": 0.3})

        calls = [threading.Thread(target=run, args=(i,)) for i in range(5)]
        t0 = time.monotonic()
        for t in calls:
            t.start()
        for t in calls:
            t.join()
        self.assertLess(time.monotonic() - t0, 1.5, "the five ran in parallel")
        pids = {json.loads(r.payload)["pid"] for r in results}
        self.assertEqual(len(pids), 5)
        for e in executors:
            e.stop()
        self.assertEqual(wait_gone(pids), [])

    def test_stop_kills_the_whole_process_group(self):
        pid_file = Path(self.tmp.name) / "grandchild.pid"
        e = self.started(env={"BOOT_MODE": "grandchild", "PID_FILE": str(pid_file)})
        pid = json.loads(self.invoke(e, {}).payload)["pid"]
        grandchild = int(pid_file.read_text())
        self.assertTrue(alive(grandchild))
        e.stop()
        self.assertEqual(wait_gone([pid, grandchild]), [])

    def test_layers_are_reached_through_opt_paths_in_the_environment(self):
        layer = Path(self.tmp.name) / "layer"
        (layer / "credbroker").mkdir(parents=True)
        (layer / "credbroker" / "conf.txt").write_text("from the layer")
        e = self.started(env={"CONF_FILE": "/opt/credbroker/conf.txt"}, layers=[Layer(Code(layer))])
        self.assertEqual(json.loads(self.invoke(e, {}).payload)["conf"], "from the layer")

    def test_prepare_version_refuses_what_cannot_run_here(self):
        arm_elf = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00" + (0xB7).to_bytes(2, "little") + b"\x00" * 40
        with self.assertRaisesRegex(LambdaRuntimeException, "built for arm64"):
            self.function(bootstrap=arm_elf)
        code = Path(self.tmp.name) / "noexec"
        code.mkdir()
        (code / "bootstrap").write_text("#!/bin/sh\n")
        (code / "bootstrap").chmod(stat.S_IRUSR)
        with self.assertRaisesRegex(LambdaRuntimeException, "not executable"):
            HostRuntimeExecutor.prepare_version(FunctionVersion(Id("x"), Config(code=Code(code))))
        with self.assertRaisesRegex(LambdaRuntimeException, "python3.12 is not supported"):
            HostRuntimeExecutor.prepare_version(FunctionVersion(Id("y"), Config(code=Code(code), runtime="python3.12")))


HOST_SCRIPT = """
import json, os, signal, sys, time
sys.path.insert(0, {pkg!r})
sys.path.insert(0, {tests!r})
from test_executor import Code, Config, FunctionVersion, Id
from credbroker_localstack_executor.executor import HostRuntimeExecutor
if {sigterm_exits!r}:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # like LocalStack: SIGTERM -> normal exit
fv = FunctionVersion(Id("host"), Config(code=Code(__import__("pathlib").Path({code!r}))))
e = HostRuntimeExecutor("host-process-test", fv)
e.start({{"BOOT_MODE": "grandchild", "PID_FILE": {pid_file!r}}})
r = e.invoke({{"invoke-id": "r1", "invoked-function-arn": "a", "payload": "{{}}", "trace-id": "t"}})
print(json.loads(r.payload)["pid"], open({pid_file!r}).read(), flush=True)
time.sleep(60)
"""


class HostProcessDeathTest(unittest.TestCase):
    """What happens to bootstraps when LocalStack itself goes away."""

    def run_host(self, sigterm_exits: bool):
        tmp = tempfile.mkdtemp(prefix="host-executor-death-")
        self.addCleanup(shutil.rmtree, tmp, True)
        code = Path(tmp) / "code"
        code.mkdir()
        (code / "bootstrap").write_text(BOOTSTRAP.format(python=sys.executable))
        (code / "bootstrap").chmod(0o755)
        script = HOST_SCRIPT.format(
            pkg=str(Path(__file__).resolve().parents[1]), tests=str(Path(__file__).resolve().parent),
            code=str(code), pid_file=str(Path(tmp) / "gc.pid"), sigterm_exits=sigterm_exits,
        )
        host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        line = host.stdout.readline().split()
        self.assertEqual(len(line), 2, "host script did not start a function")
        return host, int(line[0]), int(line[1])

    def test_sigkill_of_localstack_kills_the_bootstrap(self):
        host, pid, grandchild = self.run_host(sigterm_exits=False)
        host.kill()
        host.wait()
        self.assertEqual(wait_gone([pid]), [], "parent-death signal")
        os.kill(grandchild, signal.SIGKILL)  # outside our reach once its parent is SIGKILLed

    def test_sigterm_of_localstack_runs_the_exit_hook(self):
        host, pid, grandchild = self.run_host(sigterm_exits=True)
        host.terminate()
        host.wait(timeout=10)
        self.assertEqual(wait_gone([pid, grandchild]), [], "exit hook kills the process groups")


class Result(unittest.TextTestResult):
    pass


def main() -> int:
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2, resultclass=Result).run(suite)
    failed = len(result.failures) + len(result.errors)
    passed = result.testsRun - failed - len(result.skipped)
    print(f"executor: {passed} passed, {failed} failed")
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
