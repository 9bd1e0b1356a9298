"""Test-session set-up.

Triton reads TRITON_INTERPRET when it is imported, so it is set here, before any test module can
import it: on this CPU-only machine the Triton kernels run through its interpreter.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def registry():
    from zoo.registry import get_registry

    return get_registry()
