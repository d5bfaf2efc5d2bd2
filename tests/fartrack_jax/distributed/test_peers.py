"""The trainer's stall watch in a process alone (`peers.stall_watch`): it names a loop whose progress stopped,
after the start-up limit before the first step and the stall limit after it, and stays quiet while the loop
moves and once the block has ended."""

import threading
import time

import pytest

from fartrack_jax.distributed import peers


@pytest.fixture
def limits(monkeypatch):
  monkeypatch.setattr(peers._Alone, "limits", None)  # pylint: disable=protected-access
  peers.watch_alone(stall_timeout_s=0.6, startup_timeout_s=1.5)


def _watch(seconds, moving_every=None, started=True):
  """Runs a stall_watch block for `seconds`, reporting progress every `moving_every` s; returns its calls."""
  calls = []
  with peers.stall_watch(calls.append, interval_s=0.1):
    peers.run_starting()  # as the trainer begins a run
    peers.progress("step 1", started=started)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
      time.sleep(moving_every or 0.05)
      if moving_every:
        peers.progress("step 2", started=True)
  return calls


def test_a_loop_that_stops_is_named_with_its_phase_after_the_stall_limit(limits):
  del limits
  started = time.monotonic()
  calls = []
  with peers.stall_watch(lambda line: calls.append((time.monotonic() - started, line)), interval_s=0.1):
    peers.run_starting()
    peers.progress("reading training batch 7", started=True)
    time.sleep(1.2)
  assert len(calls) == 1, calls
  seconds, line = calls[0]
  assert 0.6 < seconds < 1.0, calls
  assert line.startswith("the run stalled: its training loop has not moved for") and "(more than 0.6 s)" in line
  assert "stuck in reading training batch 7" in line


def test_before_the_first_step_the_start_up_limit_applies(limits):
  del limits
  assert _watch(1.0, started=False) == []  # 1.0 s < the start-up limit of 1.5 s
  line, = _watch(2.0, started=False)
  assert "(more than 1.5 s, before its first step)" in line and "stuck in step 1" in line


def test_a_moving_loop_and_an_ended_block_are_not_named(limits):
  del limits
  assert _watch(1.5, moving_every=0.2) == []
  calls = []
  with peers.stall_watch(calls.append, interval_s=0.1):
    peers.progress("step 1", started=True)
  time.sleep(1.0)  # the loop is over: nothing to watch
  assert calls == [] and "stall-watch" not in [t.name for t in threading.enumerate()]


def test_nothing_is_watched_unless_an_entry_point_set_the_limits(monkeypatch):
  monkeypatch.setattr(peers._Alone, "limits", None)  # pylint: disable=protected-access
  assert _watch(1.0) == []
