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
joins (`--init_timeout_s`), `--num_processes` that disagrees between processes. Once the job has formed, the
peer watcher (`peers.py`) takes over: a peer that dies or stalls mid-run stops every other process.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from absl import flags
import jax
from jax._src import distributed as jax_distributed

from fartrack_jax import storage
from fartrack_jax.distributed import peers
from fartrack_jax.distributed import stopping


class DistributedError(RuntimeError):
  """The job could not be formed (a peer missing or disagreeing)."""


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
  try:
    storage.write_text_atomic(storage.as_path(roll_call_dir) / ".roll_call" / f"process_{process_id}",
                              f"{time.time():.3f}\n")
  except Exception:  # pylint: disable=broad-except
    pass


def _absent(roll_call_dir, num_processes: int, since: float) -> list[int] | None:
  """The processes without a roll-call entry written since `since` (this launch); None if unreadable."""
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
    peers.watch_alone(stall_timeout_s, startup_timeout_s)
    return False

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
  peers.watch_peers(max(heartbeat_timeout_s / 2, 2.0), stopping.exit_lost_peer, stall_timeout_s=stall_timeout_s,
                    startup_timeout_s=startup_timeout_s)
  return True


def _check_agreement(num_processes: int, process_id: int, timeout_s: int) -> None:
  """Every process must have been started with the same --num_processes: each publishes its own in the
  coordinator's key-value store, process 0 compares, the others wait for its verdict."""
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
