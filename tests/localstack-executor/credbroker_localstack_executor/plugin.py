"""plux entry point: `LAMBDA_RUNTIME_EXECUTOR=host` selects this executor.

LocalStack silently falls back to Docker for an unknown executor name, so the name must match
the entry point in pyproject.toml exactly. The executor uses LocalStack internals: it refuses
to load under any other localstack-core release than the one it was written against.
"""

from __future__ import annotations

from importlib import metadata

from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin

from . import LOCALSTACK_CORE_VERSION


class HostRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = "host"

    def load(self, *args, **kwargs):
        installed = metadata.version("localstack-core")
        if installed != LOCALSTACK_CORE_VERSION:
            raise RuntimeError(
                f"credbroker host executor was written for localstack-core {LOCALSTACK_CORE_VERSION}, "
                f"found {installed}: re-check the executor against the new release before changing the pin"
            )
        from .executor import HostRuntimeExecutor

        return HostRuntimeExecutor
