"""The thread that runs a model sets its own torch threads (models/inference_threads.py): the
settings belong to the calling thread, so the policy node's inference thread and vla-serve's client
threads set them where the model runs. The speed it buys is measured by `vla-bench policy-node`."""

import threading

import pytest
import torch

from vla_policy_node.models import inference_threads


def test_threads_are_set_in_the_calling_thread_only():
    main_before = torch.get_num_threads()
    seen = {}

    def worker():
        seen["set"] = inference_threads.use_this_thread(1)
        seen["inside"] = torch.get_num_threads()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"set": 1, "inside": 1}
    assert torch.get_num_threads() == main_before           # the main thread keeps its own
    import os
    cpus = len(os.sched_getaffinity(0))
    t = threading.Thread(target=lambda: seen.update(reserved=inference_threads.use_this_thread(0, reserve=1),
                                                    everything=inference_threads.use_this_thread(0),
                                                    all_but_all=inference_threads.use_this_thread(0, reserve=cpus)))
    t.start()
    t.join()
    assert seen["reserved"] == max(1, cpus - 1) and seen["everything"] == cpus and seen["all_but_all"] == 1
    with pytest.raises(ValueError, match="torch_threads -1"):
        inference_threads.use_this_thread(-1)


def test_mkl_is_single_threaded_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    inference_threads.prepare_process()
    import os
    assert os.environ["MKL_NUM_THREADS"] == "1"
    monkeypatch.setenv("MKL_NUM_THREADS", "2")                # a graph description's env wins
    inference_threads.prepare_process()
    assert os.environ["MKL_NUM_THREADS"] == "2"
