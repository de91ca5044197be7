#!/usr/bin/env bash
# Installs the reference implementation (AllenNLP 2.10.1's ELMo) into its own virtual environment, for
# bench/bench_inference.py. AllenNLP's own pins cannot be met on Python 3.11, so it is installed with --no-deps
# plus the packages its imports need (docs/reference.md). torch is the same version as the project's venv
# so that both sides run the same kernels.
#
# Usage: scripts/install_reference.sh            (venv at build/venv-reference, git-ignored by the build/ rule)
#        REFERENCE_VENV=/some/where scripts/install_reference.sh
# Idempotent: a finished install leaves a stamp and the script then only checks the import; pip's cache is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${REFERENCE_VENV:-build/venv-reference}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.15.0}"
stamp="$VENV/.reference-installed-$(sha256sum "$0" | cut -c1-16)-torch$TORCH_VERSION"

check_import() {
  "$VENV/bin/python" - <<'PY'
import sys

sys.path.insert(0, "bench")
from reference_worker import import_allennlp_elmo  # noqa: E402

_ElmoBiLm, batch_to_ids, note = import_allennlp_elmo()
import allennlp, torch  # noqa: E401,E402

print(f"reference OK: allennlp {allennlp.__version__}, torch {torch.__version__}; torchvision: {note}")
PY
}

if [ -f "$stamp" ]; then
  check_import
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check)

"${pip[@]}" -q --upgrade pip
# The project's venv already has this torch (several GB with its CUDA libraries): share it through a .pth file
# (appended to sys.path after the reference venv's own packages, so those win) instead of a second download.
project_torch=$(.venv/bin/python -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))" \
  2>/dev/null || true)
if [ -n "$project_torch" ] && .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')"; then
  site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$project_torch" >"$site/project-torch.pth"
else
  "${pip[@]}" -q "torch==$TORCH_VERSION"
fi
"${pip[@]}" -q --no-deps allennlp==2.10.1
"${pip[@]}" -q numpy h5py cached-path==1.1.6 lmdb transformers==4.25.1 tokenizers==0.13.3 huggingface-hub==0.10.1 \
  spacy==3.8.18 "rich<13" dill base58 more-itertools termcolor==1.1.0 nltk sacremoses sentencepiece jsonnet
"${pip[@]}" -q --no-deps fairscale==0.4.6
# AllenNLP imports torchvision at module level (vision code only). No PyPI torchvision is built for torch 2.15;
# 0.29.2 (built for 2.14, requires torch>=2.14) imports and runs its ops next to 2.15. --no-deps keeps torch as it
# is. If it ever fails to import, bench/reference_worker.py falls back to a stub torchvision for the import only.
"${pip[@]}" -q --no-deps "torchvision==${TORCHVISION_VERSION:-0.29.2}" pillow
# The packages above must not have replaced torch.
"$VENV/bin/python" -c "import torch, sys; v = torch.__version__.split('+')[0]; sys.exit(v != '$TORCH_VERSION')" || {
  echo "torch in $VENV is not $TORCH_VERSION" >&2
  exit 1
}
touch "$stamp"
check_import
