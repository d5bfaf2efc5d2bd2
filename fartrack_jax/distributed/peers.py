"""The peer watcher of a job of several processes: heartbeats, the progress of each training loop, and the
failures processes publish, all through the coordinator's key-value store.

It tells a dead process (no heartbeat) from a stalled one (alive, but its training loop has not moved:
`progress`), and a process that failed and said why (`report_failure`) from one that went silent, so that every
other process stops naming it instead of waiting (docs/preemption_and_failures.md).
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
import time
import traceback

import jax
from jax._src import distributed as jax_distributed

_ALIVE = "fartrack/alive/"
_PROGRESS = "fartrack/progress/"
_FINISHED = "fartrack/finished/"
_FAILED = "fartrack/failed/"
# Set when this process ends normally (`mark_finished`, or at exit): from then on the coordination service
# going away is the job's own shutdown, not a lost peer.
_ENDING = threading.Event()


class _Progress:
  """What this process's main loop is doing: a counter that moves at each unit of progress, and the phase
  it is in (`reading training batch 13`, `step 13`, ...). Written by the main thread, read by the watcher."""
  count = 0
  phase = "starting"
  started = False  # the first training step has run: from then on the stall timeout applies


def progress(phase: str, started: bool = False) -> None:
  """Marks progress of the training loop, entering `phase`; `started=True` once the first step ran. Costs
  two assignments: the watcher thread publishes it."""
  _Progress.count += 1
  _Progress.phase = phase
  if started:
    _Progress.started = True


def run_starting() -> None:
  """Marks the start of a training run: progress in phase `starting`, its first step still to come (a process
  that trains twice, or a relaunch in the same process, is held to the start-up limit again)."""
  progress("starting")
  _Progress.started = False


def current_phase() -> str:
  """The phase this process's training loop is in (`progress`), for naming where a failure happened."""
  return _Progress.phase


def _stall_limit(started: bool, stall_timeout_s: float, startup_timeout_s: float) -> float:
  """How long a loop may go without progress: `startup_timeout_s` until its first step, then `stall_timeout_s`."""
  return stall_timeout_s if started else startup_timeout_s


def _not_moved(secs: float, started: bool, phase: str, stall_timeout_s: float, startup_timeout_s: float) -> str:
  """`has not moved for 62 s (more than 60 s), stuck in <phase>`: how both watchers name a stalled loop."""
  limit = _stall_limit(started, stall_timeout_s, startup_timeout_s)
  return (f"has not moved for {secs:.0f} s (more than {limit:g} s{'' if started else ', before its first step'}), "
          f"stuck in {phase}")


class _Alone:
  """The stall limits of a process that runs alone (`watch_alone`), or None when nothing set them."""
  limits: tuple[float, float] | None = None


def watch_alone(stall_timeout_s: float, startup_timeout_s: float) -> None:
  """A process without peers has no watcher thread of `watch_peers`; with this, each `stall_watch` (the
  trainer's) names a stalled training loop with these limits, as the peer watcher does in a job of several.
  The entry points call it (through `joining.initialize`) when they run as one process."""
  _Alone.limits = (float(stall_timeout_s), float(startup_timeout_s))


def _main_thread_stack() -> str:
  frame = sys._current_frames().get(threading.main_thread().ident)  # pylint: disable=protected-access
  return "".join(traceback.format_stack(frame)) if frame is not None else "  (not available)\n"


