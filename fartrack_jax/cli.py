"""Small helpers shared by the entry points in scripts/."""

from __future__ import annotations

import os
import sys


def repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def normalize_flag_names(argv: list[str]) -> list[str]:
  """Lets `--torch-repo=X` mean absl's `--torch_repo=X`. Dotted config overrides (`--config.a.b`) and
  values are left alone."""
  out = []
  for arg in argv:
    if arg.startswith("--") and not arg.startswith("--config"):
      name, sep, value = arg[2:].partition("=")
      arg = "--" + name.replace("-", "_") + sep + value
    out.append(arg)
  return out


def run(main) -> None:
  """absl's app.run with dashed flag names accepted."""
  from absl import app  # pylint: disable=g-import-not-at-top
  sys.argv = normalize_flag_names(sys.argv)
  app.run(main)
