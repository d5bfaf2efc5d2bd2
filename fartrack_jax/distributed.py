"""Joining a multi-process JAX job: the cluster flags of scripts/train.py and scripts/evaluate.py.

Three ways in, one call (`initialize_from_flags`) before anything touches a device:
  * explicit: `--coordinator_address HOST:PORT --num_processes N --process_id I` on every process (a rehearsal
    on one machine with scripts/launch_local.py, or any cluster without auto-detection). On CPU devices the
    cross-process collectives go through gloo (XLA:CPU has no other).
  * `--distributed=true`: `jax.distributed.initialize()` finds the coordinator itself (TPU VM metadata, SLURM,
    GKE...); scripts/launch_tpu.sh passes it on a multi-host slice.
  * `--distributed=auto` (default): as `true` when the environment describes several workers
    (JAX_COORDINATOR_ADDRESS, a multi-host TPU_WORKER_HOSTNAMES), otherwise a single process.

Failures end in `DistributedError` with one line naming the process and the time waited: a peer that never
joins (`--init_timeout_s`), `--num_processes` that disagrees between processes, a peer that dies mid-run (the
coordination service notices the missing heartbeats within `--heartbeat_timeout_s` and stops every other
process).

Preemptions and failures (docs/preemption_and_failures.md): a SIGTERM to any process makes every process
save the same step (`PreemptionNotice`; in a job of several, JAX's preemption sync point) and exit with
`PREEMPTED_EXIT_STATUS`; a process that fails publishes its one-line reason (`report_failure`), so the
others stop naming it instead of waiting for its silence; the peer watcher tells a dead process (no
heartbeat) from a stalled one (alive, but its training loop has not moved: `progress`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from absl import flags


class DistributedError(RuntimeError):
  """The job could not be formed (a peer missing or disagreeing)."""


# sysexits' EX_TEMPFAIL: the run stopped for a preemption after committing a checkpoint; starting the same
# launch again resumes it. Errors exit with 1, usage errors with 2, a finished run with 0.
PREEMPTED_EXIT_STATUS = 75
# The exit status of a process stopped because another process of the job failed or stalled.
PEER_FAILED_EXIT_STATUS = 1


def define_flags() -> None:
  """Registers the cluster flags on absl's global flag set (each entry point calls it once)."""
  flags.DEFINE_enum(
      "distributed", "auto", ["auto", "true", "false"],
      "Call jax.distributed.initialize() first: true = always (it finds the coordinator on TPU VMs, SLURM, "
      "GKE), auto = when the environment describes several workers (JAX_COORDINATOR_ADDRESS, a multi-host "
      "TPU_WORKER_HOSTNAMES) or the cluster flags are given, false = never (one process).")
  flags.DEFINE_string(
      "coordinator_address", None,
      "HOST:PORT of process 0's coordination service; with --num_processes and --process_id, joins the job "
      "without auto-detection (scripts/launch_local.py passes all three). Also --coordinator-address.")
  flags.DEFINE_integer("num_processes", None, "Processes in the job, the same on every process "
                       "(also --num-processes).")
  flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1; 0 runs the coordinator "
                       "and writes the shared files (also --process-id).")
  flags.DEFINE_integer("init_timeout_s", 300, "Seconds to wait for every process to join before giving up "
                       "with an error naming the ones that did not (also --init-timeout-s).")
  flags.DEFINE_integer("heartbeat_timeout_s", 100, "Seconds without a heartbeat after which a process counts "
                       "as dead and the others stop with an error (also --heartbeat-timeout-s).")
  flags.DEFINE_integer("stall_timeout_s", 600, "Seconds a live process's training loop may go without "
                       "progress (a step, a batch, a validation, a checkpoint) before every process stops "
                       "naming it as stalled (also --stall-timeout-s).")
  flags.DEFINE_integer("startup_timeout_s", 1800, "As --stall_timeout_s, until the first training step has "
                       "run: start-up, restore and the first compile (also --startup-timeout-s).")


