"""crop_atoms: the random crop of unimol_tools' Uni-Mol2 inputs, seeded."""
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from torch_geometric.data import Batch

from conftest import check_dense_contract
from pyg_unimol2.data import from_mol, from_smiles, to_dense
from pyg_unimol2.data.crop import crop_atoms, crop_indices

#: 27 heavy atoms, a ring system and a salt (pairs in different fragments).
SMILES = 'CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)Nc1ccc2ccccc2c1.[Na+].[Cl-]'

REFERENCE_PYTHON = os.environ.get('UNIMOL2_REFERENCE_PYTHON')


@pytest.fixture(scope='module')
def data():
    return from_smiles(SMILES, seed=0)


def test_crop_keeps_a_seeded_subset_with_the_whole_molecule_codes(data):
    n, m = data.num_nodes, 10
    assert n == 27
    out = crop_atoms(data, m, seed=3)
    keep = crop_indices(n, m, 3, SMILES)
    assert len(keep) == m and list(keep) == sorted(set(keep.tolist()))
    check_dense_contract(out, m)
    for key in ('z', 'x', 'atom_feat', 'degree', 'pos'):
        assert torch.equal(out[key], data[key][keep]), key
    for key, width in (('spd', ()), ('pair_feat', (3, )),
                       ('pair_type', (2, ))):
        full = data[key].view(n, n, *width)
        assert torch.equal(out[key].view(m, m, *width),
                           full[keep][:, keep]), key
    # Bonds between kept atoms (one hop: code 2), renumbered.
    bonded = out.spd.view(m, m) == 2
    edges = set(map(tuple, out.edge_index.t().tolist()))
    assert edges == {(i, j) for i in range(m) for j in range(m)
                     if bonded[i, j]}
    assert torch.equal(crop_atoms(data, m, seed=3).pos, out.pos)
    assert not torch.equal(crop_atoms(data, m, seed=4).pos, out.pos)
    assert crop_atoms(data, n) is data  # nothing to crop
    with pytest.raises(ValueError, match='at least 1'):
        crop_atoms(data, 0)


def test_crop_is_a_function_of_the_molecule_not_its_position(data):
    other = from_smiles('C' * 27, seed=0)  # also 27 atoms
    a = crop_indices(27, 10, 0, data.smiles)
    assert np.array_equal(a, crop_indices(27, 10, 0, data.smiles))
    assert not np.array_equal(a, crop_indices(27, 10, 0, other.smiles))
    # Conformers of one molecule keep the same atoms.
    conf = from_smiles(SMILES, seed=5)
    assert torch.equal(crop_atoms(conf, 10).z, crop_atoms(data, 10).z)
    assert torch.equal(crop_atoms(conf, 10).spd, crop_atoms(data, 10).spd)
    batch = Batch.from_data_list([crop_atoms(data, 10), other])
    assert to_dense(batch).token.shape == (2, 27)


REFERENCE = '''
import pickle, sys
import numpy as np
from rdkit import Chem
from unimol_tools.data.conformer import mol2unimolv2
request = pickle.load(open(sys.argv[1], 'rb'))
mol = Chem.Mol(request['mol'])
out = []
for seed in request['seeds']:
    np.random.seed(seed)
    feat = mol2unimolv2(Chem.Mol(mol), max_atoms=request['max_atoms'])
    out.append({k: np.asarray(v) for k, v in feat.items()})
pickle.dump(out, open(sys.argv[2], 'wb'))
'''


@pytest.mark.slow  # importing unimol_tools takes a minute on 2 cores
@pytest.mark.skipif(not REFERENCE_PYTHON, reason='UNIMOL2_REFERENCE_PYTHON '
                    '(the interpreter of .venv-ref with unimol_tools) is '
                    'not set; `make test` sets it')
def test_crop_equals_unimol_tools_for_the_same_atoms(tmp_path):
    """unimol_tools' crop (NumPy's global generator) keeps some subset;
    cropping ours to that subset gives its features exactly."""
    mol = Chem.AddHs(Chem.MolFromSmiles(SMILES))
    assert AllChem.EmbedMolecule(mol, randomSeed=1) == 0
    AllChem.MMFFOptimizeMolecule(mol)
    request, result = tmp_path / 'request.pkl', tmp_path / 'out.pkl'
    request.write_bytes(pickle.dumps({'mol': mol.ToBinary(),
                                      'seeds': [0, 1, 2], 'max_atoms': 10}))
    subprocess.run([os.path.abspath(REFERENCE_PYTHON), '-c', REFERENCE,
                    str(request), str(result)], check=True, cwd=tmp_path,
                   capture_output=True)
    full = from_mol(mol)  # hydrogens removed, as unimol_tools first does
    subsets = set()
    for feat in pickle.loads(result.read_bytes()):
        assert len(feat['src_tokens']) == 10
        keep = [int(np.flatnonzero((full.pos.numpy() == p).all(1)
                                   & (full.z.numpy() == z))[0])
                for p, z in zip(feat['src_coord'], feat['src_tokens'])]
        assert keep == sorted(keep)  # the original order
        subsets.add(tuple(keep))
        out = crop_atoms(full, 10, keep=keep)
        spd = feat['shortest_path'].copy()
        spd[spd == 511] = 510  # the one documented code difference
        np.testing.assert_array_equal(out.z.numpy(), feat['src_tokens'])
        np.testing.assert_array_equal(out.atom_feat.numpy(),
                                      feat['atom_feat'])
        np.testing.assert_array_equal(out.degree.numpy(), feat['degree'])
        np.testing.assert_array_equal(out.spd.view(10, 10).numpy(), spd)
        np.testing.assert_array_equal(out.pair_feat.view(10, 10, 3).numpy(),
                                      feat['edge_feat'])
        np.testing.assert_array_equal(out.pair_type.view(10, 10, 2).numpy(),
                                      feat['pair_type'])
    assert len(subsets) == 3  # random subsets, not a prefix
