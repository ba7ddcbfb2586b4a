"""Shared test setup: no network, fast failure of hub look-ups, small thread counts."""

from __future__ import annotations

import os

# Must be set before huggingface_hub is imported (by timm): hub look-ups then fail at once
# instead of retrying for a minute. Tests never need the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for every test.

    The suite is sized for 2 CPU cores; with 2 threads, any other process on the machine
    (a streamlit server under test, another job) makes OpenMP barriers spin and the tests
    run many times slower. One thread is slower only by a little on an idle machine.
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
