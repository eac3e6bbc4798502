import math
from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch

from pyg_unimol2.data import DenseBatch, to_dense
from pyg_unimol2.data.featurize import from_smiles
from pyg_unimol2.models import PRESETS, UniMol2, UniMol2Config

SMILES = {
    'aspirin': 'CC(=O)Oc1ccccc1C(=O)O',
    'caffeine': 'Cn1cnc2c1c(=O)n(C)c(=O)n2C',
    'sodium acetate': 'CC(=O)[O-].[Na+]',  # two fragments (unreachable SPD)
    'ethanol': 'CCO',
}

#: Paper Table 2 sizes and the official counts (facts sheet B.1, lm_head in).
PAPER = {'42M': 42e6, '84M': 84e6, '164M': 164e6, '310M': 310e6,
         '570M': 570e6, '1.1B': 1.1e9}
OFFICIAL = {'42M': 43.79, '84M': 84.12, '164M': 164.77, '310M': 310.08,
            '570M': 570.23, '1.1B': 1129.21}


def tiny(**kwargs) -> UniMol2:
    cfg = dict(num_layers=2, embed_dim=32, num_heads=4, pair_dim=16,
               pair_hidden_dim=8, ffn_dim=32)
    cfg.update(kwargs)
    torch.manual_seed(0)
    model = UniMol2(**cfg)
    # Perturb the (otherwise 1/0 or tiny) parameters so that every term of
    # the forward pass matters in the comparisons below.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope='module')
def mols():
    return {name: from_smiles(smi, seed=0) for name, smi in SMILES.items()}


def dense(data_list, max_num_atoms=None) -> DenseBatch:
    return to_dense(Batch.from_data_list(list(data_list)), max_num_atoms)