def _environment_wants_distributed() -> bool:
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize_from_flags(roll_call_dir=None) -> bool:
  """`initialize` with the values of the flags `define_flags` registered."""
  f = flags.FLAGS
  return initialize(f.distributed, f.coordinator_address, f.num_processes, f.process_id,
                    init_timeout_s=f.init_timeout_s, heartbeat_timeout_s=f.heartbeat_timeout_s,
                    roll_call_dir=roll_call_dir, stall_timeout_s=f.stall_timeout_s,
                    startup_timeout_s=f.startup_timeout_s)


def _answer_roll_call(roll_call_dir, process_id: int) -> None:
  """Leaves `<roll_call_dir>/.roll_call/process_<id>` holding the time it joined: the one trace a process
  leaves before the job forms, so that the others can name who never came. Best effort (the directory
  is checked for writing later, with its own error)."""
  from fartrack_jax import storage  # pylint: disable=g-import-not-at-top
  try:
    storage.write_text_atomic(storage.as_path(roll_call_dir) / ".roll_call" / f"process_{process_id}",
                              f"{time.time():.3f}\n")
  except Exception:  # pylint: disable=broad-except
    pass


def _absent(roll_call_dir, num_processes: int, since: float) -> list[int] | None:
  """The processes without a roll-call entry written since `since` (this launch); None if unreadable."""
  from fartrack_jax import storage  # pylint: disable=g-import-not-at-top
  folder = storage.as_path(roll_call_dir) / ".roll_call"
  absent = []
  try:
    for i in range(num_processes):
      entry = folder / f"process_{i}"
      if not entry.exists() or float(entry.read_text().strip() or 0) < since:
        absent.append(i)
  except Exception:  # pylint: disable=broad-except
    return None
  return absent


def initialize(mode: str = "auto", coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, init_timeout_s: int = 300,
               heartbeat_timeout_s: int = 100, roll_call_dir=None, stall_timeout_s: float = 600,
               startup_timeout_s: float = 1800) -> bool:
  """Joins the job (see the module docstring); returns whether `jax.distributed` was initialised.

  Must run before the first use of a device. Raises `DistributedError` (one line) when the flags are
  incomplete or contradictory, or the job does not form within `init_timeout_s`. With the explicit flags
  and a `roll_call_dir` every process can see (the shared workdir or results dir), the error names the
  processes that never joined.
  """
  explicit = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
              "--process_id": process_id}
  given = [k for k, v in explicit.items() if v is not None]
  if given and len(given) < 3:
    missing = [k for k, v in explicit.items() if v is None]
    raise DistributedError(f"{', '.join(given)} given without {', '.join(missing)}: give all three")
  if given and mode == "false":
    raise DistributedError("--distributed=false contradicts --coordinator_address/--num_processes/--process_id")
  if given:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise DistributedError(f"--process_id={process_id} is not in 0..{num_processes - 1} "
                             f"(--num_processes={num_processes})")
    if ":" not in coordinator_address:
      raise DistributedError(f"--coordinator_address={coordinator_address!r}: expected HOST:PORT")
  elif mode == "false" or (mode == "auto" and not _environment_wants_distributed()):
    return False

  import jax  # pylint: disable=g-import-not-at-top
  # Only XLA:CPU reads it: the collectives of CPU devices across processes (a rehearsal on one machine).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  who = f"process {process_id} of {num_processes}" if given else "this process"
  place = f" at {coordinator_address}" if given else ""

  def never_formed():
    # XLA's client aborts the process from C++ when its own timeout expires (a page of stack traces, and
    # it cannot say who is missing); this fires first. Joining waits for every process, so all this
    # process knows is that it is here and at least one other is not.
    expected = (f"start all {num_processes} processes with --coordinator_address={coordinator_address} "
                f"--num_processes={num_processes} and --process_id 0..{num_processes - 1}" if given else
                "check that every host runs the same command")
    absent = _absent(roll_call_dir, num_processes, started) if given and roll_call_dir else None
    if absent:
      names = ", ".join(str(i) for i in absent)
      missing = (f"process{'es' if len(absent) > 1 else ''} {names} never joined (no roll call in "
                 f"{roll_call_dir}/.roll_call since this launch began)")
    else:
      missing = (f"this process is ready, at least one other"
                 f"{' (or the coordinator, process 0)' if process_id else ''} never joined")
    sys.stderr.write(f"error: {who}: the job did not form{place} within --init_timeout_s={init_timeout_s} s: "
                     f"{missing}; {expected}\n")
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access

  # A peer of this launch wrote its entry at most `init_timeout_s` before this process started (it waits
  # that long), plus some slack for the hosts' clocks; older entries are an earlier launch's.
  started = time.time() - init_timeout_s - 5
  if given and roll_call_dir:
    # In the background: on a bucket that does not exist the storage client retries for minutes, and that
    # error belongs to the workdir check after the job forms.
    threading.Thread(target=_answer_roll_call, args=(roll_call_dir, process_id), daemon=True).start()
  watchdog = threading.Timer(init_timeout_s, never_formed)
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=init_timeout_s + 60,
                               heartbeat_timeout_seconds=heartbeat_timeout_s)
  except Exception as e:  # pylint: disable=broad-except
    watchdog.cancel()
    # XLA's status text spans lines (and repeats the RPC's details); its first line names the cause.
    detail = " ".join(str(e).split())[:400]
    raise DistributedError(f"{who}: the job did not form{place} within --init_timeout_s={init_timeout_s}: "
                           f"{detail}") from None
  watchdog.cancel()
  if given:
    _check_agreement(num_processes, process_id, init_timeout_s)
  watch_peers(max(heartbeat_timeout_s / 2, 2.0), _exit_lost_peer, stall_timeout_s=stall_timeout_s,
              startup_timeout_s=startup_timeout_s)
  return True


