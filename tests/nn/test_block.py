import pytest
import torch

from pyg_unimol2.nn import UniMol2Block, drop_path


def randomize(module):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)


def test_block_order_of_operations():
    torch.manual_seed(0)
    block = UniMol2Block(16, 8, 4, num_heads=4).eval()
    assert str(block) == 'UniMol2Block(16, 8, heads=4, pair_hidden_dim=4)'
    randomize(block)  # layer norms differ, so the order is visible

    B, N = 2, 5
    x, pair = torch.randn(B, N, 16), torch.randn(B, N, N, 8)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 3:] = False
    out_x, out_p = block(x, pair, mask)

    b = block
    # attention sees the *un-normalised* pair; OPM uses the *updated* x
    rx = x + b.self_attn(b.self_attn_layer_norm(x), pair, mask)
    rx = rx + b.ffn(b.final_layer_norm(rx))
    rp = pair + b.opm(b.x_layer_norm_opm(rx), mask)
    rp = rp + b.pair_tri_mul(b.pair_layer_norm_trimul(rp), mask)
    rp = rp + b.pair_ffn(b.pair_layer_norm_ffn(rp))
    assert torch.allclose(out_x, rx, atol=1e-6)
    assert torch.allclose(out_p, rp, atol=1e-6)

    ck_x, ck_p = block(x, pair, mask, chunk_size=2)
    assert torch.allclose(ck_x, out_x, atol=1e-6)
    assert torch.allclose(ck_p, out_p, atol=1e-5)


def test_block_parameter_names():
    block = UniMol2Block(16, 8, 4, num_heads=4)
    prefixes = {n.split('.')[0] for n, _ in block.named_parameters()}
    assert prefixes == {
        'self_attn', 'self_attn_layer_norm', 'ffn', 'final_layer_norm',
        'x_layer_norm_opm', 'opm', 'pair_layer_norm_ffn', 'pair_ffn',
        'pair_layer_norm_trimul', 'pair_tri_mul'
    }


def test_row_shared_pair_dropout():
    torch.manual_seed(0)
    block = UniMol2Block(8, 8, 2, num_heads=2, pair_dropout=0.25).train()
    base, ones = torch.full((3, 6, 6, 8), 2.0), torch.ones(3, 6, 6, 8)
    out = block._row_residual(base, ones) - base
    # one mask of shape [B, 1, N, P]: identical for every first index i
    assert torch.equal(out, out[:, :1].expand_as(out))
    assert torch.allclose(out.unique(), torch.tensor([0.0, 1 / 0.75]))
    block.eval()
    assert torch.equal(block._row_residual(base, ones), base + ones)


def test_residual_dropout():
    torch.manual_seed(0)
    block = UniMol2Block(8, 8, 2, num_heads=2, dropout=0.5).train()
    base, ones = torch.zeros(4, 5, 5, 8), torch.ones(4, 5, 5, 8)
    out = block._residual(base, ones)
    assert torch.allclose(out.unique(), torch.tensor([0.0, 2.0]))
    assert 0.3 < (out == 0).float().mean() < 0.7  # element-wise
    block = UniMol2Block(8, 8, 2, num_heads=2, droppath_prob=0.5).train()
    out = block._residual(torch.zeros(64, 5, 5, 8),
                          torch.ones(64, 5, 5, 8)).flatten(1)
    assert torch.equal(out, out[:, :1].expand_as(out))  # per sample
    block.eval()
    assert torch.equal(block._residual(base, ones), ones)


def test_dropout_train_vs_eval():
    torch.manual_seed(0)
    block = UniMol2Block(8, 8, 2, num_heads=2)
    x, pair = torch.randn(2, 4, 8), torch.randn(2, 4, 4, 8)
    block.eval()
    e1, e2 = block(x, pair), block(x, pair)
    assert torch.equal(e1[1], e2[1])
    block.train()
    assert not torch.allclose(block(x, pair)[1], e1[1])


