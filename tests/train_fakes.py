"""In-memory frame batches for training-loop tests: example i is a pure function of (seed, i), like the
real pipeline, so resumed and sharded runs can be compared without reading images."""

import grain
import jax
import numpy as np

from tests.conftest import load_config


class FrameSource:
  """Templates/search of noise around a bright square whose position gives the target tokens, so a model
  can learn something in a few steps. `nan_from` makes examples with index >= nan_from contain NaN."""

  def __init__(self, config, seed, nan_from=None):
    self.config, self.seed, self.nan_from = config, seed, nan_from

  def __len__(self):
    return 1 << 30

  def __getitem__(self, index):
    d, m = self.config.data, self.config.model
    rng = np.random.default_rng([self.seed, index])
    t, s = d.template.size, d.search.size
    templates = rng.normal(0, 0.3, (d.template.number, t, t, 3)).astype(np.float32)
    templates[:, t // 4:3 * t // 4, t // 4:3 * t // 4] += 2.0
    search = rng.normal(0, 0.3, (s, s, 3)).astype(np.float32)
    x0, y0 = rng.integers(0, s // 2, 2)
    size = s // 4
    search[y0:y0 + size, x0:x0 + size] += 2.0
    corners = np.array([x0, y0, x0 + size, y0 + size], np.float32) / s
    tokens = ((corners + (m.range * 0.5 - 0.5)) * (m.bins - 1)).astype(np.int32)
    if self.nan_from is not None and index >= self.nan_from:
      search[0, 0, 0] = np.nan
    return {"templates": templates, "search": search, "search_box": corners, "target_tokens": tokens,
            "skips": np.zeros(3, np.int32)}


def make_data_fn(nan_from=None):
  def data_fn(config, workdir, split, per_process_batch, seed, num_examples=None):
    del workdir, split
    import jax  # pylint: disable=g-import-not-at-top
    source = FrameSource(config, seed, nan_from)
    stop = num_examples if num_examples is not None else 1 << 30
    ds = grain.MapDataset.range(jax.process_index(), stop, jax.process_count()).map(source.__getitem__)
    return ds.to_iter_dataset().batch(per_process_batch, drop_remainder=True)
  return data_fn


def frame_config(max_steps, **run):
  """Stage 1 at smoke size for training-loop runs on `make_data_fn`'s batches: 64 examples an epoch, 4
  epochs, lr 1e-3, `max_steps` steps, a checkpoint every 3 steps, validation every 100; `run` sets other
  `run.*` fields."""
  config = load_config("fartrack", "smoke")
  config.data.train.sample_per_epoch = 64
  config.train.epoch = 4
  config.train.lr = 1e-3
  config.run.max_steps = max_steps
  config.run.checkpoint_every_steps = 3
  config.run.val_every_steps = 100
  for k, v in run.items():
    config.run[k] = v
  return config


def max_abs_diff(a, b) -> float:
  """The largest absolute difference between two pytrees of the same structure."""
  return max(float(np.abs(x - y).max()) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
