"""credbroker's LocalStack Lambda runtime executor: `provided.*` bootstraps as host processes.

See README.md beside the package and ../../shared FACTS ("Lambdas inside LocalStack without
Docker") for what it implements and why.
"""

# Keep equal to the pin in pyproject.toml and LOCALSTACK_VERSION in scripts/localstack.sh.
LOCALSTACK_CORE_VERSION = "2026.3.0"
