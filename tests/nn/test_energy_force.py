import pytest
import torch
from torch_geometric.data import Batch

from pyg_unimol2.data import from_smiles, to_dense
from pyg_unimol2.models import UniMol2
from pyg_unimol2.nn import (DirectForceHead, EnergyHead, PositionHead,
                            conservative_forces)
from pyg_unimol2.nn._utils import safe_norm

from conftest import read_moses


def random_rotation(seed: int, proper: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q


def offsets(pos: torch.Tensor) -> torch.Tensor:
    return pos.unsqueeze(1) - pos.unsqueeze(2)


def head_inputs(B=2, L=7, E=16, P=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, E, generator=g, dtype=torch.float64)
    pair = torch.randn(B, L + 1, L + 1, P, generator=g, dtype=torch.float64)
    pos = 2 * torch.randn(B, L, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 4:] = False
    pos[1, 4:] = 0.0
    return x, pair, pos, mask


def test_safe_norm():
    v = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1e-3, 0.0, -2.0]],
                     dtype=torch.float64, requires_grad=True)
    n = safe_norm(v)
    assert torch.equal(n.detach(), torch.stack([v[0].norm(), torch.zeros(
        (), dtype=torch.float64), v[2].norm()]).detach())
    n.sum().backward()
    assert torch.isfinite(v.grad).all()
    assert torch.equal(v.grad[1], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(v.grad[0], v[0].detach() / 5.0)


def test_energy_head():
    head = EnergyHead(16).double()
    assert str(head) == 'EnergyHead(16, hidden_dim=16)'
    x, _, _, mask = head_inputs()
    energy, atom_energy = head(x, mask)
    assert energy.shape == (2, ) and atom_energy.shape == (2, 7)
    assert torch.equal(atom_energy[1, 4:], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(energy, atom_energy.sum(dim=1))
    # padded rows do not matter
    x2 = x.clone()
    x2[1, 4:] = 100.0
    torch.testing.assert_close(head(x2, mask)[0], energy)


def test_direct_force_head_is_position_head_on_unit_vectors():
    torch.manual_seed(0)
    head = DirectForceHead(16, 8, 4).double().eval()
    assert str(head) == 'DirectForceHead(16, 8, heads=4)'
    ref = PositionHead(16, 8, 4).double().eval()
    ref.load_state_dict(head.state_dict())
    x, pair, pos, mask = head_inputs()
    delta = offsets(pos)
    norm = delta.norm(dim=-1, keepdim=True)
    unit = torch.where(norm > 0, delta / norm.clamp_min(1e-300), 0.0)
    forces = head(x, pair, delta, mask)
    assert forces.shape == (2, 7, 3)
    expected = ref(x, pair, unit, mask).masked_fill(~mask[..., None], 0.0)
    torch.testing.assert_close(forces, expected)
    assert torch.equal(forces[1, 4:], torch.zeros(3, 3, dtype=torch.float64))
    # unit vectors: scaling the geometry (fixed features) leaves F unchanged
    torch.testing.assert_close(head(x, pair, 3.0 * delta, mask), forces)


@pytest.mark.parametrize('proper', [True, False])
def test_direct_force_head_equivariant(proper):
    torch.manual_seed(1)
    head = DirectForceHead(16, 8, 4).double().eval()
    x, pair, pos, mask = head_inputs()
    R = random_rotation(3, proper)
    t = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    moved = (pos @ R.T + t) * mask[..., None]
    out = head(x, pair, offsets(moved), mask)
    torch.testing.assert_close(out, head(x, pair, offsets(pos), mask) @ R.T)


def test_direct_force_head_finite_gradients_at_zero_offsets():
    torch.manual_seed(2)
    head = DirectForceHead(16, 8, 4).double()
    x, pair, pos, mask = head_inputs()
    pos[0, 1] = pos[0, 0]  # two coincident atoms: a zero offset off i = j
    pos.requires_grad_()
    head(x, pair, offsets(pos), mask).square().sum().backward()
    assert torch.isfinite(pos.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_conservative_forces_analytic():
    pos = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    energy = (pos**2).sum(dim=(1, 2)) + pos[:, 0, 0]
    forces = conservative_forces(energy, pos, create_graph=False)
    expected = -2 * pos.detach()
    expected[:, 0, 0] -= 1.0
    torch.testing.assert_close(forces, expected)
    assert not forces.requires_grad
    forces = conservative_forces((pos**3).sum(dim=(1, 2)), pos)
    assert forces.requires_grad  # create_graph: a force loss trains
    with pytest.raises(ValueError, match='does not depend'):
        conservative_forces(torch.ones(2), pos)


def test_backbone_differentiable_wrt_pos_without_changing_values():
    """Distances carry gradient to pos (no NaN from i = i or padding), the
    forward values are those of the detached computation, and the position
    head still sees detached offsets."""
    data = [from_smiles(s, remove_hs=False) for s in read_moses(2)]
    dense = to_dense(Batch.from_data_list(data))
    assert not bool(dense.atom_mask.all())  # padding present
    torch.manual_seed(0)
    model = UniMol2.from_preset('tiny', lm_head=False).eval()
    ref = model(dense)  # grad enabled as below: same kernels
    pos = dense.pos.clone().requires_grad_()
    dense.pos = pos
    out = model(dense)
    assert torch.equal(out.cls, ref.cls) and torch.equal(out.pair, ref.pair)
    assert torch.equal(out.pos_pred, ref.pos_pred)
    grad, = torch.autograd.grad(out.atoms[out.atom_mask].sum(), pos,
                                retain_graph=True)
    assert torch.isfinite(grad).all() and grad[dense.atom_mask].abs().max() > 0
    assert torch.equal(grad[~dense.atom_mask],
                       torch.zeros_like(grad[~dense.atom_mask]))
    # pos_pred = pos + head(..., detached offsets): d/dpos only via the pairs
    disp = out.pos_pred - pos
    g_disp, = torch.autograd.grad(disp.sum(), pos)
    assert torch.isfinite(g_disp).all()


@pytest.mark.parametrize('chunk_size', [None, 8])
def test_backbone_second_derivative_finite(chunk_size):
    """A force loss on -dE/dpos (double backward through the kernel, with
    the packed and the chunked dense pair track) has finite gradients."""
    data = [from_smiles(s, remove_hs=False) for s in read_moses(2)]
    dense = to_dense(Batch.from_data_list(data))
    torch.manual_seed(0)
    model = UniMol2.from_preset('tiny', lm_head=False, chunk_size=chunk_size)
    pos = dense.pos.clone().requires_grad_()
    dense.pos = pos
    out = model(dense, compute_pos=False)
    energy = out.atoms[out.atom_mask].square().sum()
    forces = conservative_forces(energy.view(1), pos)
    forces.square().sum().backward()
    assert torch.isfinite(pos.grad).all()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    kernel = model.se3_invariant_kernel.out_proj.layer1
    assert kernel.weight.grad.abs().max() > 0
