"""How a process of the job stops: for a preemption, after its own failure, after a peer's.

A SIGTERM to any process makes every process save the same step (`PreemptionNotice`; in a job of several,
JAX's preemption sync point) and exit with `PREEMPTED_EXIT_STATUS`. A process that fails names what went wrong
and whether relaunching helps (`describe_failure`), publishes that line to the others and ends at once
(`exit_with_failure`); one stopped because a peer died or stalled ends with `PEER_FAILED_EXIT_STATUS`
(`exit_lost_peer`, the peer watcher's callback). Details: docs/preemption_and_failures.md.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import jax

from fartrack_jax.distributed import peers

# sysexits' EX_TEMPFAIL: the run stopped for a preemption after committing a checkpoint; starting the same
# launch again resumes it. Errors exit with 1, usage errors with 2, a finished run with 0.
PREEMPTED_EXIT_STATUS = 75
# The exit status of a process stopped because another process of the job failed or stalled.
PEER_FAILED_EXIT_STATUS = 1


class PreemptionNotice:
  """Whether the job was told to stop (SIGTERM to any of its processes), and at which step to save.

  In a job of several processes JAX's preemption service takes SIGTERM and agrees with every process on one
  step (`reached_preemption_sync_point`, via orbax's `CheckpointManager.reached_preemption`, which must be
  asked at every step). A single process has no such service: within this context a SIGTERM handler
  records the signal (main thread only; elsewhere the signal keeps its default), and the next step is the
  one to save."""

  def __init__(self):
    self.received_at: float | None = None
    self._previous = None

  def __enter__(self) -> "PreemptionNotice":
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def _on_signal(self, signum, frame) -> None:
    del signum, frame
    if self.received_at is None:
      self.received_at = time.time()

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def reached(self, step: int, checkpoints) -> bool:
    """Whether `step` is the step to save and stop at; `checkpoints` has `reached_preemption(step)`."""
    if self.received_at is not None:
      return True
    if checkpoints.reached_preemption(step):
      self.received_at = time.time()
      return True
    return False


def describe_failure(error: BaseException, phase: str) -> tuple[str, bool]:
  """One line naming what went wrong in this process while it was in `phase` (`compiling ...`, `step 12`,
  `reading training batch 12`), with the advice that fits, and whether starting the same launch again
  resumes (only for a lost peer). A data error is `DataError`-like: its class name ends in `DataError`
  or `DatasetError`."""
  text = " ".join(str(error).split())
  first = text[:300]
  name = type(error).__name__
  if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
    return (f"out of device memory in {phase} ({first[:200]}); this will not pass by relaunching: lower "
            "train.global_batch_size, shard the params over more devices (--config.run.fsdp), or use "
            "--config.dtype=bfloat16", False)
  if name.endswith(("DataError", "DatasetError")):
    return (f"data error in {phase}: {first}; fix or remove the data it names (or rebuild the packed "
            "dataset); relaunching before that repeats it", False)
  if isinstance(error, jax.errors.JaxRuntimeError) and phase.startswith("compiling"):
    return (f"the training step did not compile ({first}); this will not pass by relaunching: check the "
            "config (model size, dtype, run.fsdp) against the devices, or report the XLA message", False)
  if jax.process_count() > 1 and isinstance(error, jax.errors.JaxRuntimeError):
    return f"the job lost a process in {phase} ({first}); start the same launch again to resume", True
  return (f"{name} in {phase}: {first} (a bug or bad input, not a lost host: the traceback is above; "
          "relaunching repeats it)", False)


def exit_with_failure(line: str) -> None:
  """Prints `error: process I of N: <line>`, publishes it to the other processes (`report_failure`) and ends
  this process at once with status 1 (in a job of several, a normal exit would wait for the others in
  `jax.distributed.shutdown`'s barrier)."""
  peers.report_failure(line)
  sys.stdout.flush()
  sys.stderr.write(f"error: process {jax.process_index()} of {jax.process_count()}: {line}\n")
  sys.stderr.flush()
  os._exit(1)  # pylint: disable=protected-access


def exit_lost_peer(message: str, resumable: bool = True) -> None:
  """Ends this process at once because another process of the job died, stalled or failed (`message` says
  which), with `PEER_FAILED_EXIT_STATUS`; `resumable`: relaunching resumes from the latest checkpoint."""
  advice = (". Start the same launch again: it resumes from the latest finished checkpoint" if resumable
            else "")
  sys.stderr.write(f"error: process {jax.process_index()} of {jax.process_count()}: {message}; stopping this "
                   f"process{advice}\n")
  sys.stderr.flush()
  sys.stdout.flush()
  os._exit(PEER_FAILED_EXIT_STATUS)  # pylint: disable=protected-access
