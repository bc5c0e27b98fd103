"""``gclf predict``'s output rows: CSV, JSON Lines or a JSON array written as they come, and the resume of
a killed run from the rows it left.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Sequence, TextIO

from gclf.errors import UserError
from gclf.io import atomic_write, dumps_json

OUTPUT_FORMATS = (".csv", ".jsonl", ".json")
RESUMABLE_FORMATS = (".csv", ".jsonl")  # written a row at a time; a .json array is written whole at the end
NO_FACE = "no face found"

Row = dict[str, Any]


# --- output -----------------------------------------------------------------------------------


def output_format(path: str, resume: bool = False) -> str:
    """``.csv``, ``.jsonl`` or ``.json``, from the output file's name; ``resume`` needs one written as it goes."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UserError(f"--out {path}: use a .csv, .jsonl or .json file name")
    if resume and suffix not in RESUMABLE_FORMATS:
        raise UserError(f"--resume: {path} is a JSON array, written whole at the end; use .csv or .jsonl")
    return suffix


def cell(column: str, value: Any) -> str:
    """A CSV cell: empty for None, 6 decimals for a probability, 4 for a detection score, ``true`` or
    ``false`` as in JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if column == "probability":
        return f"{value:.6f}"
    if column == "detection_score":
        return f"{value:.4f}"
    return str(value)


def json_row(row: Row, columns: Sequence[str]) -> dict[str, Any]:
    """``row``'s ``columns``, floats to 6 decimals, None as null."""
    return {c: round(row[c], 6) if isinstance(row[c], float) else row[c] for c in columns}


def write_rows(chunks: Iterable[list[Row]], out: str | None, columns: Sequence[str], append: bool = False) -> None:
    """Write each list of rows as it comes (:meth:`Predictor.stream`) and flush it, so a killed run
    keeps the rows it wrote: to ``out`` (``.csv`` with a header; ``.jsonl``, one JSON object a line;
    added to the end with ``append``), or as CSV to stdout. A ``.json`` file, one array, appears
    only when the run ends, written whole as :func:`gclf.io.atomic_write` does."""
    if out is None:
        write_csv(sys.stdout, chunks, columns, header=True)
    elif output_format(out) == ".json":
        atomic_write(out, lambda tmp: write_json_array(tmp, chunks, columns))
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a" if append else "w", encoding="utf-8", newline="") as f:
            if output_format(out) == ".csv":
                write_csv(f, chunks, columns, header=f.tell() == 0)
            else:
                for rows in chunks:
                    f.writelines(json.dumps(json_row(row, columns)) + "\n" for row in rows)
                    f.flush()


def write_csv(f: TextIO, chunks: Iterable[list[Row]], columns: Sequence[str], header: bool) -> None:
    writer = csv.writer(f, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for rows in chunks:
        writer.writerows([cell(c, row[c]) for c in columns] for row in rows)
        f.flush()


def write_json_array(path: str, chunks: Iterable[list[Row]], columns: Sequence[str]) -> None:
    """The rows as one JSON array, as :func:`gclf.io.dumps_json` writes a list (keys sorted)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        opening = "[\n"
        for rows in chunks:
            for row in rows:
                f.write(opening + textwrap.indent(dumps_json(json_row(row, columns), digits=6).rstrip("\n"), "  "))
                opening = ",\n"
        f.write("[]\n" if opening == "[\n" else "\n]\n")


# --- resuming ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """Rows counted as they pass: what ``gclf predict`` reports and its exit code."""

    rows: int = 0
    failed: int = 0
    no_face: int = 0  # photos searched in vain (--detect-faces)
    photos: int = 0  # inputs with a predicted row
    first_failure: Row | None = None
    last_predicted: str | None = None  # the path of the last predicted row: its further faces are one photo

    def add(self, row: Row) -> None:
        self.rows += 1
        if row["error"]:
            self.failed += 1
            self.no_face += row["error"] == NO_FACE
            self.first_failure = self.first_failure or row
        elif row["path"] != self.last_predicted:
            self.photos += 1
            self.last_predicted = row["path"]


def resume_output(path: str, columns: Sequence[str]) -> tuple[Counter[str], Tally]:
    """Make the output ``path`` of an earlier, killed run ready to be added to, and say what it holds.

    Its rows are kept except those of its last input, which are cut off to be done again: a kill
    may have torn the last line, or fallen between two faces of one photo (--detect-faces). Returns
    how many times each path was done, for :func:`selected`, and the kept rows' :class:`Tally`.
    A missing file holds nothing; a file of other rows stops with a :class:`UserError`.
    """
    done: Counter[str] = Counter()
    tally = Tally()
    if not os.path.exists(path):
        return done, tally
    with open(path, "rb+") as f:
        keep, input_rows = 0, []  # where the rows of the last input read start, and those rows
        for start, row in output_rows(f, path, columns):
            if not input_rows or row.get("face") in (None, "", 0, "0") or row["path"] != input_rows[0]["path"]:
                if input_rows:
                    done[input_rows[0]["path"]] += 1
                    for kept in input_rows:
                        tally.add(kept)
                keep, input_rows = start, []
            input_rows.append(row)
        f.truncate(keep)  # with no row, the header goes too and is written again
    return done, tally


def output_rows(f: BinaryIO, path: str, columns: Sequence[str]) -> Iterator[tuple[int, Row]]:
    """``(offset, row)`` of each whole row in the ``.csv`` or ``.jsonl`` output ``f`` (its CSV header
    must be ``columns``); a line that is no such row stops with a :class:`UserError`."""
    is_csv = output_format(path, resume=True) == ".csv"
    lines = complete_lines(f)
    if is_csv:
        header = next(lines, None)
        if header is not None and read_row(header[1], columns, is_csv) != dict(zip(columns, columns)):
            raise not_our_rows(path, columns, 0)  # read as a row, the header holds each column's name
    for start, line in lines:
        row = read_row(line, columns, is_csv)
        if row is None:
            raise not_our_rows(path, columns, start)
        yield start, row


def read_row(line: bytes, columns: Sequence[str], is_csv: bool) -> Row | None:
    """A line of a ``.csv`` or ``.jsonl`` output as a row (CSV cells as strings), or None when it is none."""
    try:
        row = dict(zip(columns, next(csv.reader([line.decode("utf-8")])), strict=True)) if is_csv else json.loads(line)
    except ValueError:  # undecodable bytes, a CSV line of another length, not JSON
        return None
    return row if isinstance(row, dict) and sorted(row) == sorted(columns) else None


def not_our_rows(path: str, columns: Sequence[str], offset: int) -> UserError:
    return UserError(
        f"--resume: {path} holds other than rows of {','.join(columns)} (at byte {offset}); "
        "was it written with other options (--detect-faces)?"
    )


def complete_lines(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of each line of ``f`` up to a last one a kill left without its newline."""
    offset = 0
    for line in f:
        if not line.endswith(b"\n"):
            return
        yield offset, line
        offset += len(line)
