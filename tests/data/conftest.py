import hashlib
import zipfile
from pathlib import Path

import pytest

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "tiny.txt"


def make_wheel(folder: Path, package: str, version: str, files: dict[str, bytes]) -> tuple[Path, str]:
    """Write a minimal but valid wheel holding ``files``; return (path, sha256)."""
    dist = f"{package.replace('-', '_')}-{version}"
    path = Path(folder) / f"{dist}-py3-none-any.whl"
    meta = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {**files, **meta}.items():
            z.writestr(name, data)
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def wheel_factory():
    """:func:`make_wheel`, for tests that need a fake recipe wheel."""
    return make_wheel


@pytest.fixture(scope="session")
def tiny_corpus() -> Path:
    return TINY


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A 600-entry WordPiece tokenizer trained on tiny.txt (well under a second)."""
    from pldrop.data.local import read_txt
    from pldrop.data.tokenizer import train_wordpiece

    return train_wordpiece(read_txt(TINY), vocab_size=600, out_dir=tmp_path_factory.mktemp("tok"))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty pldrop cache root, also set as $PLDROP_CACHE so nothing touches ~/.cache."""
    root = tmp_path / "cache"
    monkeypatch.setenv("PLDROP_CACHE", str(root))
    return root
