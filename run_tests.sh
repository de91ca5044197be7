#!/usr/bin/env bash
# The test command: creates ./.venv on first use, installs the project with its test extras, then runs
# ruff (lint + format check) and the whole pytest suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")"
source ./scripts/ensure_venv.sh
ruff check .
ruff format --check .
exec python -m pytest -q "$@"
