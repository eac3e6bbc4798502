import torch

from pyg_unimol2.nn import UniMol2Encoder


def inputs(B=2, N=6, E=16, P=8):
    torch.manual_seed(0)
    x, pair = torch.randn(B, N, E), torch.randn(B, N, N, P)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 4:] = False
    return x, pair, mask


def test_encoder_structure():
    enc = UniMol2Encoder(2, 16, 8, 4, num_heads=4)
    assert str(enc) == ('UniMol2Encoder(num_layers=2, embed_dim=16, '
                        'pair_dim=8, heads=4)')
    assert len(enc.layers) == 2
    x, pair, mask = inputs()
    enc.eval()
    with torch.no_grad():
        enc.layer_norm.weight.uniform_(0.5, 1.5)
        enc.pair_layer_norm.bias.uniform_(-1, 1)
    # input LN once, then the blocks, no final LN; pairs with a padded token
    # are zero vectors (the encoder never computes them)
    real = (mask[:, :, None] & mask[:, None, :])[..., None]
    rx, rp = enc.layer_norm(x), enc.pair_layer_norm(pair) * real
    for layer in enc.layers:
        rx, rp = layer(rx, rp, mask)
        rp = rp * real
    ox, op = enc(x, pair, mask)
    assert torch.allclose(ox, rx) and torch.allclose(op, rp)
    # stochastic depth grows linearly over the blocks
    enc = UniMol2Encoder(3, 16, 8, 4, num_heads=4, droppath_prob=0.2)
    assert [round(l.droppath_prob, 6) for l in enc.layers] == [0.0, 0.1, 0.2]


def test_encoder_chunking_identical():
    x, pair, mask = inputs()
    enc = UniMol2Encoder(2, 16, 8, 4, num_heads=4).eval()
    pair = pair.requires_grad_()
    ox, op = enc(x, pair, mask)
    gx = torch.autograd.grad((ox.sum() + op.pow(2).sum()), pair)[0]
    enc.chunk_size = 2
    cx, cp = enc(x, pair, mask)
    gc = torch.autograd.grad((cx.sum() + cp.pow(2).sum()), pair)[0]
    assert torch.allclose(cx, ox, atol=1e-5)
    assert torch.allclose(cp, op, atol=1e-5)
    assert torch.allclose(gc, gx, atol=1e-4)


def test_encoder_checkpointing_identical_grads():
    x, pair, mask = inputs()
    enc = UniMol2Encoder(2, 16, 8, 4, num_heads=4).train()  # with dropout

    def run(checkpointing):
        enc.checkpointing = checkpointing
        enc.zero_grad()
        torch.manual_seed(123)
        ox, op = enc(x, pair, mask)
        (ox.pow(2).sum() + op.pow(2).sum()).backward()
        return ox, op, [p.grad.clone() for p in enc.parameters()]

    ax, ap, ag = run(False)
    bx, bp, bg = run(True)
    assert torch.equal(ax, bx) and torch.equal(ap, bp)
    for a, b in zip(ag, bg):
        assert torch.allclose(a, b, atol=1e-6)


def test_encoder_reads_token_counts_once(monkeypatch):
    # With one molecule per outer-product block (as for 84M), every block
    # takes the packed per-molecule path; the encoder reads the real-token
    # counts back once (a device sync on GPU), not once per block.
    from pyg_unimol2.nn import _utils, encoder, outer_product
    x, pair, mask = inputs()
    enc = UniMol2Encoder(3, 16, 8, 4, num_heads=4).eval()
    ox, op = enc(x, pair, mask, chunk_size=6)  # dense path: no packing
    reads, packed = [], []
    monkeypatch.setattr(outer_product, '_BLOCK_VALUES', 1)
    monkeypatch.setattr(encoder, 'prefix_counts',
                        lambda m: reads.append(1) or _utils.prefix_counts(m))
    monkeypatch.setattr(outer_product, 'prefix_counts', None)  # not called
    original = outer_product._PackedOuterRows.apply
    monkeypatch.setattr(outer_product._PackedOuterRows, 'apply',
                        lambda *v: packed.append(v[-1]) or original(*v))
    px, pp = enc(x, pair, mask)
    assert reads == [1] and packed == [[6, 4]] * 3
    assert torch.allclose(px, ox, atol=1e-5)
    assert torch.allclose(pp, op, atol=1e-5)
