"""Whether a path is on remote storage (`gs://...`): the one check the data layers and
`fartrack_jax.storage` share."""

import os


def is_remote(path) -> bool:
  """A URL with a scheme (`gs://bucket/...`), as etils.epath reads it, rather than a local path."""
  return "://" in os.fspath(path)
