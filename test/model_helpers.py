"""Helpers shared by the model tests: one torch thread, a random pair, a parameter count."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Run the test with one torch thread (a model test should not take both cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_pair(n, h, w, seed=0):
    """(vis, ir): N x 3 x H x W random images, the thermal one repeated to 3 channels."""
    g = torch.Generator().manual_seed(seed)
    vis = torch.rand(n, 3, h, w, generator=g)
    ir = torch.rand(n, 1, h, w, generator=g).repeat(1, 3, 1, 1)
    return vis, ir


def n_params(model):
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in model.parameters())
