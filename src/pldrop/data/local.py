"""Read documents from local files, one streaming reader per format.

- ``.txt``: a blank line ends a document (lines of one paragraph are joined with ``\\n``).
- ``.jsonl``, or ``.json`` with one object per line: each object's ``text_field``.
- ``.json`` that starts with ``[``: a list of objects (this one is read whole).
- ``.csv`` (quoted fields allowed) / ``.tsv`` (no quoting): a header row, then ``text_column``.

Files are read as bytes and checked as they stream: a NUL byte means a binary file, and bytes
that are not UTF-8 are reported with their offset. Blank documents are skipped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from pldrop.errors import UserError

SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".tsv")
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, which some editors write; it is dropped


def decode_line(raw: bytes, path: Path, offset: int) -> str:
    """Decode one line of ``path`` that starts at byte ``offset``, or raise a UserError.

    >>> decode_line(b"caf\\xc3\\xa9\\n", Path("a.txt"), 0)
    'café\\n'
    >>> decode_line(b"ab\\xe9", Path("a.txt"), 10)
    Traceback (most recent call last):
    ...
    pldrop.errors.UserError: a.txt is not UTF-8 text (byte 0xe9 at offset 12); re-encode it as UTF-8
    """
    nul = raw.find(b"\0")
    if nul >= 0:
        raise UserError(f"{path} looks like a binary file (NUL byte at offset {offset + nul}); "
                        "pass UTF-8 text (.txt, .jsonl, .json, .csv, .tsv)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                        f"{offset + e.start}); re-encode it as UTF-8") from None


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line, line ends kept, checking every byte."""
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            text = decode_line(raw, path, offset)
            yield number, (text.removeprefix("\ufeff") if number == 1 else text)
            offset += len(raw)


def read_txt(path: Path) -> Iterator[str]:
    """Paragraphs of a text file: a blank (or whitespace-only) line ends a document."""
    para: list[str] = []
    for _, line in iter_lines(path):
        if line.strip():
            para.append(line.rstrip("\r\n"))
        elif para:
            yield "\n".join(para).strip()
            para = []
    if para:
        yield "\n".join(para).strip()


def _field(obj: object, field: str, where: str) -> str | None:
    if not isinstance(obj, dict):
        raise UserError(f"{where} is a JSON {type(obj).__name__}, expected an object "
                        f"with a {field!r} field")
    if field not in obj:
        keys = ", ".join(map(str, obj)) or "none"
        raise UserError(f"{where} has no field {field!r} (fields: {keys}); "
                        "choose the text field with text_field / --text-field")
    value = obj[field]
    if value is not None and not isinstance(value, str):
        raise UserError(f"{where}: field {field!r} is a {type(value).__name__}, expected a string")
    return value


def read_json(path: Path, text_field: str = "text") -> Iterator[str]:
    """``text_field`` of each object in a JSON list, or in JSON Lines (one object per line)."""
    first = b""
    with open(path, "rb") as f:
        while not first.strip() and (block := f.read(4096)):
            first += block
    if first.removeprefix(BOM).lstrip().startswith(b"["):
        text = decode_line(path.read_bytes(), path, 0).removeprefix("\ufeff")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON ({e})") from None
        for i, obj in enumerate(data):
            value = _field(obj, text_field, f"{path} item {i}")
            if value and value.strip():
                yield value.strip()
        return
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {number} is not valid JSON ({e.msg}); "
                            "expected a JSON list or one JSON object per line") from None
        value = _field(obj, text_field, f"{path} line {number}")
        if value and value.strip():
            yield value.strip()


def read_table(path: Path, text_column: str = "text") -> Iterator[str]:
    """``text_column`` of each row of a CSV (quoted fields allowed) or TSV (no quoting)."""
    # Documents can be long; the csv module's default cap is 128 KiB per field.
    csv.field_size_limit(2**31 - 1)
    if path.suffix.lower() == ".tsv":
        rows = csv.reader((line for _, line in iter_lines(path)), delimiter="\t",
                          quoting=csv.QUOTE_NONE)
    else:
        rows = csv.reader(line for _, line in iter_lines(path))
    header = next(rows, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    if text_column not in header:
        raise UserError(f"{path} has no column {text_column!r} (columns: {', '.join(header)}); "
                        "choose it with text_column / --text-column")
    col = header.index(text_column)
    for row in rows:
        if len(row) > col and row[col].strip():
            yield row[col].strip()


def read_file(path: Path, *, text_field: str = "text", text_column: str = "text") -> Iterator[str]:
    """Documents of one local file, dispatched on its suffix (see the module docstring)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return read_txt(path)
    if suffix in (".jsonl", ".json"):
        return read_json(path, text_field)
    if suffix in (".csv", ".tsv"):
        return read_table(path, text_column)
    raise UserError(f"unsupported corpus file {path}: use {', '.join(SUFFIXES)}, "
                    "a folder of .txt files, a recipe name or hf:NAME")
