# Sourced by run_tests.sh and run_pipeline.sh: make ./.venv once, (re)install when setup.py changes, activate it.
VENV_DIR="${ELMO_VENV:-.venv}"
if [ ! -x "$VENV_DIR/bin/python" ]; then
  python3 -m venv "$VENV_DIR"
fi
stamp="$VENV_DIR/.installed-$(sha256sum setup.py | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # A venv shared with another checkout (a symlinked .venv, ELMO_VENV) holds that checkout's editable install:
  # reinstalling here would silently re-point it at this one. Refuse instead.
  venv_path="$(cd "$VENV_DIR" && pwd -P)"
  installed_from="$(cd / && "$venv_path/bin/python" -I -c 'import importlib.util as u, os
s = u.find_spec("elmo")
print(os.path.dirname(os.path.dirname(os.path.realpath(s.origin))) if s and s.origin else "")' 2>/dev/null)"
  if [ -n "$installed_from" ] && [ "$installed_from" != "$(pwd -P)" ] && [ "${installed_from#"$venv_path"/}" = "$installed_from" ]; then
    echo "$VENV_DIR has the project installed from $installed_from, not this checkout ($(pwd -P)); installing" \
      "would re-point it here. Give this checkout its own venv: ELMO_VENV=<new dir> $0 ..." >&2
    exit 2
  fi
  echo "Installing the project into $VENV_DIR (first use; torch is large) ..." >&2
  "$VENV_DIR/bin/python" -m pip install -q --upgrade pip
  "$VENV_DIR/bin/python" -m pip install -q -e ".[test]"
  # Build the fused LSTM step now (once per machine, ~15 s; elmo/fused_step.py) rather than inside the first job.
  "$VENV_DIR/bin/python" -c "from elmo.fused_step import fused_step_available; fused_step_available()"
  touch "$stamp"
fi
# shellcheck disable=SC1091
source "$VENV_DIR/bin/activate"
