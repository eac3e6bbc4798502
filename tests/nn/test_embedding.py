import torch

from pyg_unimol2.nn import AtomEmbedding, PairEmbedding


def test_atom_embedding():
    torch.manual_seed(0)
    emb = AtomEmbedding(16)
    assert str(emb) == 'AtomEmbedding(16)'
    assert emb.atom_encoder.weight.shape == (512, 16)
    assert emb.degree_encoder.weight.shape == (128, 16)
    assert emb.vnode_encoder.weight.shape == (1, 16)
    # padding rows are zero after reset_parameters()
    assert emb.atom_encoder.weight[0].abs().sum() == 0
    assert emb.degree_encoder.weight[0].abs().sum() == 0

    B, L = 2, 5
    atom_feat = torch.randint(1, 512, (B, L, 8))
    degree = torch.randint(1, 128, (B, L))
    tok = torch.randn(B, L, 16)
    out = emb(atom_feat, degree, tok)
    assert out.shape == (B, L + 1, 16)
    # CLS first, identical for every molecule
    assert torch.equal(out[:, 0], emb.vnode_encoder.weight.expand(B, 16))
    # eq. 2: token + SUM of the 8 feature embeddings + degree
    W, D = emb.atom_encoder.weight, emb.degree_encoder.weight
    expected = tok + D[degree]
    for k in range(8):
        expected = expected + W[atom_feat[..., k]]
    assert torch.allclose(out[:, 1:], expected, atol=1e-6)
    # without token embedding
    assert torch.allclose(emb(atom_feat, degree)[:, 1:], expected - tok,
                          atol=1e-6)


def test_pair_embedding():
    torch.manual_seed(0)
    emb = PairEmbedding(8)
    assert str(emb) == 'PairEmbedding(8)'
    assert emb.edge_encoder.weight.shape == (64, 8)
    assert emb.shorest_path_encoder.weight.shape == (512, 8)
    assert emb.vnode_virtual_distance.weight.shape == (1, 8)
    assert emb.edge_encoder.weight[0].abs().sum() == 0
    assert emb.shorest_path_encoder.weight[0].abs().sum() == 0

    B, L = 2, 4
    spd = torch.randint(1, 512, (B, L, L))
    feat = torch.randint(1, 64, (B, L, L, 3))
    extra = torch.randn(B, L, L, 8)
    out = emb(spd, feat, extra)
    assert out.shape == (B, L + 1, L + 1, 8)
    t = emb.vnode_virtual_distance.weight[0]
    # whole CLS row and column (corner included) hold the same vector
    assert torch.equal(out[:, 0], t.expand(B, L + 1, 8))
    assert torch.equal(out[:, :, 0], t.expand(B, L + 1, 8))
    # eq. 3: SPD + MEAN of the 3 bond embeddings + extra term
    S, E = emb.shorest_path_encoder.weight, emb.edge_encoder.weight
    expected = S[spd] + E[feat].mean(dim=-2) + extra
    assert torch.allclose(out[:, 1:, 1:], expected, atol=1e-6)
    assert torch.allclose(emb(spd, feat)[:, 1:, 1:], expected - extra,
                          atol=1e-6)

    # gradients reach all tables, never the padding rows
    spd[:, -1] = 0
    feat[:, -1] = 0
    emb(spd, feat).sum().backward()
    assert emb.vnode_virtual_distance.weight.grad.abs().sum() > 0
    assert emb.shorest_path_encoder.weight.grad[0].abs().sum() == 0
    assert emb.edge_encoder.weight.grad[0].abs().sum() == 0
