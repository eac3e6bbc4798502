import math

import numpy as np
import pytest
import torch
from conftest import read_moses
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolAlign
from torch_geometric.data import Batch

from pyg_unimol2.data import from_atoms, from_mol, from_smiles, to_dense
from pyg_unimol2.models import UniMol2
from pyg_unimol2.models.unimol2 import MASK_IDX, UniMol2Output
from pyg_unimol2.pretrain import (ObjectiveConfig, corrupt, kabsch_align,
                                  pretrain_loss)
from pyg_unimol2.pretrain.denoising import Collate, coords_2d


@pytest.fixture(scope='module')
def molecules():
    return [from_smiles(s, seed=0, optimize=False) for s in read_moses(24)]


@pytest.fixture(scope='module')
def dense(molecules):
    return to_dense(Batch.from_data_list(molecules))


def _rotation(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen,
                                       dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def test_kabsch_recovers_known_rotation(dense):
    Q = dense.pos.double()
    mask = dense.atom_mask
    R = _rotation(0)
    P = (Q - 1.5) @ R.T + torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64)
    P = P * mask.unsqueeze(-1)
    aligned = kabsch_align(P, Q, mask)
    assert torch.allclose(aligned[mask], Q[mask], atol=1e-9)
    assert torch.equal(aligned[~mask], P[~mask])