@contextlib.contextmanager
def stall_watch(on_stalled, interval_s: float = 1.0):
  """While the block runs, in a process alone whose limits `watch_alone` set: a daemon thread calls
  `on_stalled(line)` (which should end the process) once the training loop's progress (`progress`) has not
  moved for the stall limit (the start-up limit before its first step), after printing where the main thread
  is stuck. Only for the block: a process that trains twice (tests, the quick start) is not watched between
  runs. In a job of several, `watch_peers` does this for every process; here it does nothing."""
  limits = _Alone.limits
  if limits is None or jax.process_count() > 1:
    yield
    return
  stop = threading.Event()

  def loop():
    count, since = _Progress.count, time.monotonic()
    while not stop.wait(interval_s):
      now = time.monotonic()
      if _Progress.count != count:
        count, since = _Progress.count, now
        continue
      started = _Progress.started
      if now - since > _stall_limit(started, *limits) and not stop.is_set():
        sys.stderr.write("the stalled training loop's main thread (most recent call last):\n"
                         + _main_thread_stack())
        sys.stderr.flush()
        on_stalled(f"the run stalled: its training loop {_not_moved(now - since, started, _Progress.phase, *limits)}. "
                   "Look at what it waits for (a data read, the storage, a wedged worker; the stack above); "
                   "--stall_timeout_s/--startup_timeout_s set the limits, and starting the same command again "
                   "resumes from the latest checkpoint")
        return

  thread = threading.Thread(target=loop, name="stall-watch", daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()


def report_failure(message: str) -> None:
  """Publishes this process's failure (one line) so that the other processes stop naming it at once,
  instead of waiting for its heartbeat to stop. Best effort; a no-op in a single-process run."""
  client = jax_distributed.global_state.client
  if client is None:
    return
  try:
    client.key_value_set(f"{_FAILED}{jax.process_index()}", message[:500], allow_overwrite=True)
  except Exception:  # pylint: disable=broad-except
    pass


def mark_finished() -> None:
  """Tells the other processes' watchers that this one ends normally (its silence is not a failure), and stops
  this process's own watcher: `jax.distributed.shutdown` (at exit) closes the client it polls."""
  _ENDING.set()
  client = jax_distributed.global_state.client
  if client is not None:
    try:
      client.key_value_set(f"{_FINISHED}{jax.process_index()}", "1", allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except
      pass


def published_failure(wait_s: float = 3.0) -> str | None:
  """`process I failed: <reason>` when another process of the job published its failure (`report_failure`)
  within `wait_s`, else None. A collective fails in the survivors as soon as a failed peer exits, often
  before their watchers have read its reason."""
  client = jax_distributed.global_state.client
  if client is None:
    return None
  deadline = time.monotonic() + wait_s
  while True:
    try:
      failed = {k.rsplit("/", 1)[-1]: v for k, v in client.key_value_dir_get(_FAILED)}
    except Exception:  # pylint: disable=broad-except
      return None
    failed.pop(str(jax.process_index()), None)
    if failed:
      name, reason = sorted(failed.items())[0]
      return f"process {name} failed: {reason}"
    if time.monotonic() > deadline:
      return None
    time.sleep(0.2)


def watch_peers(timeout_s: float, on_lost, interval_s: float = 1.0, stall_timeout_s: float = 600,
                startup_timeout_s: float = 1800) -> None:
  """Starts a daemon thread that publishes, every `interval_s`, a heartbeat of this process and the
  progress of its main loop (`progress`) in the coordinator's key-value store, and reads everyone's. It calls
  `on_lost(message, resumable)` (which should end the process) when
    * a peer published a failure (`report_failure`): named with its reason, not resumable by relaunching;
    * a peer's heartbeat has not moved for `timeout_s` (it died) or the coordinator stops answering:
      resumable, the same launch starts again from the latest checkpoint;
    * a live process's progress has not moved for `stall_timeout_s` (`startup_timeout_s` before its first
      step: start-up, restore and the first compile); only processes that report progress (the trainer
      does, from its start) are watched for it. When several are stuck, those not waiting in a
      training step are named: the others wait for them in a collective.

  Why not rely on JAX alone: a collective with a dead peer may block instead of failing, and the
  coordination service then aborts the process from C++ after its heartbeat timeout with a page of
  stack traces; this watcher fires first (use half that timeout) and says which process went silent."""
  client = jax_distributed.global_state.client
  me, count = jax.process_index(), jax.process_count()
  if client is None or count == 1:
    return

  def loop():
    beat = 0
    start = time.monotonic()
    seen = {i: (None, start) for i in range(count) if i != me}
    moved = {i: (None, start) for i in range(count)}
    while True:
      beat += 1
      if _ENDING.is_set():
        return
      try:
        client.key_value_set(f"{_ALIVE}{me}", str(beat), allow_overwrite=True)
        client.key_value_set(f"{_PROGRESS}{me}",
                             f"{_Progress.count}|{int(_Progress.started)}|{_Progress.phase}", allow_overwrite=True)
        alive = dict(client.key_value_dir_get(_ALIVE))
        progress_now = dict(client.key_value_dir_get(_PROGRESS))
        finished = {k.rsplit("/", 1)[-1] for k, _ in client.key_value_dir_get(_FINISHED)}
        failed = {k.rsplit("/", 1)[-1]: v for k, v in client.key_value_dir_get(_FAILED)}
      except Exception as e:  # pylint: disable=broad-except
        if _ENDING.is_set() or jax_distributed.global_state.client is not client:
          return  # this process is shutting down: the client was closed under the call
        on_lost(f"the coordinator (process 0) stopped answering: {' '.join(str(e).split())[:200]}", True)
        return
      if _ENDING.is_set():
        return
      for name, reason in sorted(failed.items()):
        if name != str(me):
          on_lost(f"process {name} failed: {reason}", False)
          return
      now = time.monotonic()
      for i in list(seen):
        if str(i) in finished:
          seen.pop(i)
          moved.pop(i, None)
          continue
        value = alive.get(f"{_ALIVE}{i}", alive.get(f"{_ALIVE.rstrip('/')}/{i}"))
        last_value, since = seen[i]
        if value != last_value:
          seen[i] = (value, now)
        elif now - since > timeout_s:
          state = "never reported" if value is None else "has been silent"
          on_lost(f"process {i} {state} for {now - since:.0f} s (more than {timeout_s:g} s)", True)
          return
      for i in list(moved):
        value = progress_now.get(f"{_PROGRESS}{i}", progress_now.get(f"{_PROGRESS.rstrip('/')}/{i}"))
        count_, started_, phase_ = (value or "0|0|starting").split("|", 2)
        if moved[i][0] is None or count_ != moved[i][0][0]:
          moved[i] = ((count_, started_, phase_), now)
        else:
          moved[i] = ((count_, started_, phase_), moved[i][1])
      # A process that never reported progress (count 0: evaluation, or not yet in the trainer) is watched
      # for its heartbeat only.
      stuck = [(i, v[2], now - since, v[1] == "1") for i, (v, since) in moved.items()
               if v is not None and v[0] != "0"
               and now - since > _stall_limit(v[1] == "1", stall_timeout_s, startup_timeout_s)]
      # A process waiting inside a step is usually waiting for another one's collective: it is named only when
      # no process stuck elsewhere shows up within a grace period (each process's own view of the others'
      # progress lags by up to two polls, so the one that stalled first may cross the limit second).
      culprits = [s for s in stuck if not s[1].startswith("step ")]
      if stuck and not culprits:
        grace = max(5.0, 3 * interval_s)
        culprits = [s for s in stuck
                    if s[2] > _stall_limit(s[3], stall_timeout_s, startup_timeout_s) + grace]
      if culprits:
        names = "; ".join(f"process {i} {_not_moved(secs, started, phase, stall_timeout_s, startup_timeout_s)}"
                          for i, phase, secs, started in culprits)
        on_lost(f"the job stalled: {names}. Look at that process's log and what it waits for (a data read, "
                f"the storage, a wedged worker); --stall_timeout_s/--startup_timeout_s set the limits", False)
        return
      time.sleep(interval_s)

  # Runs before `jax.distributed.shutdown` (registered earlier, and atexit runs last-in first-out).
  atexit.register(_ENDING.set)
  threading.Thread(target=loop, name="peer-watch", daemon=True).start()
