"""CPU threads of the thread that runs a model.

Torch's OpenMP and MKL thread settings belong to the thread that calls them. A model run on a
thread other than its process's main thread (the policy node's inference thread, vla-serve's
connection handlers) took about twice its main-thread time with the defaults on 2 cores (per chunk,
bc 120 vs 47 ms, vita 54 vs 21 ms, videovla 140 vs 66 ms): MKL's own threads ran beside the
intra-op ones. With MKL single-threaded in the process environment and the intra-op threads set
in the thread that runs the model, that thread is as fast as the main one (46, 19, 66 ms).

Beside a free-running simulator, an intra-op team as wide as the machine is the worst choice: an
OpenMP region waits for its slowest thread, and a thread the simulator's rendering pushed off its
CPU stalls every one of the thousands of regions of a forward pass. videovla in the free-running
`sim_demo` at 0.25x on 2 cores: chunk latency p50 770 ms with 2 torch threads, 4.0 against 16.5
control steps of delay with 1 (alone, 2 threads are only 1.2-1.35x faster than 1). So a node that
shares its machine with the rest of a graph leaves it a CPU (`reserve`).
"""

from __future__ import annotations

import os
import sys

MKL_THREADS_ENV = "MKL_NUM_THREADS"


def prepare_process() -> None:
    """Call before torch loads: MKL single-threaded unless the environment (a graph description's
    `env`, the shell) says otherwise."""
    os.environ.setdefault(MKL_THREADS_ENV, "1")


def use_this_thread(num_threads: int = 0, reserve: int = 0) -> int | None:
    """Call in the thread that will run the model: its intra-op threads, `num_threads`, or (0) one
    per CPU this process may use less `reserve` left to the rest of the graph, at least one.
    Returns the number set; None in a process without torch."""
    if num_threads < 0:
        raise ValueError(f"torch_threads {num_threads}: must be >= 0 (0: one per CPU)")
    torch = sys.modules.get("torch")
    if torch is None:                 # scripted backends never load it
        return None
    n = num_threads or max(1, len(os.sched_getaffinity(0)) - max(reserve, 0))
    torch.set_num_threads(n)
    return n
