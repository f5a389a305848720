import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny_hf.py and other helpers
torch.set_num_threads(min(2, torch.get_num_threads()))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tiny_hf import batch  # noqa: E402,F401  (the shared `batch` fixture)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write into (mode 0555), writable again after the test; skips under root,
    where chmod does not stop writes (the checks use os.access)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: chmod does not stop root's writes")
        yield ro
    finally:
        ro.chmod(0o755)
