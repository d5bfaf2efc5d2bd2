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
  """absl's app.run with dashed flag names accepted, and library INFO logs (orbax prints a dozen lines
  per checkpoint) hidden unless --verbosity is given."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  sys.argv = normalize_flag_names(sys.argv)
  quiet = not any(a.startswith(("--verbosity", "-v=", "--v=")) for a in sys.argv[1:])

  def wrapped(argv):
    if quiet:
      logging.set_verbosity(logging.WARNING)
    return main(argv)

  app.run(wrapped)