# --------------------------------------------------------------------------
# A literal re-implementation of the official forward pass (facts sheet
# B.3-B.7), with the naive [B,N,N,h,h] outer product, einsum triangles,
# explicit softmax attention and the padded-length normalisation.
# --------------------------------------------------------------------------
def official_forward(model: UniMol2, b: DenseBatch):
    c = model.config
    B, L = b.token.shape
    N, H, E = L + 1, c.num_heads, c.embed_dim
    d, h = E // H, c.pair_hidden_dim

    def ln(t, m):
        return F.layer_norm(t, t.shape[-1:], m.weight, m.bias, 1e-5)

    def lin(t, m):
        return F.linear(t, m.weight, m.bias)

    af, ef = model.atom_feature, model.edge_feature
    x = (model.embed_tokens.weight[b.token] +
         af.atom_encoder.weight[b.atom_feat].sum(-2) +
         af.degree_encoder.weight[b.degree])
    x = torch.cat([af.vnode_encoder.weight.expand(B, 1, E), x], dim=1)

    p = torch.zeros(B, N, N, c.pair_dim)
    p[:, 1:, 1:] = ef.shorest_path_encoder.weight[b.spd]
    t = ef.vnode_virtual_distance.weight.view(1, 1, -1)
    p[:, 1:, 0] = t
    p[:, 0, :] = t
    p[:, 1:, 1:] += ef.edge_encoder.weight[b.pair_feat].mean(-2)

    delta = b.pos.unsqueeze(1) - b.pos.unsqueeze(2)
    dist = delta.norm(dim=-1)
    g = model.se3_invariant_kernel.gaussian
    mul = g.mul.weight[b.pair_type].abs().sum(-2)
    bias = g.bias.weight[b.pair_type].sum(-2)
    y = mul * dist.unsqueeze(-1) + bias
    mean, std = torch.linspace(0, 9, 128), 9 / 127
    k = torch.exp(-0.5 * ((y - mean) / std)**2) / ((2 * 3.14159)**0.5 * std)
    op = model.se3_invariant_kernel.out_proj
    p[:, 1:, 1:] += lin(F.gelu(lin(k, op.layer1)), op.layer2)

    real = torch.cat([torch.ones(B, 1, dtype=torch.bool), b.atom_mask], 1)
    attn_mask = torch.zeros(B, N, N).masked_fill(~real[:, None, :],
                                                 float('-inf'))
    pair_mask = (real[:, :, None] & real[:, None, :]).float()

    enc = model.encoder
    x, p = ln(x, enc.layer_norm), ln(p, enc.pair_layer_norm)
    op_mask = real.float()[..., None] * N**-0.5
    op_norm = 1 / (1e-3 + op_mask[:, :, None] * op_mask[:, None, :])
    for layer in enc.layers:
        at = layer.self_attn
        z = ln(x, layer.self_attn_layer_norm)
        q = (z @ at.linear_q.weight.T * d**-0.5).view(B, N, H, d)
        kk = (z @ at.linear_k.weight.T).view(B, N, H, d)
        v = (z @ at.linear_v.weight.T).view(B, N, H, d)
        logits = torch.einsum('bihd,bjhd->bhij', q, kk)
        logits = logits + attn_mask[:, None] + \
            lin(p, at.linear_bias).permute(0, 3, 1, 2)
        o = torch.einsum('bhij,bjhd->bihd', logits.softmax(-1), v)
        x = x + lin(o.reshape(B, N, E), at.linear_o)
        f = layer.ffn
        x = x + lin(F.gelu(lin(ln(x, layer.final_layer_norm), f.linear_1)),
                    f.linear_2)

        ab = lin(ln(x, layer.x_layer_norm_opm), layer.opm.linear_in) * op_mask
        a, bb = ab[..., :h], ab[..., h:]
        outer = torch.einsum('bic,bje->bijce', a, bb).reshape(B, N, N, h * h)
        p = p + lin(outer, layer.opm.linear_out) * op_norm

        tm = layer.pair_tri_mul
        z = ln(p, layer.pair_layer_norm_trimul)
        m = pair_mask[..., None] * N**-0.5
        ab = lin(z, tm.linear_ab_p) * m * torch.sigmoid(lin(z, tm.linear_ab_g))
        a, bb = ab[..., :h], ab[..., h:]
        u = torch.einsum('bikc,bjkc->bijc', a, bb) + \
            torch.einsum('bkic,bkjc->bijc', a, bb)
        p = p + lin(z, tm.linear_g) * lin(ln(u, tm.layer_norm_out),
                                          tm.linear_z)
        f = layer.pair_ffn
        p = p + lin(F.gelu(lin(ln(p, layer.pair_layer_norm_ffn), f.linear_1)),
                    f.linear_2)

    hd = model.movement_pred_head
    z = ln(x[:, 1:], hd.layer_norm)
    q = (z @ hd.q_proj.weight.T).view(B, L, H, d).transpose(1, 2) * d**-0.5
    kk = (z @ hd.k_proj.weight.T).view(B, L, H, d).transpose(1, 2)
    v = (z @ hd.v_proj.weight.T).view(B, L, H, d).transpose(1, 2)
    logits = q @ kk.transpose(-1, -2) + attn_mask[:, None, 1:, 1:] + lin(
        ln(p[:, 1:, 1:], hd.pair_layer_norm), hd.linear_bias).permute(
            0, 3, 1, 2)
    rot = logits.softmax(-1).unsqueeze(-1) * delta.unsqueeze(1)
    out = rot.permute(0, 1, 4, 2, 3) @ v.unsqueeze(2)  # [B, H, 3, L, d]
    out = out.permute(0, 3, 2, 1, 4).reshape(B, L, 3, E)
    pos_pred = b.pos + (out @ hd.force_proj1.weight.T).view(B, L, 3)
    return x, p, pos_pred


def official_padded_length(n_max: int) -> int:
    """OFF collater: N = L + 1 is a multiple of 4 (A.11)."""
    return math.ceil((n_max + 1) / 4) * 4 - 1


# --------------------------------------------------------------------------
def test_preset_parameter_counts():
    for name, paper in PAPER.items():
        with torch.device('meta'):
            model = UniMol2.from_preset(name)
        count = model.num_parameters()
        assert abs(count - paper) / paper < 0.05, name
        assert round(count / 1e6, 2) == OFFICIAL[name], name
        c = model.config
        assert c.embed_dim // c.num_heads == 16
        assert (c.pair_dim, c.pair_hidden_dim, c.num_kernels) == (512, 64, 128)
        assert c.ffn_dim == c.embed_dim and c.name == name
    with torch.device('meta'):
        m = UniMol2.from_preset('84M')
        assert round(sum(p.numel() for p in m.lm_head.parameters()) / 1e6,
                     2) == 0.69
        assert round(sum(p.numel() for p in m.encoder.layers[0].parameters())
                     / 1e6, 2) == 6.72
        assert m.num_parameters() - UniMol2.from_preset(
            '84M', lm_head=False).num_parameters() == 690560
    # CPU presets
    assert 0.5e6 < UniMol2.from_preset('tiny').num_parameters() < 1.5e6
    assert 2e6 < UniMol2.from_preset('small').num_parameters() < 8e6


