"""Every host of a slice must read the same training data: each indexes its own --data-root (or opens the
packed sets), and two hosts with different copies would silently draw different examples.

Before the first step each process publishes a fingerprint of what it will read in the coordinator's
key-value store: per dataset its name, sequence count, frame count and a digest, and a digest per block of
`BLOCK` sequences (name and frame count of each). Process 0 compares them; for a process that differs it
asks for the lines of the first differing block and names the first differing sequence. Every process then
stops with the same one line (`SameDataError`), or carries on.
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

import jax

from data_pipelines.training.datasets import DatasetError

BLOCK = 256
TIMEOUT_S = 900  # a host may index a large native root for minutes before it publishes
_PREFIX = "fartrack/same_data"


class SameDataError(DatasetError):
  """The processes of the job would read different training data (a DatasetError: scripts/train.py prints
  it as its one error line)."""


def sequence_lines(dataset) -> list[str]:
  """One `name<TAB>frames` line per sequence of `dataset` (a TrainDataset or a packed set), in order."""
  return [f"{seq.name}\t{len(seq.boxes)}" for seq in (dataset.sequence(i) for i in range(len(dataset)))]


def _digest(lines: Sequence[str]) -> str:
  return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def fingerprint(datasets) -> dict:
  """{"datasets": [{"name", "sequences", "frames", "digest", "blocks": [digest per BLOCK sequences]}]}."""
  out = []
  for dataset in datasets:
    lines = sequence_lines(dataset)
    out.append({"name": dataset.name, "sequences": len(lines),
                "frames": sum(int(line.rsplit("\t", 1)[1]) for line in lines), "digest": _digest(lines),
                "blocks": [_digest(lines[i:i + BLOCK]) for i in range(0, len(lines), BLOCK)]})
  return {"datasets": out}


def first_difference(mine: dict, theirs: dict) -> tuple[str, tuple[int, int] | None]:
  """("", None) when the fingerprints agree; else a description of the first difference, and the
  (dataset, block) whose lines would name the first differing sequence (None when the summary says it)."""
  a, b = mine["datasets"], theirs["datasets"]
  if [d["name"] for d in a] != [d["name"] for d in b]:
    return f"datasets {[d['name'] for d in a]} against {[d['name'] for d in b]}", None
  for k, (x, y) in enumerate(zip(a, b)):
    if x["digest"] == y["digest"]:
      continue
    summary = (f"{x['name']}: {x['sequences']} sequences, {x['frames']} frames against {y['sequences']} "
               f"sequences, {y['frames']} frames")
    for block, (u, v) in enumerate(zip(x["blocks"], y["blocks"])):
      if u != v:
        return summary, (k, block)
    return f"{summary} (the first {min(x['sequences'], y['sequences'])} agree)", None
  return "", None


def _first_line_difference(name: str, block: int, mine: list[str], theirs: list[str]) -> str:
  for i, (u, v) in enumerate(zip(mine, theirs)):
    if u != v:
      return (f"{name} sequence {block * BLOCK + i}: {u.replace(chr(9), ' (') + ' frames)'} against "
              f"{v.replace(chr(9), ' (') + ' frames)'}")
  i = min(len(mine), len(theirs))
  return f"{name}: sequence {block * BLOCK + i} is the first one only one of them has"


def check_same_data(datasets, what: str = "train", timeout_s: int = TIMEOUT_S) -> None:
  """Compares this process's `datasets` with every other process's (no-op in a single process);
  SameDataError with one line naming the processes and the first difference."""
  count, me = jax.process_count(), jax.process_index()
  if count == 1:
    return
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client
  prefix = f"{_PREFIX}/{what}"
  mine = fingerprint(datasets)
  client.key_value_set(f"{prefix}/summary/{me}", json.dumps(mine))
  ms = timeout_s * 1000
  if me == 0:
    asks = {}
    problems = {}
    for p in range(1, count):
      theirs = json.loads(client.blocking_key_value_get(f"{prefix}/summary/{p}", ms))
      summary, block = first_difference(mine, theirs)
      if summary:
        problems[p] = summary
        if block is not None:
          asks[p] = block
    client.key_value_set(f"{prefix}/asks", json.dumps({str(p): b for p, b in asks.items()}))
    for p, (k, block) in asks.items():
      theirs = json.loads(client.blocking_key_value_get(f"{prefix}/lines/{p}", ms))
      lines = sequence_lines(datasets[k])[block * BLOCK:(block + 1) * BLOCK]
      problems[p] = _first_line_difference(datasets[k].name, block, lines, theirs)
    verdict = "ok" if not problems else (
        f"the processes would train on different data ({what} split; each must see the same --data-root "
        "contents or packed sets): " + "; ".join(f"process 0 and process {p}: {text}"
                                                 for p, text in sorted(problems.items())))
    client.key_value_set(f"{prefix}/verdict", verdict)
  else:
    asks = json.loads(client.blocking_key_value_get(f"{prefix}/asks", ms))
    if str(me) in asks:
      k, block = asks[str(me)]
      lines = sequence_lines(datasets[k])[block * BLOCK:(block + 1) * BLOCK]
      client.key_value_set(f"{prefix}/lines/{me}", json.dumps(lines))
    verdict = client.blocking_key_value_get(f"{prefix}/verdict", ms)
  if verdict != "ok":
    raise SameDataError(verdict)
