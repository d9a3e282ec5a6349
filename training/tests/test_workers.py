"""Spawned workers end with their launcher, even when it was started with SIGINT ignored."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

LAUNCHER = textwrap.dedent('''
    import os, sys, time
    import torch.multiprocessing as mp

    def work(rank, fix, folder):
        if fix:
            from vildtrain.train.workers import end_with_launcher
            end_with_launcher()
        with open(os.path.join(folder, str(rank)), "w") as f:
            f.write(str(os.getpid()))
        while True:
            time.sleep(0.05)

    if __name__ == "__main__":
        mp.spawn(work, args=(sys.argv[1] == "1", sys.argv[2]), nprocs=2, join=True)
''')


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _orphaned_workers(tmp_path, fix: bool) -> list[int]:
    """Start a launcher of two workers as a background job would be (SIGINT
    ignored), kill it, and return the workers still running 15 s later."""
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    folder = tmp_path / f"pids-{int(fix)}"
    folder.mkdir()
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    launcher = subprocess.Popen([sys.executable, str(script), "1" if fix else "0", str(folder)], env=env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 120
    while len(os.listdir(folder)) < 2 or any(os.path.getsize(folder / n) == 0 for n in os.listdir(folder)):
        assert time.time() < deadline and launcher.poll() is None, "the workers did not start"
        time.sleep(0.1)
    pids = [int((folder / n).read_text()) for n in sorted(os.listdir(folder))]
    assert all(_alive(p) for p in pids)
    launcher.kill()
    launcher.wait()
    deadline = time.time() + 15
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return left


def test_workers_end_with_a_killed_launcher(tmp_path):
    assert _orphaned_workers(tmp_path, fix=True) == []


def test_without_it_the_workers_outlive_their_launcher(tmp_path):
    # The case end_with_launcher exists for: this is what a killed background run did.
    assert len(_orphaned_workers(tmp_path, fix=False)) == 2
