"""Read TSV, CSV and JSONL rows with the file name and line number of every row, for errors.

GLUE's TSV files are *not* quoted CSV: a ``"`` inside a sentence is data (and some sentences
open a quote they never close), so TSV is split on tabs only, never parsed by a CSV dialect.
CSV files (user files, ``sms-spam``) are real RFC-4180 CSV: quoted fields may hold commas and
newlines. Every problem a user can cause is raised as a one-line
:class:`~pldrop.errors.UserError` that starts with ``FILE:LINE:``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pldrop.errors import UserError


@dataclass
class Rows:
    """The rows of one delimited file: the column names and ``(line, fields)`` pairs.

    Args:
        path: the file (for messages).
        columns: the header's names, or the names given for a header-less file.
        rows: ``(line number, fields)``; the line is 1-based and is where the row starts.
        header_line: the line of the header (0 when the file has none).
    """

    path: Path
    columns: list[str]
    rows: Iterator[tuple[int, list[str]]]
    header_line: int

    def index(self, name: str) -> int:
        """The position of column ``name``, or a UserError naming the header's line."""
        try:
            return self.columns.index(name)
        except ValueError:
            where = f"{self.path}:{max(self.header_line, 1)}"
            raise UserError(
                f"{where}: no column {name!r} in the header (columns: {', '.join(self.columns)})"
            ) from None


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise a UserError saying what was expected there."""
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected {what})")
    return path


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line, split on ``\\n`` only (``\\r\\n`` is stripped).

    Text mode would also split on a lone ``\\r``, U+2028 and friends, which are data here.
    A UTF-8 byte-order mark at the start (MRPC's ``msr_paraphrase_*.txt``) is dropped.
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            yield lineno, line.rstrip("\n").removesuffix("\r")


def read_tsv(path: Path, columns: Sequence[str] | None = None) -> Rows:
    """Rows of a tab-separated file without quoting.

    Args:
        path: the file.
        columns: names for a file without a header (CoLA); ``None`` reads the first line as the
            header.

    Each row must have as many fields as the header; blank lines are skipped.
    """
    lines = _lines(path)
    header_line = 0
    if columns is None:
        first = next(lines, None)
        if first is None:
            raise UserError(f"{path}:1: empty file (expected a tab-separated header line)")
        header_line, text = first
        columns = text.split("\t")
    names = list(columns)

    def rows() -> Iterator[tuple[int, list[str]]]:
        for lineno, text in lines:
            if not text.strip():
                continue
            fields = text.split("\t")
            if len(fields) != len(names):
                raise UserError(
                    f"{path}:{lineno}: expected {len(names)} tab-separated fields "
                    f"({', '.join(names)}), got {len(fields)}"
                )
            yield lineno, fields

    return Rows(Path(path), names, rows(), header_line)


def read_csv(path: Path) -> Rows:
    """Rows of a comma-separated file with a header and standard ``"`` quoting.

    Read whole: quoted fields may span lines, and user CSV files are small.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 ({e.reason})") from None
    names, rows = parse_csv_text(text, str(path))
    return Rows(Path(path), names, iter(rows), 1)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of every non-blank line of a JSON-lines file."""
    for lineno, text in _lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
        yield lineno, obj


def parse_csv_text(text: str, name: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line, fields)`` rows of CSV held in memory (a file read from a wheel).

    ``name`` is used in messages in place of a path.

    >>> parse_csv_text('a,b\\n1,"x, ""y"" z"\\n', "t.csv")
    (['a', 'b'], [(2, ['1', 'x, "y" z'])])
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    out: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise UserError(f"{name}:{start}: cannot parse this CSV row ({e})") from None
        if header is None:
            header = row
        elif row and row != [""]:
            if len(row) != len(header):
                raise UserError(
                    f"{name}:{start}: expected {len(header)} comma-separated fields "
                    f"({', '.join(header)}), got {len(row)}"
                )
            out.append((start, row))
    if header is None:
        raise UserError(f"{name}:1: empty file (expected a header line)")
    return header, out
