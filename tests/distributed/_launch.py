"""Start ``torchrun`` from a test, with a free port and a hard timeout (a hang fails, never blocks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PLDROP_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", DS_BUILD_OPS="0", DS_ACCELERATOR="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def torchrun_cmd(*args: str, nproc: int = 2, port: int | None = None) -> list[str]:
    """``python -m torch.distributed.run`` on one node with ``nproc`` workers.

    Without ``port``, ``--standalone``: the agent binds its rendezvous store to port 0 itself, so
    two launches at once (tests run in parallel, other jobs on the machine) never race for a port
    that ``free_port`` found free a moment earlier.
    """
    where = ["--standalone"] if port is None else ["--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={port}"]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *where, *args]


def run(cmd: list[str], env: dict[str, str], timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout kill that group and fail with its output."""
    p = subprocess.Popen(cmd, env=env, cwd=cwd or ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        raise AssertionError(f"{' '.join(cmd[:6])} ... hung for {timeout} s; output:\n{out[-4000:]}") from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, "")
