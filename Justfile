# Recipes for developers who have `just`; each wraps a script in scripts/ (no `just` needed).

# Set up .venv and system packages (idempotent)
setup:
    scripts/setup

# Run the flagship campaign (molecular-design) on the local mock sites
demo *ARGS:
    scripts/demo {{ARGS}}

# Run the whole test suite
test *ARGS:
    scripts/test {{ARGS}}

# Quick tests only (skips the slow end-to-end group)
test-quick:
    scripts/test -m "not slow"

# Throughput / decision-latency benchmark against the raw engine
bench *ARGS:
    scripts/setup && .venv/bin/python benchmarks/throughput.py {{ARGS}}

# Lint, format check and type check
lint:
    scripts/setup && .venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy orchestrator

# Data-movement benchmark: 100 MB shared input and result, orch vs the raw ProxyStore connector
bench-data *ARGS:
    scripts/setup && .venv/bin/python benchmarks/data_movement.py {{ARGS}}

# Start-up: the phases from `orch launch` to the first result on the default local sites
bench-startup *ARGS:
    scripts/setup && .venv/bin/python benchmarks/startup.py {{ARGS}}

# Remote path: a loopback Globus site (real SDK, RabbitMQ, endpoint) next to a local site
bench-remote *ARGS:
    scripts/setup && .venv/bin/python benchmarks/remote_path.py {{ARGS}}
