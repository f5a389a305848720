"""Read documents from local files, one streaming reader per format.

- ``.txt``: a blank line ends a document (lines of one paragraph are joined with ``\\n``).
- ``.jsonl``, or ``.json`` with one object per line: each object's ``text_field``.
- ``.json`` that starts with ``[``: a list of objects (this one is read whole).
- ``.csv`` (quoted fields allowed) / ``.tsv`` (no quoting): a header row, then ``text_column``.

Files are read as bytes and checked as they stream: a NUL byte means a binary file (or UTF-16 /
UTF-32 text, told apart by its byte-order mark or its pattern of zero bytes), and bytes that are
not UTF-8 are reported with their offset. Blank documents are skipped.

Long documents are split: a document over ``MAX_DOC_CHARS`` characters (a file with no blank
lines is one paragraph, a 50 MB line one document) becomes pieces of at most that size, cut at
a line end or a space where there is one. Tokenizing one giant document takes memory in
proportion (a 50 MB line took 7 GB); pieces stream like any other documents. The pieces of a
document are split into training and validation independently.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from pldrop.errors import UserError

SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".tsv")
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, which some editors write; it is dropped
MAX_DOC_CHARS = 100_000  # longer documents are split (about 20k tokens; 40 pages of text)
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
              (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def _wide_encoding(raw: bytes, offset: int) -> str | None:
    """``UTF-16`` or ``UTF-32`` when ``raw`` (a line, at ``offset`` in its file) looks like it, else None.

    >>> _wide_encoding("hi".encode("utf-16"), 0), _wide_encoding("hello".encode("utf-16-le"), 0)
    ('UTF-16', 'UTF-16')
    >>> _wide_encoding(b"ab\\x00c", 0) is None
    True
    """
    if offset == 0:
        for bom, name in _WIDE_BOMS:
            if raw.startswith(bom):
                return name
    body = raw.rstrip(b"\r\n\x00")
    if len(body) >= 4 and (not any(body[1::2]) or not any(body[0::2])):  # ASCII as UTF-16: every other byte 0
        return "UTF-16"
    return None


def decode_line(raw: bytes, path: Path, offset: int) -> str:
    """Decode one line of ``path`` that starts at byte ``offset``, or raise a UserError.

    >>> decode_line(b"caf\\xc3\\xa9\\n", Path("a.txt"), 0)
    'café\\n'
    >>> decode_line(b"ab\\xe9", Path("a.txt"), 10)
    Traceback (most recent call last):
    ...
    pldrop.errors.UserError: a.txt is not UTF-8 text (byte 0xe9 at offset 12); re-encode it as UTF-8
    """
    wide = _wide_encoding(raw, offset) if offset == 0 or b"\0" in raw else None
    if wide:
        raise UserError(f"{path} is {wide} text, not UTF-8; re-encode it as UTF-8 "
                        f"(e.g. iconv -f {wide} -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix})")
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


def split_long(doc: str, limit: int = MAX_DOC_CHARS) -> Iterator[str]:
    """``doc`` in pieces of at most ``limit`` characters, cut after the last newline (or else the
    last space) of each piece where there is one.

    >>> list(split_long("aaa bbb\\nccc ddd", 8))
    ['aaa bbb', 'ccc ddd']
    >>> list(split_long("abcdefghij", 4))
    ['abcd', 'efgh', 'ij']
    """
    while len(doc) > limit:
        cut = doc.rfind("\n", 1, limit + 1)
        if cut <= 0:
            cut = doc.rfind(" ", 1, limit + 1)
        cut = cut if cut > 0 else limit
        piece, doc = doc[:cut].strip(), doc[cut:].lstrip()
        if piece:
            yield piece
    if doc.strip():
        yield doc.strip()


def _split_all(docs: Iterator[str], limit: int) -> Iterator[str]:
    for doc in docs:
        if len(doc) <= limit:
            yield doc
        else:
            yield from split_long(doc, limit)


def read_file(path: Path, *, text_field: str = "text", text_column: str = "text",
              max_doc_chars: int = MAX_DOC_CHARS) -> Iterator[str]:
    """Documents of one local file, dispatched on its suffix (see the module docstring); documents
    over ``max_doc_chars`` characters are split (:func:`split_long`)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _split_all(read_txt(path), max_doc_chars)
    if suffix in (".jsonl", ".json"):
        return _split_all(read_json(path, text_field), max_doc_chars)
    if suffix in (".csv", ".tsv"):
        return _split_all(read_table(path, text_column), max_doc_chars)
    raise UserError(f"unsupported corpus file {path}: use {', '.join(SUFFIXES)}, "
                    "a folder of .txt files, a recipe name or hf:NAME")
