"""Test-session set-up.

Triton reads TRITON_INTERPRET when it is imported, so it is set here, before any test module can
import it: on this CPU-only machine the Triton kernels run through its interpreter.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
# One thread, here and in the zoo processes the tests start: the tests' models are tiny, and on
# a shared 2-core machine a second thread makes their steps slower, not faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def registry():
    from zoo.registry import get_registry

    return get_registry()
