import torch

from pyg_unimol2.nn import SelfAttentionPairBias


def naive_attention(att, x, pair, mask):
    """Eq. 4 written out: head-major split, scaled q, pair bias, -inf keys."""
    B, N, E = x.shape
    H = att.num_heads
    d = E // H
    q = (x @ att.linear_q.weight.T) * d**-0.5
    k = x @ att.linear_k.weight.T
    v = x @ att.linear_v.weight.T
    out = torch.zeros(B, N, E)
    for b in range(B):
        for h in range(H):
            cols = slice(h * d, (h + 1) * d)
            logits = q[b, :, cols] @ k[b, :, cols].T
            logits = logits + pair[b] @ att.linear_bias.weight[h] + \
                att.linear_bias.bias[h]
            logits[:, ~mask[b]] = float('-inf')
            out[b, :, cols] = logits.softmax(-1) @ v[b, :, cols]
    return out @ att.linear_o.weight.T + att.linear_o.bias


def test_attention_matches_naive_softmax():
    torch.manual_seed(0)
    att = SelfAttentionPairBias(16, 4, 8)
    assert str(att) == 'SelfAttentionPairBias(16, heads=4, pair_dim=8)'
    assert att.linear_q.bias is None and att.linear_k.bias is None
    assert att.linear_v.bias is None
    assert att.linear_bias.weight.shape == (4, 8)
    with torch.no_grad():  # non-trivial biases
        for p in att.parameters():
            p.normal_(0, 0.3)

    B, N = 3, 6
    x = torch.randn(B, N, 16)
    pair = torch.randn(B, N, N, 8, requires_grad=True)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    out = att(x, pair, mask)
    ref = naive_attention(att, x, pair, mask)
    assert out.shape == (B, N, 16)
    assert torch.isfinite(out).all()  # padded query rows see real keys
    assert torch.allclose(out, ref, atol=1e-5)

    # gradients (also w.r.t. the pair bias) agree
    g_out = torch.autograd.grad(out.sum(), pair)[0]
    g_ref = torch.autograd.grad(ref.sum(), pair)[0]
    assert torch.allclose(g_out, g_ref, atol=1e-5)
    # padded keys get no gradient through the bias
    assert g_out[1][:, 4:].abs().sum() == 0

    # no mask = all keys real
    full = torch.ones(B, N, dtype=torch.bool)
    assert torch.allclose(att(x, pair), naive_attention(att, x, pair, full),
                          atol=1e-5)


def test_attention_dropout():
    torch.manual_seed(0)
    att = SelfAttentionPairBias(8, 2, 4, dropout=0.5)
    x, pair = torch.randn(2, 5, 8), torch.randn(2, 5, 5, 4)
    att.eval()
    assert torch.equal(att(x, pair), att(x, pair))
    att.train()
    assert not torch.allclose(att(x, pair), att(x, pair))


def test_training_dropout_matches_sdpa_in_expectation():
    from pyg_unimol2.nn.attention import _dropout_attention
    torch.manual_seed(0)
    # without dropout, the explicit training path is SDPA's math
    q = torch.randn(2, 3, 4, 6)
    k, v = torch.randn(2, 2, 3, 7, 6).unbind(0)
    bias = torch.randn(2, 3, 4, 7)
    bias[..., -1] = float('-inf')  # a padded key
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=bias)
    assert torch.allclose(_dropout_attention(q, k, v, bias, 0.0), sdpa,
                          atol=1e-6)
    # training: the average over draws converges to the eval output, and
    # padded keys get no gradient
    att = SelfAttentionPairBias(8, 2, 4, dropout=0.25)
    with torch.no_grad():  # non-trivial weights and biases
        for p in att.parameters():
            p.normal_(0, 0.5)
    x, pair = torch.randn(2, 5, 8), torch.randn(2, 5, 5, 4)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    ref = att.eval()(x, pair, mask)
    att.train()
    with torch.no_grad():
        draws = torch.stack([att(x, pair, mask) for _ in range(4000)])
    assert (draws.mean(0) - ref).abs().max() < 0.02 * ref.abs().max()
    assert not torch.allclose(draws[0], draws[1], atol=1e-4)
    pair.requires_grad_(True)
    grad, = torch.autograd.grad(att(x, pair, mask).sum(), pair)
    assert torch.isfinite(grad).all() and grad[1][:, 3:].abs().sum() == 0