def test_kabsch_never_reflects():
    Q = torch.randn(1, 12, 3, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    P = Q * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # mirror
    aligned = kabsch_align(P, Q)
    # A proper rotation of P: pairwise distances kept, not the mirror fix.
    assert torch.allclose(torch.cdist(aligned[0], aligned[0]),
                          torch.cdist(P[0], P[0]), atol=1e-9)
    assert not torch.allclose(aligned, Q, atol=1e-3)
    Pc, Ac = P[0] - P[0].mean(0), aligned[0] - aligned[0].mean(0)
    R = torch.linalg.lstsq(Pc, Ac).solution.T
    assert torch.det(R) == pytest.approx(1.0, abs=1e-9)


def test_kabsch_rmsd_matches_rdkit():
    pairs, mine, theirs = [], [], []
    for smiles in read_moses(8):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        ids = AllChem.EmbedMultipleConfs(mol, 2, randomSeed=7)
        mol = Chem.RemoveHs(mol)
        a, b = (from_mol(mol, conf_id=i) for i in ids)
        pairs.append((a, b))
        theirs.append(rdMolAlign.AlignMol(Chem.Mol(mol), mol,
                                          prbCid=ids[0], refCid=ids[1],
                                          atomMap=[(i, i) for i in
                                                   range(mol.GetNumAtoms())]))
    A = to_dense(Batch.from_data_list([a for a, _ in pairs]))
    B = to_dense(Batch.from_data_list([b for _, b in pairs]))
    aligned = kabsch_align(A.pos.double(), B.pos.double(), A.atom_mask)
    sq = ((aligned - B.pos.double()).square().sum(-1) * A.atom_mask)
    mine = (sq.sum(1) / A.num_atoms).sqrt()
    assert np.allclose(mine.numpy(), theirs, atol=1e-4)


def test_kabsch_independent_of_padding(molecules):
    one = to_dense(molecules[0])
    padded = to_dense(molecules[0], max_num_atoms=40)
    noisy = one.pos + 0.3
    noisy_padded = padded.pos.clone()
    noisy_padded[:, :one.pos.shape[1]] = noisy
    a = kabsch_align(noisy, one.pos, one.atom_mask)
    b = kabsch_align(noisy_padded, padded.pos, padded.atom_mask)
    assert torch.allclose(a, b[:, :one.pos.shape[1]], atol=1e-6)


def test_token_masking_counts_and_targets(dense):
    config = ObjectiveConfig(drop_feat_prob=0.0)
    n = dense.num_atoms
    counts = []
    for seed in range(20):
        out = corrupt(dense, config, torch.Generator().manual_seed(seed))
        c = out.masked.sum(1)
        low = (0.15 * n).floor()
        assert bool(((c == low) | (c == low + 1)).all())
        assert not bool((out.masked & ~dense.atom_mask).any())
        assert bool((out.inputs.token[out.masked] == MASK_IDX).all())
        assert torch.equal(out.inputs.token[~out.masked],
                           dense.token[~out.masked])
        assert torch.equal(out.target_token[out.masked],
                           dense.token[out.masked])
        assert bool((out.target_token[~out.masked] == 0).all())
        counts.append(c)
    # E[floor(0.15 n + u)] = 0.15 n: probabilistic rounding is unbiased.
    frac = torch.stack(counts).sum() / (20 * n.sum())
    assert float(frac) == pytest.approx(0.15, abs=0.01)


def test_corruption_is_deterministic(dense):
    config = ObjectiveConfig()
    a = corrupt(dense, config, torch.Generator().manual_seed(3))
    b = corrupt(dense, config, torch.Generator().manual_seed(3))
    c = corrupt(dense, config, torch.Generator().manual_seed(4))
    assert torch.equal(a.inputs.pos, b.inputs.pos)
    assert torch.equal(a.masked, b.masked)
    assert torch.equal(a.inputs.spd, b.inputs.spd)
    assert not torch.equal(a.masked, c.masked)


def test_paper_noise_is_gaussian_on_all_atoms(dense):
    out = corrupt(dense, ObjectiveConfig(),
                  torch.Generator().manual_seed(0))
    mask = dense.atom_mask
    assert torch.equal(out.noised, mask)
    # Target: clean, centered; input: noised then aligned onto it.
    centroid = (out.target_pos * mask.unsqueeze(-1)).sum(1)
    assert torch.allclose(centroid, torch.zeros_like(centroid), atol=1e-4)
    n = int(dense.num_atoms[0])
    assert torch.allclose(torch.cdist(out.target_pos[0, :n],
                                      out.target_pos[0, :n]),
                          torch.cdist(dense.pos[0, :n], dense.pos[0, :n]),
                          atol=1e-4)
    delta = (out.inputs.pos - out.target_pos)[mask]
    # Alignment removes 6 of 3n degrees of freedom: std slightly below 0.2.
    assert 0.17 < float(delta.std()) < 0.21


def test_official_noise_is_uniform_on_15_percent(dense):
    config = ObjectiveConfig.official(use_2d_prob=0.0)
    assert (config.noise_type, config.noise, config.noise_fraction) == \
        ('uniform', 1.0, 0.15)
    out = corrupt(dense, config, torch.Generator().manual_seed(0))
    n = dense.num_atoms
    low = (0.15 * n).floor()
    c = out.noised.sum(1)
    assert bool(((c == low) | (c == low + 1)).all())
    # Before alignment the noise is in [-1, 1]; the whole structure moves.
    moved = (out.inputs.pos - out.target_pos).norm(dim=-1)
    assert float(moved[dense.atom_mask & ~out.noised].max()) > 0


def test_feature_dropping_matches_official_codes(molecules, dense):
    out = corrupt(dense, ObjectiveConfig(drop_feat_prob=0.5),
                  torch.Generator().manual_seed(5))
    inp = out.inputs
    mask = dense.atom_mask
    dropped = (inp.degree == 1).any(1)
    assert 0 < int(dropped.sum()) < len(molecules)
    for b, data in enumerate(molecules):
        n = data.num_nodes
        if dropped[b]:
            # What featurization gives a molecule without a graph.
            ref = to_dense(from_atoms(data.z, data.pos, name='x'))
            for key in ('atom_feat', 'degree', 'spd', 'pair_feat',
                        'pair_type'):
                got = getattr(inp, key)[b:b + 1, :n, :n] if key in (
                    'spd', 'pair_feat', 'pair_type') else \
                    getattr(inp, key)[b:b + 1, :n]
                assert torch.equal(got, getattr(ref, key)), key
        else:
            for key in ('atom_feat', 'degree', 'spd', 'pair_feat',
                        'pair_type'):
                assert torch.equal(getattr(inp, key)[b],
                                   getattr(dense, key)[b]), key
    # Padding keeps code 0; tokens of unmasked atoms are untouched.
    assert bool((inp.spd[~dense.pair_mask] == 0).all())
    assert bool((inp.atom_feat[~mask] == 0).all())
    frac = np.mean([bool((corrupt(dense, ObjectiveConfig(),
                                  torch.Generator().manual_seed(s))
                          .inputs.degree == 1).any(1)[0])
                    for s in range(200)])
    assert frac == pytest.approx(0.5, abs=0.1)


def test_2d_coordinates(molecules):
    items = molecules[:4]
    dense, pos_2d = Collate(with_2d=True)(items)
    for b, data in enumerate(items):
        mol = Chem.MolFromSmiles(data.smiles)
        assert [a.GetAtomicNum() for a in mol.GetAtoms()] == data.z.tolist()
        assert torch.equal(pos_2d[b, :data.num_nodes],
                           coords_2d(data.smiles, data.num_nodes))
    config = ObjectiveConfig(drop_feat_prob=0.0, use_2d_prob=1.0,
                             noise_type='none')
    out = corrupt(dense, config, torch.Generator().manual_seed(0), pos_2d)
    assert bool((out.target_pos[..., 2] == 0).all())
    assert torch.allclose(out.inputs.pos, out.target_pos, atol=1e-5)
    with pytest.raises(ValueError, match='pos_2d'):
        corrupt(dense, config, torch.Generator().manual_seed(0))


def test_loss_normalisation_and_perfect_prediction(dense):
    config = ObjectiveConfig()
    batch = corrupt(dense, config, torch.Generator().manual_seed(0))
    M = int(batch.masked.sum())
    target = batch.target_token[batch.masked]
    perfect = UniMol2Output(
        cls=None, atoms=None, pair=None, pos_pred=batch.target_pos.clone(),
        atom_mask=dense.atom_mask,
        logits=torch.nn.functional.one_hot(target, 128).float() * 50)
    terms = pretrain_loss(perfect, batch, config)
    assert float(terms['coord']) == 0 and float(terms['dist']) == 0
    assert float(terms['atom']) < 1e-6 and float(terms['acc']) == 1.0

    # Shift molecule 0 by (1, 0, 0): coordinate loss = (1/B) * n0 / n0.
    shifted = batch.target_pos.clone()
    shifted[0] += torch.tensor([1.0, 0.0, 0.0]) * dense.atom_mask[0, :, None]
    perfect.pos_pred = shifted
    terms = pretrain_loss(perfect, batch, config)
    B = dense.token.shape[0]
    assert float(terms['coord']) == pytest.approx(1.0 / B)
    assert float(terms['dist']) == pytest.approx(0.0, abs=1e-5)

    # Distance loss against a brute-force double loop on molecule 0.
    pred = batch.target_pos.clone()
    pred[0, 0] += torch.tensor([0.5, -0.2, 0.1])
    perfect.pos_pred = pred
    n = int(dense.num_atoms[0])
    P, T = pred[0, :n].double(), batch.target_pos[0, :n].double()
    brute = sum(abs(float((P[i] - P[j]).norm() - (T[i] - T[j]).norm()))
                for i in range(n) for j in range(n)) / n**2 / B
    assert float(pretrain_loss(perfect, batch, config)['dist']) == \
        pytest.approx(brute, rel=1e-4)
    assert M > 0


def test_model_losses_finite_with_finite_gradients(dense):
    torch.manual_seed(0)
    model = UniMol2.from_preset('tiny')
    config = ObjectiveConfig()
    batch = corrupt(dense, config, torch.Generator().manual_seed(0))
    out = model(batch.inputs, masked_tokens=batch.masked)
    terms = pretrain_loss(out, batch, config)
    assert all(math.isfinite(float(v.detach())) for v in terms.values())
    # Chance level for 128 classes, a fraction of an Angstrom for the rest.
    assert 3.0 < float(terms['atom']) < 6.0
    assert 0.0 < float(terms['coord']) < 2.0
    terms['loss'].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == sum(1 for _ in model.parameters())
    assert all(bool(torch.isfinite(g).all()) for g in grads)


def test_config_validation():
    with pytest.raises(ValueError, match='noise_type'):
        ObjectiveConfig(noise_type='gauss')
    with pytest.raises(ValueError, match='mask_prob'):
        ObjectiveConfig(mask_prob=1.5)
