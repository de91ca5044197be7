"""scripts/ensure_venv.sh refuses to reinstall a venv that holds another checkout's editable install (a worktree
with a symlinked .venv re-pointed the main checkout's venv at itself twice before this check)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.beam_testing import REPO


def test_a_venv_installed_from_another_checkout_is_not_reinstalled_from_here(tmp_path):
    import elmo

    venv = Path(sys.prefix)
    assert Path(elmo.__file__).resolve().parent.parent == REPO.resolve()  # this venv: an editable install of REPO
    checkout = tmp_path / "other-checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "ensure_venv.sh", checkout / "scripts")
    # should the check ever let the install through, it fails at once instead of re-pointing this venv
    (checkout / "setup.py").write_text("raise SystemExit('this test checkout must never be installed')\n")
    (checkout / ".venv").symlink_to(venv)
    stamps = sorted(venv.glob(".installed-*"))
    done = subprocess.run(
        ["bash", "-c", "source scripts/ensure_venv.sh && echo installed"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    assert done.returncode == 2 and "installed" not in done.stdout
    assert f"installed from {REPO.resolve()}, not this checkout" in done.stderr
    assert sorted(venv.glob(".installed-*")) == stamps
    assert Path(elmo.__file__).resolve().parent.parent == REPO.resolve()
