"""Runs scripts/train.py with one fault injected into one process of a job (tests only).

  FARTRACK_FAULT=KIND@N:PROCESS python tests/fault_driver.py <train.py flags, including --process_id>

KIND, in process PROCESS only (the others run normally):
  oom      the N-th call of the train step raises XLA's out-of-memory error (`RESOURCE_EXHAUSTED`);
  compile  the first call of the train step (where XLA compiles it) raises an XLA error;
  data     reading training batch N raises an OSError, as an unreadable file would;
  python   the N-th call of the train step raises ZeroDivisionError (a bug in the loop);
  stall    reading training batch N never returns (a stalled read or a wedged worker).
"""

import json
import os
import runpy
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from fartrack_jax.training import steps, trainer  # pylint: disable=g-import-not-at-top,wrong-import-position


class _Iterator:
  """The trainer's data iterator with batch `at` replaced by `fault()`; checkpointing still sees grain's."""

  def __init__(self, inner, at, fault):
    self._inner, self._at, self._fault, self._count = inner, at, fault, 0

  def __iter__(self):
    return self

  def __next__(self):
    self._count += 1
    if self._count == self._at:
      self._fault()
    return next(self._inner)

  # grain's checkpoint handler treats an iterator that is not its own DatasetIterator as the older kind whose
  # state is bytes.
  def get_state(self) -> bytes:
    return json.dumps(self._inner.get_state()).encode()

  def set_state(self, state: bytes) -> None:
    self._inner.set_state(json.loads(state))

  def __getattr__(self, name):
    return getattr(self._inner, name)


def _inject(kind: str, at: int) -> None:
  make_train_step = steps.make_train_step

  def faulty_train_step(*args, **kwargs):
    step = make_train_step(*args, **kwargs)
    calls = [0]

    def call(*a):
      calls[0] += 1
      if kind == "compile" and calls[0] == 1:
        raise jax.errors.JaxRuntimeError("INTERNAL: injected: failed to compile the train step")
      if kind == "oom" and calls[0] == at:
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                                         "17179869184 bytes (injected)")
      if kind == "python" and calls[0] == at:
        raise ZeroDivisionError("injected: division by zero")
      return step(*a)
    return call

  steps.make_train_step = faulty_train_step
  default_data = trainer.default_data

  def faulty_data(config, workdir, split, *args, **kwargs):
    data = default_data(config, workdir, split, *args, **kwargs)
    if split != "train" or kind not in ("data", "stall"):
      return data

    def fault():
      if kind == "data":
        raise OSError("injected: cannot read frame 00000007.jpg")
      time.sleep(3600)

    class Data:
      def __iter__(self):
        return _Iterator(iter(data), at, fault)
    return Data()

  trainer.default_data = faulty_data


def main():
  kind, _, where = os.environ["FARTRACK_FAULT"].partition("@")
  at, _, process = where.partition(":")
  me = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--process_id=")), "0")
  if me == process:
    _inject(kind, int(at))
  sys.argv = [os.path.join(ROOT, "scripts", "train.py"), *sys.argv[1:]]
  runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
  main()
