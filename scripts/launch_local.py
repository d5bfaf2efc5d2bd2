r"""Rehearses a multi-host job on this machine: N processes of K CPU devices each, one coordinator.

  python scripts/launch_local.py --processes 2 --devices-per-process 4 -- \
      scripts/train.py --config configs/fartrack.py:variant=smoke --workdir /tmp/rehearsal \
      --data-root synthetic=/tmp/synthetic_got10k

Each process runs the command after `--` with `--coordinator_address=localhost:PORT --num_processes=N
--process_id=I` appended (a free port unless --port is given) and
`XLA_FLAGS=--xla_force_host_platform_device_count=K`, so `jax.distributed` joins them into one job of N*K
devices with gloo collectives, as the hosts of a TPU slice are joined. Output lines are prefixed with `[I] `.
When one process fails, the others are stopped (SIGTERM, then SIGKILL) and the launcher exits with its status.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from fartrack_jax import cli
from fartrack_jax import distributed

_PROCESSES = flags.DEFINE_integer("processes", 2, "Processes (simulated hosts) to start.")
_DEVICES = flags.DEFINE_integer("devices_per_process", 4, "CPU devices of each process "
                                "(also --devices-per-process).")
_PORT = flags.DEFINE_integer("port", None, "Coordinator port on localhost (default: a free one).")
_GRACE = flags.DEFINE_float("grace_s", 10.0, "After one process fails, seconds the others get between "
                            "SIGTERM and SIGKILL (also --grace-s).")


def main(argv):
  command = argv[1:]
  if not command:
    raise SystemExit("give the command to run after `--`, e.g. -- scripts/train.py --config ... (see --help)")
  if _PROCESSES.value < 1 or _DEVICES.value < 1:
    raise SystemExit("--processes and --devices-per-process must be at least 1")
  sys.exit(distributed.run_local_job(_PROCESSES.value, _DEVICES.value, command, _PORT.value, _GRACE.value))


if __name__ == "__main__":
  cli.run(main)
