"""`elp worker --processes N` passes the stop signals on to its workers and waits for them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from element_lightning_pose.cli.worker import signals_passed_on

# a worker that records the signals it gets, and ends after two
CHILD = """
import signal, sys, time
got = []
def record(signum, frame):
    got.append(signum)
    with open(sys.argv[1], "a") as f:
        f.write(f"{signum}\\n")
for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
    signal.signal(signum, record)
open(sys.argv[2], "w").close()
while len(got) < 2:
    time.sleep(0.01)
"""


@pytest.mark.skipif(
    any(signal.getsignal(s) is not signal.SIG_DFL for s in (signal.SIGUSR1, signal.SIGHUP)),
    reason="SIGUSR1 or SIGHUP is handled or ignored here (nohup): it is then the caller's",
)
def test_sigusr1_and_sighup_reach_the_workers_and_this_process_waits_for_them(tmp_path, monkeypatch):
    """At its default SIGUSR1 (``sbatch --signal``) ended the parent at once, and SLURM then
    killed the workers it left while they kept their runs."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    received, ready = tmp_path / "received", tmp_path / "ready"
    children: list[subprocess.Popen] = []
    try:
        with signals_passed_on(children):
            children.append(subprocess.Popen([sys.executable, "-c", CHILD, str(received), str(ready)]))
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert time.monotonic() < deadline and children[0].poll() is None
                time.sleep(0.02)
            for signum in (signal.SIGUSR1, signal.SIGHUP):
                assert signal.getsignal(signum) is not signal.SIG_DFL  # else it would end pytest
                os.kill(os.getpid(), signum)  # delivered to this thread as os.kill returns, then passed on
            assert children[0].wait(60) == 0
    finally:
        for child in children:
            child.kill()
            child.wait()
    # both, in either order (Python runs the handlers of signals pending together by number)
    assert sorted(map(int, received.read_text().split())) == [signal.SIGHUP, signal.SIGUSR1]
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_a_signal_the_caller_handles_stays_the_callers(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    mine = []
    callers = signal.signal(signal.SIGUSR1, lambda signum, frame: mine.append(signum))
    try:
        with signals_passed_on([]):
            os.kill(os.getpid(), signal.SIGUSR1)
        assert mine == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, callers)
