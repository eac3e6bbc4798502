import math

import torch

from pyg_unimol2.nn import Transition


def test_transition():
    torch.manual_seed(0)
    ffn = Transition(8, 16)
    assert str(ffn) == 'Transition(8, hidden_channels=16)'
    assert ffn.linear_1.weight.shape == (16, 8)
    assert ffn.linear_2.weight.shape == (8, 16)
    assert ffn.linear_1.bias.abs().sum() == 0  # BERT init: zero bias
    assert abs(ffn.linear_1.weight.std().item() - 0.02) < 0.01

    x = torch.randn(2, 5, 5, 8)
    h = x @ ffn.linear_1.weight.T + ffn.linear_1.bias
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
    ref = h @ ffn.linear_2.weight.T + ffn.linear_2.bias
    assert torch.allclose(ffn(x), ref, atol=1e-6)
    assert torch.allclose(ffn(x, chunk_size=2), ref, atol=1e-6)
    assert Transition(4).hidden_channels == 4