def test_state_dict_equals_official_names():
    """Facts sheet B.2 example config: layers=2, E=64, H=4, P=32, h=16."""
    model = UniMol2(num_layers=2, embed_dim=64, num_heads=4, pair_dim=32,
                    pair_hidden_dim=16, ffn_dim=64)
    E, P, H, h = 64, 32, 4, 16
    expected = {
        'embed_tokens.weight': (128, E),
        'atom_feature.atom_encoder.weight': (512, E),
        'atom_feature.degree_encoder.weight': (128, E),
        'atom_feature.vnode_encoder.weight': (1, E),
        'edge_feature.edge_encoder.weight': (64, P),
        'edge_feature.shorest_path_encoder.weight': (512, P),
        'edge_feature.vnode_virtual_distance.weight': (1, P),
        'encoder.layer_norm.weight': (E, ), 'encoder.layer_norm.bias': (E, ),
        'encoder.pair_layer_norm.weight': (P, ),
        'encoder.pair_layer_norm.bias': (P, ),
        'lm_head.weight': (128, E), 'lm_head.bias': (128, ),
        'lm_head.dense.weight': (E, E), 'lm_head.dense.bias': (E, ),
        'lm_head.layer_norm.weight': (E, ), 'lm_head.layer_norm.bias': (E, ),
        'se3_invariant_kernel.gaussian.mean': (128, ),
        'se3_invariant_kernel.gaussian.mul.weight': (512, 1),
        'se3_invariant_kernel.gaussian.bias.weight': (512, 1),
        'se3_invariant_kernel.out_proj.layer1.weight': (128, 128),
        'se3_invariant_kernel.out_proj.layer1.bias': (128, ),
        'se3_invariant_kernel.out_proj.layer2.weight': (P, 128),
        'se3_invariant_kernel.out_proj.layer2.bias': (P, ),
        'movement_pred_head.layer_norm.weight': (E, ),
        'movement_pred_head.layer_norm.bias': (E, ),
        'movement_pred_head.q_proj.weight': (E, E),
        'movement_pred_head.k_proj.weight': (E, E),
        'movement_pred_head.v_proj.weight': (E, E),
        'movement_pred_head.force_proj1.weight': (1, E),
        'movement_pred_head.linear_bias.weight': (H, P),
        'movement_pred_head.linear_bias.bias': (H, ),
        'movement_pred_head.pair_layer_norm.weight': (P, ),
        'movement_pred_head.pair_layer_norm.bias': (P, ),
    }
    layer = {
        'self_attn.linear_q.weight': (E, E),
        'self_attn.linear_k.weight': (E, E),
        'self_attn.linear_v.weight': (E, E),
        'self_attn.linear_o.weight': (E, E), 'self_attn.linear_o.bias': (E, ),
        'self_attn.linear_bias.weight': (H, P),
        'self_attn.linear_bias.bias': (H, ),
        'ffn.linear_1.weight': (E, E), 'ffn.linear_1.bias': (E, ),
        'ffn.linear_2.weight': (E, E), 'ffn.linear_2.bias': (E, ),
        'opm.linear_in.weight': (2 * h, E), 'opm.linear_in.bias': (2 * h, ),
        'opm.linear_out.weight': (P, h * h), 'opm.linear_out.bias': (P, ),
        'pair_ffn.linear_1.weight': (P, P), 'pair_ffn.linear_1.bias': (P, ),
        'pair_ffn.linear_2.weight': (P, P), 'pair_ffn.linear_2.bias': (P, ),
        'pair_tri_mul.linear_ab_p.weight': (2 * h, P),
        'pair_tri_mul.linear_ab_p.bias': (2 * h, ),
        'pair_tri_mul.linear_ab_g.weight': (2 * h, P),
        'pair_tri_mul.linear_ab_g.bias': (2 * h, ),
        'pair_tri_mul.linear_g.weight': (P, P),
        'pair_tri_mul.linear_g.bias': (P, ),
        'pair_tri_mul.linear_z.weight': (P, h),
        'pair_tri_mul.linear_z.bias': (P, ),
        'pair_tri_mul.layer_norm_out.weight': (h, ),
        'pair_tri_mul.layer_norm_out.bias': (h, ),
    }
    for ln_name, dim in [('self_attn_layer_norm', E), ('final_layer_norm', E),
                         ('x_layer_norm_opm', E), ('pair_layer_norm_ffn', P),
                         ('pair_layer_norm_trimul', P)]:
        layer[f'{ln_name}.weight'] = layer[f'{ln_name}.bias'] = (dim, )
    for i in range(2):
        expected.update({f'encoder.layers.{i}.{k}': v
                         for k, v in layer.items()})
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected

    head = model.register_classification_head('qm9', num_classes=3)
    assert head.out_proj.out_features == 3
    keys = set(model.state_dict()) - set(expected)
    assert keys == {'classification_heads.qm9.dense.weight',
                    'classification_heads.qm9.dense.bias',
                    'classification_heads.qm9.out_proj.weight',
                    'classification_heads.qm9.out_proj.bias'}


