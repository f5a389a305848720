"""`import pldrop` and `pldrop --help` stay light; the names the README uses resolve."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pldrop.cli import COMMANDS

HEAVY = ("torch", "transformers", "transformers.trainer", "deepspeed", "accelerate", "datasets", "tokenizers")
SRC = str(Path(__file__).parents[1] / "src")


def _imported_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter holds after running ``code`` (stdout silenced)."""
    probe = (f"import sys, contextlib, io\nwith contextlib.redirect_stdout(io.StringIO()):\n"
             f"    try:\n        exec({code!r})\n    except SystemExit:\n        pass\n"
             f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_pldrop_is_light():
    assert _imported_after("import pldrop, pldrop.integrations; pldrop.theta(10); pldrop.ProgressiveLayerDrop([2])") == []


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_imports_nothing_heavy(command):
    argv = ["pldrop", *command.split(), "--help"]
    assert _imported_after(f"import sys, runpy; sys.argv = {argv!r}; runpy.run_module('pldrop', run_name='__main__')") == []


def test_readme_names_resolve_lazily():
    import pldrop

    assert callable(pldrop.integrations.add_pld_callback)  # README: pldrop.integrations.add_pld_callback(trainer)
    assert callable(pldrop.integrations.deepspeed.without_pld)  # README: ....deepspeed.without_pld(config)
    assert pldrop.apply_pld.__module__ == "pldrop.surgery"
    assert {"integrations", "apply_pld", "PLDNotSteppedWarning"} <= set(dir(pldrop))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pldrop.nope  # noqa: B018