def _exit_lost_peer(message: str, resumable: bool = True) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  advice = (". Start the same launch again: it resumes from the latest finished checkpoint" if resumable
            else "")
  sys.stderr.write(f"error: process {jax.process_index()} of {jax.process_count()}: {message}; stopping this "
                   f"process{advice}\n")
  sys.stderr.flush()
  sys.stdout.flush()
  os._exit(PEER_FAILED_EXIT_STATUS)  # pylint: disable=protected-access


def _check_agreement(num_processes: int, process_id: int, timeout_s: int) -> None:
  """Every process must have been started with the same --num_processes: each publishes its own in the
  coordinator's key-value store, process 0 compares, the others wait for its verdict."""
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client
  client.key_value_set(f"fartrack/num_processes/{process_id}", str(num_processes))
  verdict_key = "fartrack/num_processes/verdict"
  if process_id == 0:
    seen = {}
    for i in range(num_processes):
      try:
        seen[i] = int(client.blocking_key_value_get(f"fartrack/num_processes/{i}", timeout_s * 1000))
      except Exception:  # pylint: disable=broad-except
        seen[i] = None
    bad = {i: n for i, n in seen.items() if n != num_processes}
    verdict = "ok" if not bad else (
        f"--num_processes disagrees: process 0 has {num_processes}, "
        + ", ".join(f"process {i} has {n if n is not None else 'not reported'}" for i, n in sorted(bad.items())))
    client.key_value_set(verdict_key, verdict)
  else:
    try:
      verdict = client.blocking_key_value_get(verdict_key, timeout_s * 1000)
    except Exception:  # pylint: disable=broad-except
      verdict = f"process 0 gave no --num_processes verdict within {timeout_s} s"
  if verdict != "ok":
    raise DistributedError(f"process {process_id}: {verdict}")


