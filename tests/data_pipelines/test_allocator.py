"""`allocator.tune_malloc`: freed example-sized buffers are reused without page faults, in every process that
makes examples, unless the user set glibc's knobs."""

import os
import subprocess
import sys

from absl import flags
import numpy as np
import pytest

from data_pipelines import allocator
from data_pipelines.training import pipeline
from tests.conftest import ROOT

# Buffers of an example's sizes (150 kB to 3 MB: records, decoded windows, crops, float outputs) made and
# freed by 4 threads, as grain's read threads do; prints the minor page faults of the third pass (the first two
# grow the heaps and arenas).
_WORKLOAD = """
import concurrent.futures, resource, sys
import numpy as np
from data_pipelines import allocator
tuned = allocator.tune_malloc() if sys.argv[1] == "tune" else None
sizes = np.random.default_rng(0).integers(150_000, 3_000_000, 400)
def example(k):
  buffers = [np.ones(int(s), np.uint8) for s in sizes[k * 8:(k + 1) * 8]]
  return sum(int(b[::4096].sum()) for b in buffers)
def faults():
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(example, range(50)))
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
faults()
print(tuned, faults())
"""


def _faults(mode, **env):
  env = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS} | env
  out = subprocess.run([sys.executable, "-c", _WORKLOAD, mode], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  tuned, count = out.stdout.split()
  return tuned, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_tuned_malloc_reuses_freed_buffers_without_page_faults():
  plain = _faults("plain")
  tuned = _faults("tune")
  assert plain[1] > 2000, plain  # glibc's defaults: the buffers are mapped and unmapped, faulting every page
  assert tuned == ("True", tuned[1]) and tuned[1] < plain[1] / 10, (plain, tuned)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_users_own_malloc_settings_are_kept():
  tuned, count = _faults("tune", MALLOC_TRIM_THRESHOLD_="131072")
  assert tuned == "False"
  assert count > 2000, count  # their setting (a small trim threshold) still returns memory


def _tuned_in(index):
  return {"tuned": np.array(allocator._state == (os.getpid(), True))}  # pylint: disable=protected-access


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize("workers", [0, 1])
def test_examples_are_made_in_a_tuned_process(workers, monkeypatch):
  """In this process (grain's read threads) and in a grain worker process (spawned: its own malloc)."""
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  for name in allocator.USER_SETTINGS:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(allocator, "_state", None)  # not tuned by an earlier test in this process
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  batch = next(iter(pipeline.example_dataset(_tuned_in, 2, num_workers=workers, num_examples=2)))
  assert batch["tuned"].tolist() == [True, True]
