import math

import torch
import torch.nn.functional as F

from pyg_unimol2.nn import (ClassificationHead, LinearHead, MaskedLMHead,
                            PositionHead, PropertyHead)


def random_rotation(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def naive_position_head(head, x, pair, delta, mask):
    """B.7 written out with the [B, H, 3, L, d] tensor of the official code."""
    B, L, E = x.shape
    H = head.num_heads
    d = E // H
    y = head.layer_norm(x)
    q = head.q_proj(y).view(B, L, H, d).transpose(1, 2) * d**-0.5
    k = head.k_proj(y).view(B, L, H, d).transpose(1, 2)
    v = head.v_proj(y).view(B, L, H, d).transpose(1, 2)
    bias = head.linear_bias(head.pair_layer_norm(pair)).permute(0, 3, 1, 2)
    logits = q @ k.transpose(-1, -2) + bias
    logits = logits.masked_fill(~mask[:, None, None, :], float('-inf'))
    attn = logits.softmax(-1)
    rot = attn.unsqueeze(-1) * delta.unsqueeze(1)  # [B, H, L, L, 3]
    out = rot.permute(0, 1, 4, 2, 3) @ v.unsqueeze(2)  # [B, H, 3, L, d]
    out = out.permute(0, 3, 2, 1, 4).reshape(B, L, 3, E)
    return head.force_proj1(out).view(B, L, 3)


def test_position_head():
    torch.manual_seed(0)
    head = PositionHead(16, 8, 4).eval()
    assert str(head) == 'PositionHead(16, 8, heads=4)'
    assert head.force_proj1.weight.shape == (1, 16)
    assert head.force_proj1.bias is None and head.q_proj.bias is None
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.3)

    B, L = 2, 5
    x, pair = torch.randn(B, L, 16), torch.randn(B, L, L, 8)
    pos = torch.randn(B, L, 3)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 3:] = False
    delta = pos.unsqueeze(1) - pos.unsqueeze(2)  # delta[i, j] = r_j - r_i
    out = head(x, pair, delta, mask)
    assert out.shape == (B, L, 3)
    assert torch.allclose(out, naive_position_head(head, x, pair, delta,
                                                   mask), atol=1e-5)

    # pairs may come with a leading CLS row/column, dropped inside
    with_cls = torch.randn(B, L + 1, L + 1, 8)
    with_cls[:, 1:, 1:] = pair
    assert torch.allclose(head(x, with_cls, delta, mask), out, atol=1e-6)

    # rotation equivariance, translation invariance
    R = random_rotation()
    moved = pos @ R.T + torch.tensor([1.0, -2.0, 3.0])
    d2 = moved.unsqueeze(1) - moved.unsqueeze(2)
    assert torch.allclose(head(x, pair, d2, mask), out @ R.T, atol=1e-5)
    # padded atoms do not influence real ones
    pos2 = pos.clone()
    pos2[1, 3:] += 10.0
    d3 = pos2.unsqueeze(1) - pos2.unsqueeze(2)
    assert torch.allclose(head(x, pair, d3, mask)[1, :3], out[1, :3],
                          atol=1e-6)


def test_masked_lm_head():
    torch.manual_seed(0)
    head = MaskedLMHead(16)
    assert str(head) == 'MaskedLMHead(16, num_classes=128)'
    assert head.weight.shape == (128, 16) and head.bias.shape == (128, )
    assert head.bias.abs().sum() == 0
    # kaiming-uniform (PyTorch Linear default): bound 1 / sqrt(fan_in)
    assert head.weight.abs().max() <= 1 / math.sqrt(16)
    assert head.weight.abs().max() > 0.5 / math.sqrt(16)
    with torch.no_grad():
        head.layer_norm.weight.uniform_(0.5, 1.5)
        head.bias.normal_()

    x = torch.randn(2, 5, 16)
    ref = F.linear(F.gelu(head.dense(head.layer_norm(x))), head.weight,
                   head.bias)  # layer norm FIRST
    assert torch.allclose(head(x), ref, atol=1e-6)
    masked = torch.zeros(2, 5, dtype=torch.bool)
    masked[0, 1] = masked[1, 3] = True
    out = head(x, masked)
    assert out.shape == (2, 128)
    assert torch.allclose(out, ref[masked], atol=1e-6)


def test_classification_heads():
    torch.manual_seed(0)
    head = ClassificationHead(16, 16, 3)
    assert str(head) == 'ClassificationHead(16, 16, 3)'
    assert PropertyHead is ClassificationHead
    x = torch.randn(4, 16)
    ref = head.out_proj(torch.tanh(head.dense(x)))
    assert torch.allclose(head(x), ref)
    # PyTorch default init (not BERT): non-zero uniform bias
    assert head.dense.bias.abs().sum() > 0

    lin = LinearHead(16, 2)
    assert str(lin) == 'LinearHead(16, 2)'
    assert torch.allclose(lin(x), lin.out_proj(x))
    assert {n for n, _ in lin.named_parameters()} == {
        'out_proj.weight', 'out_proj.bias'
    }
