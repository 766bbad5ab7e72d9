"""Fixtures shared by the CCST tests."""

import pytest


@pytest.fixture(scope="session")
def warm_torch_optim():
    """The first AdamW of a process costs ~1 s of one-time lazy imports inside torch; pay it
    once in setup rather than inside whichever test trains first."""
    import torch

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
