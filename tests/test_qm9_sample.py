"""Acceptance checks on a 1,000-molecule QM9 sample with DFT geometries:
dense shortest-path matrices equal RDKit's topological distances, and the
model is invariant to rigid motions and to the order of atoms."""
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from pyg_unimol2.data import to_dense
from pyg_unimol2.datasets import QM9
from pyg_unimol2.models import UniMol2


@pytest.fixture(scope='module')
def qm9_sample(tmp_path_factory):
    root = tmp_path_factory.mktemp('qm9')
    return QM9(str(root), subset=1000, subset_seed=0, workers=2,
               progress=False)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return UniMol2.from_preset('tiny').eval()


def graph_of(data: Data) -> Chem.Mol:
    """RDKit molecule with the atoms and (single) bonds stored in ``data``."""
    mol = Chem.RWMol()
    for z in data.z.tolist():
        mol.AddAtom(Chem.Atom(z))
    for i, j in data.edge_index.t().tolist():
        if i < j:
            mol.AddBond(i, j, Chem.BondType.SINGLE)
    return mol.GetMol()


def skeleton_smiles(mol: Chem.Mol) -> str:
    """Canonical SMILES of the heavy-atom connectivity (bond orders,
    charges, aromaticity and hydrogens ignored)."""
    rw = Chem.RWMol(Chem.RemoveHs(mol, sanitize=False))
    for atom in rw.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetIsAromatic(False)
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(0)
    for bond in rw.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    return Chem.MolToSmiles(rw.GetMol(), canonical=True)


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator,
                                       dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


def permuted(data: Data, perm: torch.Tensor) -> Data:
    """The same molecule with atom ``perm[k]`` moved to position ``k``."""
    n = data.num_nodes
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    out = data.clone()
    for key in ('z', 'x', 'atom_feat', 'degree', 'pos'):
        out[key] = data[key][perm]
    for key in ('spd', 'pair_feat', 'pair_type'):
        value = data[key].view(n, n, *data[key].shape[1:])
        out[key] = value[perm][:, perm].reshape(n * n, *data[key].shape[1:])
    out.edge_index = inv[data.edge_index]
    return out


def test_sample_is_the_requested_size(qm9_sample):
    assert len(qm9_sample) == 1000
    assert len({int(d.idx) for d in qm9_sample}) == 1000


def test_dense_spd_equals_rdkit_topological_distance(qm9_sample):
    checked = 0
    for batch in DataLoader(qm9_sample, batch_size=128):
        dense = to_dense(batch)
        for b, data in enumerate(batch.to_data_list()):
            if not bool(data.has_graph):
                continue
            n = data.num_nodes
            graph = graph_of(data)
            # The stored graph is the molecule of the SMILES ...
            assert skeleton_smiles(graph) == skeleton_smiles(
                Chem.MolFromSmiles(data.smiles)), data.smiles
            # ... and its dense SPD codes are RDKit's distances + 1.
            expected = torch.from_numpy(Chem.GetDistanceMatrix(graph)).long()
            assert torch.equal(dense.spd[b, :n, :n], expected + 1), data.smiles
            assert dense.spd[b, n:].eq(0).all() and dense.spd[b, :, n:].eq(0).all()
            checked += 1
    assert checked >= 990  # a few QM9 graphs cannot be matched to geometry


@torch.no_grad()
def test_invariant_to_rotation_and_translation(qm9_sample, model):
    generator = torch.Generator().manual_seed(0)
    for batch in DataLoader(qm9_sample, batch_size=200):
        dense = to_dense(batch)
        moved, motions = [], []
        for data in batch.to_data_list():
            data = data.clone()
            rot = random_rotation(generator)
            shift = 10 * torch.randn(1, 3, generator=generator)
            data.pos = data.pos @ rot.T + shift
            moved.append(data)
            motions.append((rot, shift))
        out = model(dense)
        out_moved = model(Batch.from_data_list(moved))
        mask = dense.atom_mask
        torch.testing.assert_close(out_moved.cls, out.cls, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out_moved.atoms[mask], out.atoms[mask],
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out_moved.pair, out.pair, atol=1e-4,
                                   rtol=1e-4)
        for b, (rot, shift) in enumerate(motions):  # positions are equivariant
            n = int(mask[b].sum())
            torch.testing.assert_close(out_moved.pos_pred[b, :n],
                                       out.pos_pred[b, :n] @ rot.T + shift,
                                       atol=1e-3, rtol=1e-4)


@torch.no_grad()
def test_invariant_to_atom_order(qm9_sample, model):
    generator = torch.Generator().manual_seed(1)
    for batch in DataLoader(qm9_sample, batch_size=200):
        originals = batch.to_data_list()
        perms = [torch.randperm(d.num_nodes, generator=generator)
                 for d in originals]
        out = model(batch)
        out_perm = model(Batch.from_data_list(
            [permuted(d, p) for d, p in zip(originals, perms)]))
        torch.testing.assert_close(out_perm.cls, out.cls, atol=1e-4,
                                   rtol=1e-4)
        for b, perm in enumerate(perms):
            n = perm.numel()
            torch.testing.assert_close(out_perm.atoms[b, :n],
                                       out.atoms[b, perm], atol=1e-4,
                                       rtol=1e-4)
            tokens = torch.cat([torch.zeros(1, dtype=torch.long), perm + 1])
            torch.testing.assert_close(
                out_perm.pair[b, :n + 1, :n + 1],
                out.pair[b][tokens][:, tokens], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out_perm.pos_pred[b, :n],
                                       out.pos_pred[b, perm], atol=1e-4,
                                       rtol=1e-4)
