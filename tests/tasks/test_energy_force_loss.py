"""Energy/force loss (missing labels contribute nothing) and the label
statistics (reference energies, scales), on the compositions of real
MOSES molecules with all hydrogens."""
import pytest
import torch
from rdkit import Chem
from torch.nn import functional as F

from conftest import read_moses
from pyg_unimol2.tasks import (NUM_ELEMENTS, element_counts, energy_force_loss,
                               fit_energy_force_stats, fit_reference_energies)

F64 = torch.float64


@pytest.fixture(scope='module')
def compositions():
    """Atomic numbers (hydrogens included) of 60 MOSES molecules."""
    return [torch.tensor([a.GetAtomicNum() for a in
                          Chem.AddHs(Chem.MolFromSmiles(s)).GetAtoms()])
            for s in read_moses(60)]


@pytest.fixture(scope='module')
def batch(compositions):
    """Predictions and labels shaped like a padded batch of 5 molecules."""
    sizes = [z.numel() for z in compositions[:5]]
    B, L = len(sizes), max(sizes)
    mask = torch.arange(L)[None] < torch.tensor(sizes)[:, None]
    g = torch.Generator().manual_seed(0)
    pred_e = torch.randn(B, generator=g, dtype=F64)
    true_e = torch.randn(B, generator=g, dtype=F64)
    pred_f = torch.randn(B, L, 3, generator=g, dtype=F64) * mask[..., None]
    true_f = torch.randn(B, L, 3, generator=g, dtype=F64)
    true_f[~mask] = float('nan')
    return pred_e, pred_f, true_e, true_f, mask


def test_l2_and_mae_by_hand(batch):
    pred_e, pred_f, true_e, true_f, mask = batch
    terms = energy_force_loss(pred_e, pred_f, true_e, true_f, mask)
    errors = [(pred_f[b, i] - true_f[b, i]).norm()
              for b in range(mask.size(0)) for i in range(mask.size(1))
              if mask[b, i]]
    torch.testing.assert_close(terms['forces'], torch.stack(errors).mean())
    torch.testing.assert_close(terms['energy'], (pred_e - true_e).abs().mean())
    torch.testing.assert_close(terms['loss'],
                               terms['energy'] + terms['forces'])
    assert int(terms['num_atoms']) == int(mask.sum())
    mae = energy_force_loss(pred_e, pred_f, true_e, true_f, mask,
                            force_loss='mae')
    torch.testing.assert_close(mae['forces'],
                               (pred_f[mask] - true_f[mask]).abs().mean())
    for name, fn in [('mse', F.mse_loss), ('smooth_l1', F.smooth_l1_loss)]:
        out = energy_force_loss(pred_e, pred_f, true_e, true_f, mask,
                                energy_loss=name)
        torch.testing.assert_close(out['energy'], fn(pred_e, true_e))


def test_weights_scale_terms(batch):
    base = energy_force_loss(*batch)
    out = energy_force_loss(*batch, energy_weight=0.25, force_weight=4.0)
    torch.testing.assert_close(out['energy'], base['energy'])
    torch.testing.assert_close(out['loss'],
                               0.25 * base['energy'] + 4.0 * base['forces'])
    only_f = energy_force_loss(*batch, energy_weight=0.0)
    torch.testing.assert_close(only_f['loss'], base['forces'])


def test_missing_labels_contribute_nothing(batch):
    pred_e, pred_f, true_e, true_f, mask = batch
    true_e, true_f = true_e.clone(), true_f.clone()
    true_e[[1, 3]] = float('nan')
    true_f[0, :4] = float('nan')     # atoms without force labels
    true_f[2, 5, 1] = float('nan')   # one missing component drops the atom
    keep_atoms = mask.clone()
    keep_atoms[0, :4] = False
    keep_atoms[2, 5] = False
    keep_mol = torch.tensor([True, False, True, False, True])
    pe = pred_e.clone().requires_grad_()
    pf = pred_f.clone().requires_grad_()
    terms = energy_force_loss(pe, pf, true_e, true_f, mask)
    torch.testing.assert_close(
        terms['energy'], (pred_e[keep_mol] - true_e[keep_mol]).abs().mean())
    torch.testing.assert_close(
        terms['forces'],
        (pred_f[keep_atoms] - true_f[keep_atoms]).norm(dim=-1).mean())
    assert int(terms['num_energies']) == 3
    assert int(terms['num_atoms']) == int(keep_atoms.sum())
    terms['loss'].backward()
    assert torch.isfinite(pe.grad).all() and torch.isfinite(pf.grad).all()
    assert torch.equal(pe.grad[~keep_mol], torch.zeros(2, dtype=F64))
    assert pf.grad[~keep_atoms].abs().max() == 0
    # no label at all: zero loss, zero gradient
    pe.grad = pf.grad = None
    none = energy_force_loss(pe, pf, torch.full_like(true_e, float('nan')),
                             torch.full_like(true_f, float('nan')), mask)
    assert float(none['loss'].detach()) == 0.0
    none['loss'].backward()
    assert pe.grad.abs().max() == 0 and pf.grad.abs().max() == 0


