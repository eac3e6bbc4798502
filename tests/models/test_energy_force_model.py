"""EnergyForceModel on real molecules (MOSES SMILES with all hydrogens and
ETKDG conformers; one structure through geometry_to_data, graph dropped),
in float64."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from pyg_unimol2.data import from_smiles, to_dense
from pyg_unimol2.data.geometry import GeometryRecord, geometry_to_data
from pyg_unimol2.models import EnergyForceModel, UniMol2
from pyg_unimol2.nn import bert_init_all_
from pyg_unimol2.tasks import (EnergyForceStats, energy_force_loss,
                               fit_energy_force_stats, fit_reference_energies)

from conftest import read_moses

MODES = ['direct', 'conservative']
F64 = torch.float64


def random_rotation(seed: int, proper: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q


@pytest.fixture(scope='module')
def molecules():
    data = [from_smiles(s, remove_hs=False) for s in read_moses(3)]
    first = data[0]
    g = torch.Generator().manual_seed(0)
    for d in data:
        noise = float(torch.randn(1, generator=g, dtype=F64))
        d.energy = torch.tensor([-50.0 * d.z.numel() + noise], dtype=F64)
        d.forces = torch.randn(d.z.numel(), 3, generator=g)
    # graph features dropped, forces but no energy
    record = GeometryRecord('geom', first.z.numpy(),
                            first.pos.double().numpy() + 0.1,
                            forces=torch.randn(first.z.numel(), 3,
                                               generator=g).numpy())
    data.append(geometry_to_data(record))
    data[1].forces[:3] = float('nan')  # atoms without a force label
    return data


@pytest.fixture(scope='module')
def model(molecules):
    torch.manual_seed(0)
    backbone = UniMol2.from_preset('tiny', lm_head=False, dropout=0.0,
                                   attention_dropout=0.0, pair_dropout=0.0)
    model = EnergyForceModel(backbone, {'a': 'direct', 'b': 'conservative'})
    # larger weights than BERT's 0.02, so that the energy depends visibly
    # on the geometry
    bert_init_all_(model, std=0.1)
    # (three energies fit exactly: realistic scales instead of the RMS)
    reference = fit_reference_energies([d.z for d in molecules],
                                       [float(d.energy) for d in molecules])
    stats = EnergyForceStats(reference, energy_scale=0.7, force_scale=1.3)
    for d in model.datasets:
        model.dataset_heads(d).set_statistics(stats)
    return model.double().eval()


def dense_of(data_list):
    return to_dense(Batch.from_data_list(data_list)).to('cpu', F64)


def test_repr_and_dtypes(model, molecules):
    assert str(model) == "EnergyForceModel(tiny, a='direct', b='conservative')"
    heads = model.dataset_heads('a')
    assert str(heads).startswith("EnergyForceHeads(force='direct'")
    assert model.force_modes == {'a': 'direct', 'b': 'conservative'}
    # the statistics stay float64 whatever the model dtype
    model.float()
    assert heads.reference.dtype == F64 and heads.force_scale.dtype == F64
    model.double()
    assert heads.reference[6] != 0 and heads.reference[1] != 0


@pytest.mark.parametrize('mode', ['a', 'b'])
@pytest.mark.parametrize('proper', [True, False])
def test_invariance_and_equivariance(model, molecules, mode, proper):
    dense = dense_of(molecules)  # padded batch
    energy, forces = model(dense, mode)
    assert energy.dtype == F64 and forces.shape == dense.pos.shape
    assert torch.isfinite(forces).all() and forces.abs().max() > 1e-3
    R = random_rotation(7, proper)
    t = torch.tensor([3.0, -1.0, 2.5], dtype=F64)
    moved = replace(dense, pos=dense.pos @ R.T + t)  # padding moved too
    energy2, forces2 = model(moved, mode)
    torch.testing.assert_close(energy2, energy, rtol=1e-9, atol=0)
    # also the learned part, beside the -1e3 eV references
    torch.testing.assert_close(
        model.normalize(mode, moved, energy2, forces2)[0],
        model.normalize(mode, dense, energy, forces)[0], rtol=1e-8, atol=0)
    torch.testing.assert_close(forces2, forces @ R.T, rtol=1e-7, atol=1e-9)


def test_conservative_forces_are_minus_energy_gradient(model, molecules):
    dense = dense_of(molecules[2:3])
    with torch.no_grad():
        _, forces = model(dense, 'b')
    h = 1e-4
    for atom, axis in [(0, 0), (5, 1), (11, 2), (20, 0), (33, 1)]:
        plus, minus = dense.pos.clone(), dense.pos.clone()
        plus[0, atom, axis] += h
        minus[0, atom, axis] -= h
        with torch.no_grad():
            e_plus = model(replace(dense, pos=plus), 'b')[0]
            e_minus = model(replace(dense, pos=minus), 'b')[0]
        fd = -(e_plus - e_minus) / (2 * h)
        assert abs(float(fd) - float(forces[0, atom, axis])) <= \
            1e-5 * float(forces.abs().max()), (atom, axis)


def permute(dense, perm):
    def atoms(t):
        return t[:, perm]

    def pairs(t):
        return t[:, perm][:, :, perm]
    return replace(dense, token=atoms(dense.token),
                   atom_feat=atoms(dense.atom_feat),
                   degree=atoms(dense.degree), pos=atoms(dense.pos),
                   atom_mask=atoms(dense.atom_mask), spd=pairs(dense.spd),
                   pair_feat=pairs(dense.pair_feat),
                   pair_type=pairs(dense.pair_type))


@pytest.mark.parametrize('mode', ['a', 'b'])
def test_permutation(model, molecules, mode):
    dense = dense_of(molecules[1:2])
    perm = torch.randperm(dense.token.size(1),
                          generator=torch.Generator().manual_seed(3))
    energy, forces, atom_energy = model(dense, mode, return_atom_energy=True)
    e2, f2, a2 = model(permute(dense, perm), mode, return_atom_energy=True)
    torch.testing.assert_close(e2, energy, rtol=1e-10, atol=0)
    torch.testing.assert_close(f2, forces[:, perm], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(a2, atom_energy[:, perm], rtol=1e-8,
                               atol=1e-10)
    torch.testing.assert_close(atom_energy.sum(dim=1), energy)


@pytest.mark.parametrize('mode', ['a', 'b'])
def test_padding_independence(model, molecules, mode):
    small, large = molecules[2], molecules[0]
    n = small.z.numel()
    alone = model(dense_of([small]), mode)
    batched = model(dense_of([small, large]), mode)
    assert batched[1].shape[1] > n
    torch.testing.assert_close(batched[0][0], alone[0][0], rtol=1e-10,
                               atol=0)
    torch.testing.assert_close(batched[1][0, :n], alone[1][0], rtol=1e-8,
                               atol=1e-10)
    assert torch.equal(batched[1][0, n:], torch.zeros_like(batched[1][0, n:]))


@pytest.mark.parametrize('mode', ['a', 'b'])
def test_loss_gradients_finite_with_padding(model, molecules, mode):
    model.train()
    try:
        batch = Batch.from_data_list(molecules)
        dense = to_dense(batch).to('cpu', F64)
        pos = dense.pos.clone().requires_grad_()
        energy, forces = model(replace(dense, pos=pos), mode)
        pred = model.normalize(mode, batch, energy, forces)
        target = model.normalized_targets(mode, batch)
        assert torch.isnan(target[1][~dense.atom_mask]).all()
        terms = energy_force_loss(*pred, *target, dense.atom_mask)
        model.zero_grad()
        terms['loss'].backward()
    finally:
        model.eval()
    assert int(terms['num_energies']) == 3
    assert int(terms['num_atoms']) == sum(d.z.numel()
                                          for d in molecules) - 3
    assert torch.isfinite(pos.grad).all()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    heads = model.dataset_heads(mode)
    # the force loss reaches the energy head (conservative) / force head
    assert heads.energy.mlp.layer1.weight.grad.abs().max() > 0
    if mode == 'a':
        assert heads.force.q_proj.weight.grad.abs().max() > 0


def test_normalisation_round_trip(model, molecules):
    batch = Batch.from_data_list(molecules)
    dense = to_dense(batch).to('cpu', F64)
    heads = model.dataset_heads('a')
    with torch.no_grad():
        energy, forces, atom_energy = model(dense, 'a',
                                            return_atom_energy=True)
    e_n, f_n = model.normalize('a', dense, energy, forces)
    # E = sum_i r_Z + sigma_E * sum_i eps_i, F = sigma_F * f
    ref = heads.reference_energy(batch)
    torch.testing.assert_close(heads.reference_energy(dense), ref)
    torch.testing.assert_close(ref + heads.energy_scale * e_n, energy)
    torch.testing.assert_close(f_n * heads.force_scale, forces)
    expected = sum(float(heads.reference[z]) for z in molecules[0].z)
    assert abs(float(ref[0]) - expected) < 1e-9 * abs(expected)
    # labels normalise like predictions
    target_e, target_f = model.normalized_targets('a', batch)
    torch.testing.assert_close(target_e[:3], (batch.energy[:3] - ref[:3])
                               / heads.energy_scale)
    n = molecules[0].z.numel()
    torch.testing.assert_close(target_f[0, :n].double(),
                               molecules[0].forces.double()
                               / heads.force_scale)
    assert torch.isnan(target_e[3])  # geometry record without energy


def test_no_grad_conservative_outputs_detached(model, molecules):
    dense = dense_of(molecules[:2])
    with torch.no_grad():
        energy, forces = model(dense, 'b')
    assert not energy.requires_grad and not forces.requires_grad
    energy2, forces2 = model(dense, 'b')
    assert forces2.requires_grad  # create_graph under grad
    torch.testing.assert_close(forces2.detach(), forces)
    torch.testing.assert_close(energy2.detach(), energy)


def test_add_copy_remove_and_state_dict(model, molecules):
    torch.manual_seed(1)
    backbone = UniMol2.from_preset('tiny', lm_head=False)
    pre = EnergyForceModel(backbone, {'spice': 'direct', 'ani.1x': 'direct'})
    pre.dataset_heads('spice').set_statistics(EnergyForceStats(
        torch.arange(119, dtype=F64), 2.0, 3.0))
    pre.copy_dataset('spice', 'md17')
    copied, source = pre.dataset_heads('md17'), pre.dataset_heads('spice')
    assert copied is not source
    assert torch.equal(copied.force.q_proj.weight, source.force.q_proj.weight)
    assert float(copied.energy_scale) == 2.0
    fresh = pre.add_dataset('qm9', force='conservative')
    assert fresh.force is None and float(fresh.force_scale) == 1.0
    with pytest.raises(ValueError, match='already'):
        pre.add_dataset('qm9')
    pre.remove_dataset('ani.1x')
    assert pre.datasets == ['spice', 'md17', 'qm9']
    with pytest.raises(KeyError):
        pre.dataset_heads('ani.1x')
    # rebuild from config + force modes, then load the state dict
    again = EnergyForceModel(UniMol2(backbone.config), pre.force_modes)
    again.load_state_dict(pre.state_dict())
    assert torch.equal(again.dataset_heads('md17').reference,
                       torch.arange(119, dtype=F64))
    dense = dense_of(molecules[2:3]).to('cpu', torch.float32)
    pre.eval(), again.eval()
    for d in again.datasets:
        torch.testing.assert_close(again(dense, d)[1], pre(dense, d)[1])
    with pytest.raises(ValueError, match='force must be'):
        pre.add_dataset('x', force='magic')


def test_statistics_ignore_missing_labels(molecules):
    stats = fit_energy_force_stats(
        [d.z for d in molecules], [float(d.energy) for d in molecules],
        [d.forces for d in molecules])
    finite = torch.cat([d.forces for d in molecules]).double()
    finite = finite[torch.isfinite(finite)]
    assert np.isclose(stats.force_scale, float(finite.square().mean().sqrt()))
    assert stats.energy_scale > 0 and torch.isfinite(stats.reference).all()
