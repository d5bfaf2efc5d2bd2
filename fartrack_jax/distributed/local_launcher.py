"""A job of several processes on this machine, for rehearsing multi-host runs on CPU devices: what
scripts/launch_local.py runs (docs/multihost_tpu.md)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from fartrack_jax.distributed import stopping


def free_port() -> int:
  """A TCP port on localhost that nothing listens on now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def cpu_devices_env(devices: int) -> dict[str, str]:
  """This process's environment for a JAX process with `devices` simulated CPU devices: XLA_FLAGS keeps its
  other flags and gets the device count."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]))


def local_job_commands(processes: int, devices_per_process: int, command: list[str], port: int,
                       python: str | None = None) -> list[tuple[list[str], dict[str, str]]]:
  """`(argv, environment)` of each process of a rehearsal on this machine: `command` (a script and its
  arguments) plus the cluster flags, with `devices_per_process` CPU devices each."""
  env = cpu_devices_env(devices_per_process)
  argv = list(command)
  if argv and argv[0].endswith(".py"):
    argv = [python or sys.executable, *argv]
  return [([*argv, f"--coordinator_address=localhost:{port}", f"--num_processes={processes}",
            f"--process_id={i}"], env) for i in range(processes)]


def run_local_job(processes: int, devices_per_process: int, command: list[str], port: int | None = None,
                  grace_s: float = 10.0, out=None) -> int:
  """Starts the processes of `local_job_commands`, prints their merged output line by line prefixed with
  `[i] `, and when one fails stops the others (SIGTERM, SIGKILL after `grace_s`). Returns 0 when every
  process succeeded, `stopping.PREEMPTED_EXIT_STATUS` when they stopped for a preemption (a SIGTERM to one of them
  or to this launcher; the others are left to save the agreed step), else the exit status of the first
  that failed."""
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
        failed = next(((i, c) for i, c in enumerate(codes) if c not in (None, 0, stopping.PREEMPTED_EXIT_STATUS)), None)
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
    if stopping.PREEMPTED_EXIT_STATUS in codes:
      say(f"[launch] preempted (status {stopping.PREEMPTED_EXIT_STATUS}): start the same launch to resume\n")
      return stopping.PREEMPTED_EXIT_STATUS
    say("[launch] every process finished\n")
    return 0
  return failed[1] if failed[1] > 0 else 128 - failed[1]