@pytest.mark.parametrize('p', [0.0, 0.5])
def test_drop_path(p):
    torch.manual_seed(0)
    x = torch.ones(64, 3, 4)
    out = drop_path(x, p, training=True)
    per_sample = out.flatten(1)
    assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample))
    if p == 0.0:
        assert torch.equal(out, x)
    else:
        assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(drop_path(x, p, training=False), x)


def test_dropout_multiplier_distribution_and_masked_residual_grad():
    from pyg_unimol2.nn._utils import dropout_multiplier
    from pyg_unimol2.nn.block import _MaskedResidual
    torch.manual_seed(0)
    mult = dropout_multiplier(torch.empty(0), (1000, 1000), 0.1)
    assert mult.dtype == torch.float32 and mult.shape == (1000, 1000)
    assert set(mult.unique().tolist()) == {0.0, torch.tensor(1 / 0.9).item()}
    keep = mult > 0
    assert abs(keep.double().mean().item() - 0.9) < 2e-3
    # four masks per random 64-bit word: neighbours stay uncorrelated
    flat = keep.view(-1).double()
    for lag in (1, 2, 3, 4):
        r = torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1]
        assert abs(r.item()) < 5e-3, lag
    for p, shape in ((0.25, (7, 3, 5)), (0.5, (33, )), (0.0, (4, 4))):
        rate = torch.stack([dropout_multiplier(x, shape, p) > 0
                            for x in [torch.empty(0)] * 4000]).double()
        assert rate.shape[1:] == shape
        assert abs(rate.mean().item() - (1 - p)) < 5e-3, p
    assert torch.equal(dropout_multiplier(torch.empty(0), (5, ), 1.0),
                       torch.zeros(5))
    half = dropout_multiplier(torch.empty(0, dtype=torch.bfloat16), (64, ),
                              0.5)
    assert half.dtype == torch.bfloat16
    assert set(half.unique().tolist()) <= {0.0, 2.0}
    x = torch.randn(3, 4, 5, dtype=torch.double, requires_grad=True)
    y = torch.randn(3, 4, 5, dtype=torch.double, requires_grad=True)
    mult = (torch.rand(3, 1, 5) < 0.5).double() * 2.0
    out = _MaskedResidual.apply(x, y, mult)
    assert torch.allclose(out, x + y * mult)
    assert torch.autograd.gradcheck(_MaskedResidual.apply, (x, y, mult))


def test_packed_pairs_equal_dense():
    from pyg_unimol2.nn._utils import (pack_pairs, real_pair_index,
                                       unpack_pairs)
    torch.manual_seed(0)
    block = UniMol2Block(16, 8, 4, num_heads=4, pair_dropout=0.5,
                         droppath_prob=0.5)
    randomize(block)
    B, N = 3, 6
    x, pair = torch.randn(B, N, 16), torch.randn(B, N, N, 8)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    real = (mask[:, :, None] & mask[:, None, :])[..., None]
    pair = pair * real  # pairs with a padded token are zero vectors
    index = real_pair_index(mask)
    assert index.numel() == int(real.sum())
    block.eval()
    dx, dp = block(x, pair, mask)
    px, pp = block(x, pack_pairs(pair, index), mask, pair_index=index)
    assert torch.allclose(px, dx, atol=1e-6)
    assert torch.allclose(unpack_pairs(pp, index, B, N), dp * real,
                          atol=1e-5)

    # training: the packed row-shared mask is shared along i, per molecule
    block.train()
    ones = torch.ones(index.numel(), 8)
    row = (index // (N * N)) * N + index % N
    out = unpack_pairs(block._row_residual(0 * ones, ones, row, B * N),
                       index, B, N)
    assert torch.equal(out * real, out[:, :1].expand_as(out) * real)
    molecule = index // (N * N)
    out = block._residual(0 * ones, ones, molecule, B)
    for b in range(B):  # stochastic depth: one value per molecule
        assert out[molecule == b].unique().numel() == 1