def test_mask_and_zero_error(batch):
    pred_e, pred_f, true_e, true_f, mask = batch
    # finite labels at padding are ignored when the mask is given
    filled = torch.nan_to_num(true_f, nan=5.0)
    torch.testing.assert_close(
        energy_force_loss(pred_e, pred_f, true_e, filled, mask)['forces'],
        energy_force_loss(pred_e, pred_f, true_e, true_f, mask)['forces'])
    # an exact force prediction: l2 has a finite (zero) gradient there
    pf = torch.nan_to_num(true_f).clone().requires_grad_()
    energy_force_loss(pred_e, pf, true_e, true_f, mask)['loss'].backward()
    assert torch.equal(pf.grad, torch.zeros_like(pf))
    with pytest.raises(ValueError, match='force_loss'):
        energy_force_loss(*batch, force_loss='huber')
    with pytest.raises(ValueError, match='energy_loss'):
        energy_force_loss(*batch, energy_loss='l3')


def true_reference(compositions):
    ref = torch.zeros(NUM_ELEMENTS, dtype=F64)
    present = torch.unique(torch.cat(compositions))
    ref[present] = -13.6 * present.double()**2.1 - 0.37 * present.double()
    return ref, present


def test_fit_reference_energies_exact(compositions):
    ref, present = true_reference(compositions)
    counts = element_counts(compositions)
    assert counts.shape == (60, NUM_ELEMENTS)
    assert torch.equal(counts.sum(dim=1),
                       torch.tensor([float(z.numel()) for z in compositions],
                                    dtype=F64))
    energies = counts @ ref
    for z in (compositions, counts):
        fitted = fit_reference_energies(z, energies)
        torch.testing.assert_close(fitted[present], ref[present], rtol=1e-8,
                                   atol=1e-8)
        assert torch.equal(fitted[~torch.isin(torch.arange(NUM_ELEMENTS),
                                              present)],
                           torch.zeros(NUM_ELEMENTS - present.numel(),
                                       dtype=F64))
    # unknown energies are left out
    noisy = energies.clone()
    noisy[[2, 7]] = float('nan')
    torch.testing.assert_close(fit_reference_energies(compositions,
                                                      noisy)[present],
                               ref[present], rtol=1e-8, atol=1e-8)
    # molecules with the same atoms (trajectory frames) as rows of [N, n]
    frames = compositions[0].repeat(5, 1)
    assert frames.size(1) != NUM_ELEMENTS
    torch.testing.assert_close(element_counts(frames), counts[[0] * 5])
    torch.testing.assert_close(
        fit_reference_energies(frames, counts[[0] * 5] @ ref) @ counts[0],
        counts[0] @ ref)
    # many molecules: accumulated over chunks
    many = counts.repeat(700, 1)
    torch.testing.assert_close(fit_reference_energies(many, many @ ref),
                               fitted, rtol=1e-8, atol=1e-8)
    # ridge: a small bias; a fixed-ratio pair of elements stays solvable
    ridged = fit_reference_energies(compositions, energies, ridge=1e-9)
    torch.testing.assert_close(ridged, fitted, rtol=1e-8, atol=1e-4)
    water = [torch.tensor([8, 1, 1])] * 4
    fitted = fit_reference_energies(water, torch.full((4, ), -30.0))
    torch.testing.assert_close(fitted[[1, 8]] @ torch.tensor([2.0, 1.0],
                                                              dtype=F64),
                               torch.tensor(-30.0, dtype=F64))
    with pytest.raises(ValueError, match='atomic numbers'):
        element_counts([torch.tensor([1, 0])])
    with pytest.raises(ValueError, match='energies'):
        fit_reference_energies(compositions, energies[:-1])


def test_energy_and_force_scales(compositions):
    ref, present = true_reference(compositions)
    counts = element_counts(compositions)
    g = torch.Generator().manual_seed(1)
    energies = counts @ ref + 0.5 * torch.randn(60, generator=g, dtype=F64)
    forces = [torch.randn(z.numel(), 3, generator=g) * 2.0
              for z in compositions]
    forces[0][:2] = float('nan')
    stats = fit_energy_force_stats(compositions, energies, forces)
    residual = energies - counts @ stats.reference
    assert stats.energy_scale == pytest.approx(
        float(residual.square().mean().sqrt()), rel=1e-10)
    assert 0.2 < stats.energy_scale < 1.0  # the noise, not the ~1e4 eV
    finite = torch.cat(forces).double()
    finite = finite[torch.isfinite(finite)]
    assert stats.force_scale == pytest.approx(
        float(finite.square().mean().sqrt()), rel=1e-10)
    # no force labels at all: unit scale
    assert fit_energy_force_stats(compositions, energies).force_scale == 1.0
