"""What the trainers' data-parallel worker processes share.

``torch.multiprocessing.spawn`` asks Linux to send each worker SIGINT when the
launching process dies (``PR_SET_PDEATHSIG``), so that a killed run leaves no
workers behind. A process started in the background by a non-interactive shell
(``nohup make detector &``, a CI job) inherits SIGINT *ignored*, and Python keeps
it ignored, so that signal never arrived: the workers of a killed launcher went on
training and writing checkpoints. ``end_with_launcher`` gives SIGINT back its
default meaning (KeyboardInterrupt) in the worker.
"""
from __future__ import annotations

import signal


def end_with_launcher() -> None:
    """Call first thing in a spawned worker: SIGINT, the parent-death signal, ends it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
