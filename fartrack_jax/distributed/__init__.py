"""Multi-process jobs: joining one, watching its peers, stopping well, and rehearsing one on this machine.

  joining.py         the cluster flags and `initialize_from_flags` (explicit flags, `--distributed=true|auto`),
                     failing in one line that names who never joined (`DistributedError`);
  peers.py           the peer watcher: heartbeats, each training loop's progress (`progress`), published
                     failures; tells a dead process from a stalled one;
  stopping.py        preemption (`PreemptionNotice`, `PREEMPTED_EXIT_STATUS`) and failures (`describe_failure`,
                     `exit_with_failure`);
  local_launcher.py  several processes on CPU devices of this machine (scripts/launch_local.py).

The names below are the entry points' (scripts/train.py, scripts/evaluate.py, scripts/launch_local.py):
`from fartrack_jax import distributed; distributed.initialize_from_flags(...)`. Docs:
docs/multihost_tpu.md, docs/preemption_and_failures.md.
"""

from fartrack_jax.distributed.joining import define_flags
from fartrack_jax.distributed.joining import DistributedError
from fartrack_jax.distributed.joining import initialize
from fartrack_jax.distributed.joining import initialize_from_flags
from fartrack_jax.distributed.local_launcher import free_port
from fartrack_jax.distributed.local_launcher import local_job_commands
from fartrack_jax.distributed.local_launcher import run_local_job
from fartrack_jax.distributed.peers import current_phase
from fartrack_jax.distributed.peers import mark_finished
from fartrack_jax.distributed.peers import progress
from fartrack_jax.distributed.peers import published_failure
from fartrack_jax.distributed.stopping import describe_failure
from fartrack_jax.distributed.stopping import exit_with_failure
from fartrack_jax.distributed.stopping import PEER_FAILED_EXIT_STATUS
from fartrack_jax.distributed.stopping import PREEMPTED_EXIT_STATUS
from fartrack_jax.distributed.stopping import PreemptionNotice
