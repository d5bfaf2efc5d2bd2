"""Every host reads the same training data: the fingerprint's comparison, and the check across two real
processes (a coordinator on localhost, its key-value store)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fartrack_jax.training import same_data
from tests.conftest import ROOT



class _Seq:
  def __init__(self, name, frames):
    self.name, self.boxes = name, np.zeros((frames, 4))


class _Dataset:
  def __init__(self, name, sequences):
    self.name, self._sequences = name, [_Seq(n, f) for n, f in sequences]

  def __len__(self):
    return len(self._sequences)

  def sequence(self, i):
    return self._sequences[i]


def _sequences(n, changed=None):
  out = [(f"seq{i:04d}", 10 + i % 7) for i in range(n)]
  if changed is not None:
    out[changed] = (out[changed][0], out[changed][1] + 1)
  return out


def test_identical_data_has_no_difference():
  a = same_data.fingerprint([_Dataset("LASOT", _sequences(600))])
  assert same_data.first_difference(a, a) == ("", None)


def test_the_first_difference_is_found_in_its_block():
  a = same_data.fingerprint([_Dataset("GOT10K_vottrain", _sequences(5)), _Dataset("LASOT", _sequences(600))])
  b = same_data.fingerprint([_Dataset("GOT10K_vottrain", _sequences(5)), _Dataset("LASOT", _sequences(600, 300))])
  summary, block = same_data.first_difference(a, b)
  assert "LASOT" in summary and block == (1, 300 // same_data.BLOCK)


def test_other_dataset_names_are_a_difference():
  a = same_data.fingerprint([_Dataset("LASOT", _sequences(3))])
  b = same_data.fingerprint([_Dataset("COCO17", _sequences(3))])
  summary, block = same_data.first_difference(a, b)
  assert "LASOT" in summary and "COCO17" in summary and block is None


_WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import jax
    jax.distributed.initialize("127.0.0.1:{port}", num_processes=2, process_id=int(sys.argv[1]),
                               initialization_timeout=60)
    from tests.fartrack_jax.training.test_same_data import _Dataset, _sequences
    from fartrack_jax.training import same_data
    changed = {changed!r} if jax.process_index() == 1 else None
    try:
      same_data.check_same_data([_Dataset("LASOT", _sequences(600, changed))], "train", timeout_s=60)
      print("same data")
    except same_data.SameDataError as e:
      print("error:", e)
""")


def _two_processes(tmp_path, changed):
  from fartrack_jax import distributed  # pylint: disable=g-import-not-at-top
  script = tmp_path / "worker.py"
  script.write_text(_WORKER.format(root=ROOT, port=distributed.free_port(), changed=changed))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, str(script), str(i)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  return [p.communicate(timeout=300)[0] for p in procs]


@pytest.mark.slow
def test_two_processes_with_different_data_stop_with_one_line_naming_both_and_the_sequence(tmp_path):
  outputs = _two_processes(tmp_path, changed=300)
  for out in outputs:
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out[-3000:]
    assert "process 0 and process 1" in errors[0] and "LASOT sequence 300: seq0300 (" in errors[0], errors[0]
  assert outputs[0].splitlines()[-1] == outputs[1].splitlines()[-1]  # the same verdict everywhere


@pytest.mark.slow
def test_two_processes_with_the_same_data_go_on(tmp_path):
  outputs = _two_processes(tmp_path, changed=None)
  assert all(out.strip().splitlines()[-1] == "same data" for out in outputs), outputs
