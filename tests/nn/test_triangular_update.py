import torch

from pyg_unimol2.nn import TriangularUpdate


def naive_trimul(tri, z, mask, num_tokens):
    """Outgoing + incoming with shared a/b, linear output gate."""
    h = tri.hidden_dim
    pm = (mask[:, :, None] & mask[:, None, :]).float()[..., None]
    pm = pm * num_tokens.float()[:, None, None, None]**-0.5
    ab = tri.linear_ab_p(z) * pm * torch.sigmoid(tri.linear_ab_g(z))
    a, b = ab[..., :h], ab[..., h:]
    u = torch.einsum('bikc,bjkc->bijc', a, b) + \
        torch.einsum('bkic,bkjc->bijc', a, b)
    return tri.linear_g(z) * tri.linear_z(tri.layer_norm_out(u))


def test_triangular_update_matches_naive():
    torch.manual_seed(0)
    tri = TriangularUpdate(10, 4)
    assert str(tri) == 'TriangularUpdate(10, hidden_dim=4)'
    names = {n for n, _ in tri.named_parameters()}
    assert {'linear_ab_p.weight', 'linear_ab_g.weight', 'linear_g.weight',
            'linear_z.weight', 'layer_norm_out.weight'} <= names
    with torch.no_grad():
        for p in tri.parameters():
            p.normal_(0, 0.5)

    B, N = 3, 7
    z = torch.randn(B, N, N, 10, requires_grad=True)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 6:] = False
    out = tri(z, mask)
    ref = naive_trimul(tri, z, mask, mask.sum(-1))
    assert out.shape == (B, N, N, 10)
    assert torch.allclose(out, ref, atol=1e-5)
    g = torch.autograd.grad(out.pow(2).sum(), z)[0]
    r = torch.autograd.grad(ref.pow(2).sum(), z)[0]
    assert torch.allclose(g, r, atol=1e-4)

    padded = torch.full((B, ), N)
    assert torch.allclose(tri(z, mask, num_tokens=padded),
                          naive_trimul(tri, z, mask, padded), atol=1e-5)
    for chunk in (1, 3):
        assert torch.allclose(tri(z, mask, chunk_size=chunk), out,
                              atol=1e-5)
    full = torch.ones(B, N, dtype=torch.bool)
    assert torch.allclose(tri(z), naive_trimul(tri, z, full, padded),
                          atol=1e-5)


def test_triangular_update_padding_independent():
    torch.manual_seed(0)
    tri = TriangularUpdate(6, 3)
    z = torch.randn(1, 4, 4, 6)
    alone = tri(z)
    padded = torch.randn(1, 6, 6, 6)
    padded[:, :4, :4] = z
    mask = torch.tensor([[True] * 4 + [False] * 2])
    assert torch.allclose(tri(padded, mask)[:, :4, :4], alone, atol=1e-6)