def free_port() -> int:
  """A TCP port on localhost that nothing listens on now."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def local_job_commands(processes: int, devices_per_process: int, command: list[str], port: int,
                       python: str | None = None) -> list[tuple[list[str], dict[str, str]]]:
  """`(argv, environment)` of each process of a rehearsal on this machine: `command` (a script and its
  arguments) plus the cluster flags, with `devices_per_process` CPU devices each."""
  flags_env = [f for f in os.environ.get("XLA_FLAGS", "").split()
               if not f.startswith("--xla_force_host_platform_device_count")]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=" ".join(flags_env + [f"--xla_force_host_platform_device_count={devices_per_process}"]))
  argv = list(command)
  if argv and argv[0].endswith(".py"):
    argv = [python or sys.executable, *argv]
  return [([*argv, f"--coordinator_address=localhost:{port}", f"--num_processes={processes}",
            f"--process_id={i}"], env) for i in range(processes)]


def run_local_job(processes: int, devices_per_process: int, command: list[str], port: int | None = None,
                  grace_s: float = 10.0, out=None) -> int:
  """Starts the processes of `local_job_commands`, prints their merged output line by line prefixed with
  `[i] `, and when one fails stops the others (SIGTERM, SIGKILL after `grace_s`). Returns 0 when every
  process succeeded, `PREEMPTED_EXIT_STATUS` when they stopped for a preemption (a SIGTERM to one of them
  or to this launcher; the others are left to save the agreed step), else the exit status of the first
  that failed."""
  import subprocess  # pylint: disable=g-import-not-at-top
  out = out or sys.stdout
  port = port or free_port()
  lock = threading.Lock()

  def say(line):
    with lock:
      out.write(line)
      out.flush()

  say(f"[launch] {processes} processes x {devices_per_process} CPU devices, coordinator localhost:{port}\n")
  procs = []
  for argv, env in local_job_commands(processes, devices_per_process, command, port):
    procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True))

  def pump(i, stream):
    for raw in iter(stream.readline, b""):
      say(f"[{i}] {raw.decode('utf-8', 'replace').rstrip()}\n")

  pumps = [threading.Thread(target=pump, args=(i, p.stdout), daemon=True) for i, p in enumerate(procs)]
  for t in pumps:
    t.start()

  def stop_all(sig=signal.SIGTERM):
    for p in procs:
      if p.poll() is None:
        try:
          os.killpg(p.pid, sig)
        except ProcessLookupError:
          pass

  def on_signal(signum, _):
    say(f"[launch] signal {signum}: stopping every process\n")
    stop_all()

  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
  failed = None
  try:
    while True:
      codes = [p.poll() for p in procs]
      if failed is None:
        # A preempted process is not a failure: the others stop at the same step by themselves.
        failed = next(((i, c) for i, c in enumerate(codes) if c not in (None, 0, PREEMPTED_EXIT_STATUS)), None)
        if failed is not None:
          say(f"[launch] process {failed[0]} exited with status {failed[1]}: stopping the others\n")
          stop_all()
          deadline = time.monotonic() + grace_s
      if all(c is not None for c in codes):
        break
      if failed is not None and time.monotonic() > deadline:
        stop_all(signal.SIGKILL)
      time.sleep(0.1)
  finally:
    stop_all(signal.SIGKILL)
    for s, handler in previous.items():
      signal.signal(s, handler)
    for t in pumps:
      t.join(timeout=5)
  if failed is None:
    if PREEMPTED_EXIT_STATUS in codes:
      say(f"[launch] preempted (status {PREEMPTED_EXIT_STATUS}): start the same launch to resume\n")
      return PREEMPTED_EXIT_STATUS
    say("[launch] every process finished\n")
    return 0
  return failed[1] if failed[1] > 0 else 128 - failed[1]


def is_peer_failure(error: BaseException) -> bool:
  """Whether `error`, raised in a job of several processes, is a collective or coordination failure (a peer
  died or was stopped) rather than a problem of this process's own."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count() > 1 and isinstance(error, jax.errors.JaxRuntimeError)


