# Sourced by run_tests.sh and run_pipeline.sh: make ./.venv once, (re)install when setup.py changes, activate it.
VENV_DIR="${ELMO_VENV:-.venv}"
if [ ! -x "$VENV_DIR/bin/python" ]; then
  python3 -m venv "$VENV_DIR"
fi
stamp="$VENV_DIR/.installed-$(sha256sum setup.py | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Installing the project into $VENV_DIR (first use; torch is large) ..." >&2
  "$VENV_DIR/bin/python" -m pip install -q --upgrade pip
  "$VENV_DIR/bin/python" -m pip install -q -e ".[test]"
  touch "$stamp"
fi
# shellcheck disable=SC1091
source "$VENV_DIR/bin/activate"
