"""What a compare prints on a terminal (issue 26 item 7): one tidy bar, numbers formatted, and no bar at
all, ours or a library's (tokenizers, transformers, the hub), under --no-progress."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

CORPUS = str(Path(__file__).parents[1] / "fixtures" / "corpus" / "tiny.txt")
BAR = re.compile(r"\d+%\|")  # tqdm's "42%|████" (ours and every library's)


def _on_a_terminal(args: list[str], env: dict) -> tuple[int, str]:
    """Run ``pldrop`` with stdout and stderr on a pseudo-terminal (so bars would be drawn); its output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # 200 columns (else 0: no bar)
    p = subprocess.Popen([sys.executable, "-m", "pldrop", *args], stdin=subprocess.DEVNULL, stdout=follower,
                         stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return p.wait(timeout=300), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_compare_bar_on_a_terminal_and_none_with_no_progress(tmp_path):
    env = {**os.environ, "PLDROP_CACHE": str(tmp_path / "cache")}
    common = ["compare", "--corpus", CORPUS, "--preset", "tiny", "--batch-size", "8", "--arms", "baseline", "pld",
              "--max-minutes", "0.02", "--depth-rounds", "0", "data.vocab_size=400", "data.val_max_seqs=16"]
    rc, shown = _on_a_terminal([*common, "--out", str(tmp_path / "bar")], env)
    assert rc == 0, shown
    # the compare bar: minutes with one decimal, one unit, validation losses with 3 decimals under one label
    assert re.search(r"compare: +\d+%\|.*\| \d+\.\d/0\.0 min of training", shown), shown[-2000:]
    assert re.search(r"val loss baseline (\d+\.\d{3}|–) pld (\d+\.\d{3}|–)", shown), shown[-2000:]
    assert not re.search(r"\d+\.\d{4,}/", shown)  # no 15.00152528500007/180.0
    assert "Pre-processing sequences" not in shown  # the tokenizer's own bar, never
    assert "Loading weights" not in shown and "Writing model shards" not in shown  # nor transformers'

    rc, quiet = _on_a_terminal([*common, "--out", str(tmp_path / "quiet"), "--no-progress"], env)
    assert rc == 0, quiet
    assert not BAR.search(quiet), quiet[-2000:]
    assert "Loading weights" not in quiet and "Writing model shards" not in quiet