def test_initialisation():
    torch.manual_seed(0)
    model = UniMol2.from_preset('tiny')
    assert model.embed_tokens.padding_idx == 0
    for emb in (model.embed_tokens, model.atom_feature.atom_encoder,
                model.edge_feature.shorest_path_encoder,
                model.se3_invariant_kernel.gaussian.mul):
        assert emb.weight[0].abs().sum() == 0
    # BERT init everywhere, including the Gaussian mul/bias tables
    w = model.encoder.layers[0].pair_ffn.linear_1.weight
    assert abs(w.std().item() - 0.02) < 0.003
    assert model.encoder.layers[0].pair_ffn.linear_1.bias.abs().sum() == 0
    mul = model.se3_invariant_kernel.gaussian.mul.weight[1:]
    assert abs(mul.std().item() - 0.02) < 0.005
    assert torch.equal(model.encoder.layer_norm.weight,
                       torch.ones(model.config.embed_dim))
    # lm_head: kaiming-uniform output weight, zero bias
    E = model.config.embed_dim
    lw = model.lm_head.weight
    assert 0.5 / math.sqrt(E) < lw.abs().max() <= 1 / math.sqrt(E)
    assert model.lm_head.bias.abs().sum() == 0


def test_forward_shapes_and_inputs(mols):
    model = tiny()
    assert str(model) == ('UniMol2(num_layers=2, embed_dim=32, heads=4, '
                          'pair_dim=16, pair_hidden_dim=8)')
    data = list(mols.values())
    batch = Batch.from_data_list(data)
    out = model(batch)
    B, L = len(data), max(d.num_nodes for d in data)
    assert out.cls.shape == (B, 32)
    assert out.atoms.shape == (B, L, 32)
    assert out.pair.shape == (B, L + 1, L + 1, 16)
    assert out.pos_pred.shape == (B, L, 3)
    assert torch.equal(out.atom_mask, to_dense(batch).atom_mask)
    assert out.logits is None
    for t in (out.cls, out.atoms, out.pair, out.pos_pred):
        assert torch.isfinite(t).all()
    # DenseBatch input gives the same result
    out2 = model(to_dense(batch))
    assert torch.equal(out2.cls, out.cls)

    masked = out.atom_mask.clone()
    masked[:, 1:] = False
    with_lm = model(batch, masked_tokens=masked)
    assert with_lm.logits.shape == (B, 128)
    no_pos = model(batch, compute_pos=False)
    assert no_pos.pos_pred is None and torch.equal(no_pos.cls, out.cls)
    with pytest.raises(ValueError, match='lm_head'):
        tiny(lm_head=False)(batch, masked_tokens=masked)


