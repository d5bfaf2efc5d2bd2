"""Reading and writing the datasets' plain-text annotation files (evaluation and training sets alike).

The original reads every box file with `np.loadtxt` and one fixed delimiter per benchmark (',' for
GOT-10k/LaSOT/TrackingNet/UAV123, '\\t' for NFS, ',' then whitespace for OTB, whose files mix both). One
parser here accepts commas, tabs and spaces in any mix, so each benchmark's files read the same way, and a
bad line fails with its file and 1-based line number instead of numpy's message. Like `np.loadtxt`, it
skips blank lines and `#` comments and reads `NaN` (UAV123 marks frames without a target that way).
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import warnings

import numpy as np

from data_pipelines import paths

_SEPARATOR = re.compile(r"\s*,\s*|\s+")


class DatasetError(ValueError):
  """A dataset folder that does not match its layout: missing files, bad lines, count mismatches."""


def _numbered_lines(path: str, text: str | None = None) -> list[tuple[int, str, list[str]]]:
  """(1-based line number, line, fields) of every line that holds data (of `text`, read from `path` unless
  given)."""
  if text is None:
    text = _read_text(path)
  out = []
  for number, line in enumerate(text.splitlines(), start=1):
    line = line.split("#", 1)[0].strip()
    if line:
      out.append((number, line, _SEPARATOR.split(line)))
  return out


def _read_text(path: str) -> str:
  """The file's text (local, or on a bucket through etils.epath); DatasetError when it is missing or
  unreadable."""
  try:
    return paths.read_text(path)
  except FileNotFoundError:
    raise DatasetError(f"{path}: missing annotation file") from None
  except (OSError, UnicodeDecodeError) as e:
    if isinstance(e, OSError) and paths.is_storage_failure(path, e):
      raise  # a failed request to a bucket, not a bad file
    raise DatasetError(f"{path}: cannot read annotation file ({e})") from None


def _to_float(path: str, number: int, line: str, field: str) -> float:
  try:
    return float(field)
  except ValueError:
    raise DatasetError(f"{path}:{number}: malformed annotation line {line!r} "
                       f"(cannot read {field!r} as a number)") from None


def _loadtxt_boxes(path: str, text: str | None = None) -> np.ndarray | None:
  """numpy's C parser for the common case of one delimiter throughout (about 10x faster on LaSOT's
  long files); None when it fails, and the line-by-line parser then finds and names the bad line."""
  for delimiter in (",", None):
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty file warns
        source = path if text is None else io.StringIO(text)
        boxes = np.loadtxt(source, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except (ValueError, OSError):
      continue
    if boxes.size and boxes.shape[1] == 4:
      return boxes
  return None


def read_boxes(path: str, text: str | None = None) -> np.ndarray:
  """Box file, one `x y w h` per line -> [N, 4] float64, values as written (no coordinate shift). `text`:
  the file's contents, already read; `path` then only names it in errors. A path on a bucket (`gs://...`) is
  read through etils.epath."""
  if text is None and paths.is_remote(path):
    text = _read_text(path)
  boxes = _loadtxt_boxes(path, text)
  if boxes is not None:
    return boxes
  rows = []
  for number, line, fields in _numbered_lines(path, text):
    if len(fields) != 4:
      raise DatasetError(f"{path}:{number}: malformed annotation line {line!r} "
                         f"(expected 4 numbers x,y,w,h separated by ',' or whitespace, got {len(fields)})")
    rows.append([_to_float(path, number, line, field) for field in fields])
  return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def read_labels(path: str, text: str | None = None) -> np.ndarray:
  """Per-frame label file -> [N] float64. Values may sit one per line (GOT-10k's absence.label and
  cover.label) or all on one comma-separated line (LaSOT's full_occlusion.txt and out_of_view.txt). `text`:
  the file's contents, already read (`read_boxes`' `text`); a path on a bucket is read through etils.epath."""
  values = []
  for number, line, fields in _numbered_lines(path, text):
    values.extend(_to_float(path, number, line, field) for field in fields)
  return np.asarray(values, dtype=np.float64)


def format_boxes(boxes: np.ndarray) -> str:
  """[N, 4] boxes as comma-separated lines; integers without a decimal point, like LaSOT's files."""
  lines = []
  for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
    lines.append(",".join(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in box))
  return "\n".join(lines) + "\n"


def write_text_atomic(path: str, text: str) -> None:
  """Writes through a temporary file in the same folder and renames it, so that an interrupted run never
  leaves a truncated annotation that a reader would take for a complete one."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes the file private
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
