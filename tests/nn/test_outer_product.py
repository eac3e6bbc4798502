import pytest
import torch

from pyg_unimol2.nn import OuterProduct


def naive_opm(opm, x, num_tokens, mask):
    """Eq. 5 with the official normalisation, building [B,N,N,h,h]."""
    h = opm.hidden_dim
    m = mask.float()[..., None] * num_tokens.float()[:, None, None]**-0.5
    ab = opm.linear_in(x) * m
    a, b = ab[..., :h], ab[..., h:]
    outer = a[:, :, None, :, None] * b[:, None, :, None, :]  # [B,N,N,h,h]
    outer = outer.reshape(*outer.shape[:3], h * h)  # c-major flatten
    norm = 1 / (1e-3 + m[:, :, None] * m[:, None, :])
    return opm.linear_out(outer) * norm


def test_outer_product_matches_naive():
    torch.manual_seed(0)
    opm = OuterProduct(12, 10, hidden_dim=4)
    assert str(opm) == 'OuterProduct(12, 10, hidden_dim=4)'
    assert opm.linear_out.weight.shape == (10, 16)
    with torch.no_grad():
        for p in opm.parameters():
            p.normal_(0, 0.5)

    B, N = 3, 6
    x = torch.randn(B, N, 12, requires_grad=True)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, 5:] = False
    out = opm(x, mask)
    ref = naive_opm(opm, x, mask.sum(-1), mask)
    assert out.shape == (B, N, N, 10)
    # Real pairs match exactly; pairs with a padded token are unused
    # downstream (the official code leaves 1000 * bias there, we leave
    # bias / (1e-3 + 1 / n)).
    pm = mask[:, :, None] & mask[:, None, :]
    assert torch.allclose(out[pm], ref[pm], atol=1e-5, rtol=1e-5)
    n = mask.sum(-1).float()
    pad = opm.linear_out.bias / (1e-3 + 1 / n[:, None, None, None])
    assert torch.allclose(out[~pm], pad.expand_as(out)[~pm], rtol=1e-5)
    inputs = [x] + list(opm.parameters())
    grads = torch.autograd.grad(out[pm].pow(2).sum(), inputs)
    refs = torch.autograd.grad(ref[pm].pow(2).sum(), inputs)
    for g, r in zip(grads, refs):
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-3)

    # official padded normalisation through num_tokens
    padded = torch.full((B, ), N)
    assert torch.allclose(
        opm(x, mask, num_tokens=padded)[pm],
        naive_opm(opm, x, padded, mask)[pm], atol=1e-5, rtol=1e-5)
    # no mask: every token real
    assert torch.allclose(opm(x), naive_opm(opm, x, padded, torch.ones_like(
        mask)), atol=1e-5, rtol=1e-5)
    # row chunks give the same result
    for chunk in (1, 4):
        assert torch.allclose(opm(x, mask, chunk_size=chunk), out,
                              atol=1e-6)


def test_outer_product_padding_independent():
    torch.manual_seed(0)
    opm = OuterProduct(8, 6, hidden_dim=3)
    x = torch.randn(1, 4, 8)
    alone = opm(x)
    padded = torch.cat([x, torch.randn(1, 3, 8)], dim=1)
    mask = torch.tensor([[True] * 4 + [False] * 3])
    assert torch.allclose(opm(padded, mask)[:, :4, :4], alone, atol=1e-6)


@pytest.mark.parametrize('block', [1, 2, 10**6])  # molecules per block
def test_outer_rows_gradcheck(block, monkeypatch):
    from pyg_unimol2.nn import outer_product
    torch.manual_seed(0)
    B, n, N, P, h = 3, 3, 4, 5, 3
    monkeypatch.setattr(outer_product, '_BLOCK_VALUES', block * N * P * h)
    assert len(outer_product._blocks(torch.empty(B, N, h),
                                     torch.empty(P * h, h))) == \
        -(-B // min(block, B))
    a = torch.randn(B, n, h, dtype=torch.double, requires_grad=True)
    b = torch.randn(B, N, h, dtype=torch.double, requires_grad=True)
    w = torch.randn(P * h, h, dtype=torch.double, requires_grad=True)
    bias = torch.randn(B, 1, N * P, dtype=torch.double, requires_grad=True)
    z = outer_product._OuterRows.apply(a, b, w, bias)
    t = torch.nn.functional.linear(b, w).view(B, N * P, h)
    assert torch.allclose(z, torch.baddbmm(bias, a, t.transpose(1, 2)))
    assert torch.autograd.gradcheck(outer_product._OuterRows.apply,
                                    (a, b, w, bias))


def test_packed_outer_rows_gradcheck():
    from pyg_unimol2.nn import outer_product
    torch.manual_seed(0)
    B, N, P, h = 3, 4, 5, 3
    counts = [4, 2, 1]
    a = torch.randn(B, N, h, dtype=torch.double, requires_grad=True)
    b = torch.randn(B, N, h, dtype=torch.double, requires_grad=True)
    w = torch.randn(P * h, h, dtype=torch.double, requires_grad=True)
    bias = torch.randn(B, P, dtype=torch.double, requires_grad=True)
    z = outer_product._PackedOuterRows.apply(a, b, w, bias, counts)
    # the real rows of the dense outer product, row-major per molecule
    t = torch.nn.functional.linear(b, w).view(B, N * P, h)
    dense = torch.baddbmm(bias.repeat(1, N).unsqueeze(1), a,
                          t.transpose(1, 2)).view(B, N, N, P)
    ref = torch.cat([dense[m, :n, :n].reshape(-1, P)
                     for m, n in enumerate(counts)])
    assert torch.allclose(z, ref)
    fn = lambda *v: outer_product._PackedOuterRows.apply(*v, counts)  # noqa
    assert torch.autograd.gradcheck(fn, (a, b, w, bias))
    # forces differentiate the backward again
    assert torch.autograd.gradgradcheck(fn, (a, b, w, bias))


@pytest.mark.parametrize('prefix', [True, False])
def test_outer_product_molecule_blocks_pack_real_rows(prefix, monkeypatch):
    from pyg_unimol2.nn import outer_product
    from pyg_unimol2.nn._utils import pack_pairs, real_pair_index
    torch.manual_seed(0)
    opm = OuterProduct(8, 6, hidden_dim=3)
    with torch.no_grad():
        for p in opm.parameters():
            p.normal_(0, 0.5)
    B, N = 3, 5
    x = torch.randn(B, N, 8, requires_grad=True)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, 1:] = False
    if not prefix:
        mask[0, 1] = False  # a hole: not a prefix mask
    index = real_pair_index(mask)
    dense = pack_pairs(opm(x, mask), index)
    grads = torch.autograd.grad(dense.pow(2).sum(), [x] +
                                list(opm.parameters()))
    used = []
    monkeypatch.setattr(outer_product, '_BLOCK_VALUES', 1)  # 1 per block
    original = outer_product._PackedOuterRows.apply
    monkeypatch.setattr(outer_product._PackedOuterRows, 'apply',
                        lambda *v: used.append(1) or original(*v))
    packed = opm(x, mask, pair_index=index)
    assert bool(used) == prefix
    assert torch.allclose(packed, dense, atol=1e-6)
    for g, r in zip(torch.autograd.grad(packed.pow(2).sum(), [x] +
                                        list(opm.parameters())), grads):
        assert torch.allclose(g, r, atol=1e-5, rtol=1e-5)