def exit_after_peer_failure(error: BaseException, last_checkpoint: str = "") -> None:
  """Ends this process at once with one error line. A normal exit would first wait in
  `jax.distributed.shutdown`'s barrier for the dead peer until the heartbeat timeout, then abort."""
  first = " ".join(str(error).split())[:300]
  exit_with_failure(f"the job lost a process ({first}); start the same launch again to resume{last_checkpoint}")


def exit_with_failure(line: str) -> None:
  """Prints `error: process I of N: <line>`, publishes it to the other processes (`report_failure`) and ends
  this process at once with status 1 (in a job of several, a normal exit would wait for the others in
  `jax.distributed.shutdown`'s barrier)."""
  import jax  # pylint: disable=g-import-not-at-top
  report_failure(line)
  sys.stdout.flush()
  sys.stderr.write(f"error: process {jax.process_index()} of {jax.process_count()}: {line}\n")
  sys.stderr.flush()
  os._exit(1)  # pylint: disable=protected-access


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


def report_failure(message: str) -> None:
  """Publishes this process's failure (one line) so that the other processes stop naming it at once,
  instead of waiting for its heartbeat to stop. Best effort; a no-op in a single-process run."""
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client
  if client is None:
    return
  import jax  # pylint: disable=g-import-not-at-top
  try:
    client.key_value_set(f"{_FAILED}{jax.process_index()}", message[:500], allow_overwrite=True)
  except Exception:  # pylint: disable=broad-except
    pass


def mark_finished() -> None:
  """Tells the other processes' watchers that this one ends normally (its silence is not a failure), and stops
  this process's own watcher: `jax.distributed.shutdown` (at exit) closes the client it polls."""
  _ENDING.set()
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client
  if client is not None:
    import jax  # pylint: disable=g-import-not-at-top
    try:
      client.key_value_set(f"{_FINISHED}{jax.process_index()}", "1", allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except
      pass


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
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
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
               and now - since > (stall_timeout_s if v[1] == "1" else startup_timeout_s)]
      # A process waiting inside a step is usually waiting for another one's collective: it is named only when
      # no process stuck elsewhere shows up within a grace period (each process's own view of the others'
      # progress lags by up to two polls, so the one that stalled first may cross the limit second).
      culprits = [s for s in stuck if not s[1].startswith("step ")]
      if stuck and not culprits:
        grace = max(5.0, 3 * interval_s)
        culprits = [s for s in stuck
                    if s[2] > (stall_timeout_s if s[3] else startup_timeout_s) + grace]
      if culprits:
        names = "; ".join(f"process {i} has not moved for {secs:.0f} s (more than "
                          f"{stall_timeout_s if started else startup_timeout_s:g} s"
                          f"{'' if started else ', before its first step'}), stuck in {phase}"
                          for i, phase, secs, started in culprits)
        on_lost(f"the job stalled: {names}. Look at that process's log and what it waits for (a data read, "
                f"the storage, a wedged worker); --stall_timeout_s/--startup_timeout_s set the limits", False)
        return
      time.sleep(interval_s)

  import atexit  # pylint: disable=g-import-not-at-top
  # Runs before `jax.distributed.shutdown` (registered earlier, and atexit runs last-in first-out).
  atexit.register(_ENDING.set)
  threading.Thread(target=loop, name="peer-watch", daemon=True).start()


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
    import jax  # pylint: disable=g-import-not-at-top
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
  import jax  # pylint: disable=g-import-not-at-top
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


def current_phase() -> str:
  """The phase this process's training loop is in (`progress`), for naming where a failure happened."""
  return _Progress.phase


def published_failure(wait_s: float = 3.0) -> str | None:
  """`process I failed: <reason>` when another process of the job published its failure (`report_failure`)
  within `wait_s`, else None. A collective fails in the survivors as soon as a failed peer exits, often
  before their watchers have read its reason."""
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client
  if client is None:
    return None
  import jax  # pylint: disable=g-import-not-at-top
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