def random_rotation(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def test_rotation_translation(mols):
    model = tiny()
    b = dense(mols.values())
    out = model(b)
    R = random_rotation(1)
    shift = torch.tensor([3.0, -1.0, 2.5])
    moved = replace(b, pos=(b.pos @ R.T + shift) * b.atom_mask[..., None])
    out2 = model(moved)
    m = b.atom_mask  # padded positions hold unused values
    pm = torch.cat([torch.ones_like(m[:, :1]), m], 1)
    pm = pm[:, :, None] & pm[:, None, :]
    assert torch.allclose(out2.cls, out.cls, atol=1e-4)
    assert torch.allclose(out2.atoms[m], out.atoms[m], atol=1e-4)
    assert torch.allclose(out2.pair[pm], out.pair[pm], atol=1e-4)
    expected = out.pos_pred @ R.T + shift
    assert torch.allclose(out2.pos_pred[m], expected[m], atol=1e-4)
    assert not torch.allclose(out2.pos_pred[m], out.pos_pred[m], atol=1e-1)


def test_permutation_equivariance(mols):
    model = tiny()
    b = dense([mols['caffeine']])
    n = b.token.size(1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    pb = DenseBatch(token=b.token[:, perm], atom_feat=b.atom_feat[:, perm],
                    degree=b.degree[:, perm], pos=b.pos[:, perm],
                    spd=b.spd[:, perm][:, :, perm],
                    pair_feat=b.pair_feat[:, perm][:, :, perm],
                    pair_type=b.pair_type[:, perm][:, :, perm],
                    atom_mask=b.atom_mask[:, perm])
    out, pout = model(b), model(pb)
    tok = torch.cat([torch.zeros(1, dtype=torch.long), perm + 1])  # CLS first
    assert torch.allclose(pout.cls, out.cls, atol=1e-5)
    assert torch.allclose(pout.atoms, out.atoms[:, perm], atol=1e-5)
    assert torch.allclose(pout.pair, out.pair[:, tok][:, :, tok], atol=1e-5)
    assert torch.allclose(pout.pos_pred, out.pos_pred[:, perm], atol=1e-5)


def test_padding_independence(mols):
    model = tiny()
    names = list(mols)
    batch = model(dense(mols.values(), max_num_atoms=20))  # extra padding
    for i, name in enumerate(names):
        alone = model(dense([mols[name]]))
        n = mols[name].num_nodes
        assert torch.allclose(batch.cls[i], alone.cls[0], atol=1e-5), name
        assert torch.allclose(batch.atoms[i, :n], alone.atoms[0], atol=1e-5)
        assert torch.allclose(batch.pair[i, :n + 1, :n + 1], alone.pair[0],
                              atol=1e-5)
        assert torch.allclose(batch.pos_pred[i, :n], alone.pos_pred[0],
                              atol=1e-5)


def test_matches_official_reference(mols):
    model = tiny()
    # 1) a molecule alone, no padding: our default == the official formula
    for name in ('aspirin', 'sodium acetate'):
        b = dense([mols[name]])
        out = model(b)
        x, p, pos = official_forward(model, b)
        assert torch.allclose(out.cls, x[:, 0], atol=1e-5)
        assert torch.allclose(out.atoms, x[:, 1:], atol=1e-5)
        assert torch.allclose(out.pair, p, atol=1e-5)
        assert torch.allclose(out.pos_pred, pos, atol=1e-5)

    # 2) official collate padding + padded normalisation: bit-level parity
    data = list(mols.values())
    L = official_padded_length(max(d.num_nodes for d in data))
    b = dense(data, max_num_atoms=L)
    off = tiny(padded_norm=True)
    out = off(b)
    x, p, pos = official_forward(off, b)
    m = b.atom_mask
    pm = torch.cat([torch.ones_like(m[:, :1]), m], 1)
    pm = pm[:, :, None] & pm[:, None, :]
    assert torch.allclose(out.cls, x[:, 0], atol=1e-5)
    assert torch.allclose(out.atoms[m], x[:, 1:][m], atol=1e-5)
    assert torch.allclose(out.pair[pm], p[pm], atol=1e-4)
    assert torch.allclose(out.pos_pred[m], pos[m], atol=1e-5)
    # ... and that normalisation indeed depends on padding, ours does not
    assert not torch.allclose(out.cls, model(b).cls, atol=1e-4)


def test_chunking_and_checkpointing(mols):
    b = dense(mols.values())
    ref = tiny()
    out = ref(b)
    chunked = tiny(chunk_size=3)
    assert torch.allclose(chunked(b).pair, out.pair, atol=1e-5)

    def grads(model):
        model.train()
        torch.manual_seed(7)
        o = model(b, masked_tokens=b.atom_mask)
        loss = o.cls.pow(2).sum() + o.pos_pred.pow(2).mean() + \
            o.logits.logsumexp(-1).mean()
        loss.backward()
        return {n: p.grad for n, p in model.named_parameters()
                if p.grad is not None}

    g0 = grads(tiny())
    g1 = grads(tiny(checkpointing=True))
    assert g0.keys() == g1.keys() and len(g0) > 100
    for n in g0:
        assert torch.allclose(g0[n], g1[n], atol=1e-6, rtol=1e-5), n


def test_config_and_presets():
    assert set(PRESETS) == {'80K', '180K', '420K', 'tiny', '2M', 'small',
                            '42M', '84M', '164M', '310M', '570M', '1.1B'}
    with torch.device('meta'):  # the names are the parameter counts
        counts = {name: UniMol2.from_preset(name).num_parameters()
                  for name in ('80K', '180K', '420K', '2M')}
    assert counts == {'80K': 81_350, '180K': 180_940, '420K': 422_910,
                      '2M': 1_971_092}
    model = UniMol2.from_preset('tiny', dropout=0.0, lm_head=False)
    assert model.config.dropout == 0.0 and model.lm_head is None
    assert PRESETS['tiny'].dropout == 0.1  # presets are not mutated
    again = UniMol2(asdict(model.config))  # checkpoint round trip
    assert again.config == model.config
    again.load_state_dict(model.state_dict())
    with pytest.raises(KeyError):
        UniMol2.from_preset('7B')
    with pytest.raises(ValueError):
        UniMol2Config(embed_dim=30, num_heads=4)
    assert UniMol2Config().ffn_hidden_dim == 768  # default = official base
