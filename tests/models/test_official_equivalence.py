"""Equivalence with the official implementation, unimol_tools 0.1.6.

unimol_tools pins numpy<2.3, so it lives in its own virtualenv
(``.venv-ref``, ``make reference``); ``make test`` passes its interpreter in
``UNIMOL2_REFERENCE_PYTHON``. The official side runs in a subprocess
(``tests/reference/unimol_tools_outputs.py``): it builds a random official
model, writes its weights, and runs every molecule alone (batch of one). We
load those weights with :meth:`UniMol2.from_official`, featurize the same
RDKit conformers with :func:`from_mol`, run the molecules in shuffled
batches of mixed sizes, and compare each molecule's outputs with its
official batch-of-one outputs.
"""
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from torch_geometric.data import Batch

from conftest import COMPAS_CSV, read_moses
from pyg_unimol2.data import from_mol, to_dense
from pyg_unimol2.datasets.qm9 import read_qm9pack
from pyg_unimol2.models import (UNIMOL_TOOLS_HEAD, PRESETS, UniMol2,
                                load_official, to_official_state_dict)
from pyg_unimol2.data.xyz import mol_from_xyz
from pyg_unimol2.nn.heads import ClassificationHead

REFERENCE_PYTHON = os.environ.get('UNIMOL2_REFERENCE_PYTHON')
if REFERENCE_PYTHON:  # it runs in a temporary working directory
    REFERENCE_PYTHON = os.path.abspath(REFERENCE_PYTHON)
RUNNER = Path(__file__).parents[1] / 'reference' / 'unimol_tools_outputs.py'
pytestmark = pytest.mark.skipif(
    not REFERENCE_PYTHON, reason='UNIMOL2_REFERENCE_PYTHON (the interpreter '
    'of .venv-ref with unimol_tools) is not set; `make test` sets it')

RTOL = 1e-5  # max |ours - official| / max |official|, per tensor

#: Molecules chosen for what they exercise; MOSES, QM9 and COMPAS-1D
#: molecules are added by the fixture.
SPECIAL_SMILES = [
    'C[N+](C)(C)CC(=O)[O-]',  # zwitterion
    'C[n+]1ccccc1',  # aromatic cation
    '[O-][n+]1ccccc1',  # N-oxide
    'NC(=[NH2+])c1ccccc1',  # amidinium
    'c1ccc2[nH]ccc2c1',  # indole
    'Nc1nccs1',  # aminothiazole
    'c1ncncn1',  # triazine
    'O=c1[nH]cnc2[nH]cnc12',  # hypoxanthine
    'C[C@@H](N)C(=O)O',  # L-alanine
    'C[C@H]1CC[C@@H](O)CC1',  # cis/trans ring stereo
    'OC(=O)/C=C/C(=O)O',  # fumaric acid (E)
    'F/C=C\\F',  # (Z)
    'CC(=O)[O-].[Na+]',  # salt with a single-atom ion
    'Cl.OC(=O)c1ccccc1',  # hydrochloride
    '[NH4+].[NH4+].[O-]S(=O)(=O)[O-]',  # three fragments
    'C[NH3+].C[NH3+].O=C([O-])C(=O)[O-]',
]

LARGEST_COMPAS = ('c1ccc2cc3c(cc2c1)c1ccccc1c1c2ccc4ccc5ccccc5c4c2c2cc4ccccc4'
                  'cc2c31')


def embed(smiles: str, seed: int) -> Chem.Mol:
    """RDKit ETKDGv3 + MMFF conformer, independent of our featurizer."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    # Strained polycycles (helicenes) need random starting coordinates and
    # no torsion preferences.
    for option in ('useRandomCoords', 'useBasicKnowledge'):
        if AllChem.EmbedMolecule(mol, params) == 0:
            break
        setattr(params, option, option == 'useRandomCoords')
    else:
        assert AllChem.EmbedMolecule(mol, params) == 0, smiles
    AllChem.MMFFOptimizeMolecule(mol)
    return mol


def heavy_atoms(smiles: str) -> int:
    return Chem.MolFromSmiles(smiles).GetNumHeavyAtoms()


@pytest.fixture(scope='module')
def mols():
    moses = read_moses(2000)
    largest_moses = max(moses, key=heavy_atoms)
    compas = [line.split(',')[1] for line in
              COMPAS_CSV.read_text().splitlines()[1:]]
    # A largest COMPAS-1D molecule (42 heavy atoms) that embeds directly
    # (some helicenes of that size take minutes).
    largest_compas = LARGEST_COMPAS
    assert largest_compas in compas
    assert heavy_atoms(largest_compas) == max(map(heavy_atoms, compas))
    smiles = (SPECIAL_SMILES + moses[:18] + [largest_moses] + compas[:300:50]
              + [largest_compas])
    out = [embed(s, seed=k) for k, s in enumerate(smiles)]
    qm9 = read_qm9pack(limit=3000)[::300]  # DFT geometries
    out += [mol_from_xyz(r.z, r.pos, smiles=r.smiles) for r in qm9]
    return out


def run_official(tmp_path: Path, mols, arch, init: str, output_dim: int,
                 dense_head: bool = False):
    request = tmp_path / 'request.pkl'
    state = tmp_path / 'official.pt'
    out = tmp_path / 'outputs.pkl'
    with open(request, 'wb') as f:
        pickle.dump({'mols': [m.ToBinary() for m in mols], 'arch': arch,
                     'init': init, 'seed': 0, 'output_dim': output_dim,
                     'dense_head': dense_head, 'state_path': str(state)}, f)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    # unimol_tools writes logs/ into the working directory: keep it in tmp.
    subprocess.run([REFERENCE_PYTHON, str(RUNNER), str(request), str(out)],
                   check=True, env=env, capture_output=True, cwd=tmp_path)
    with open(out, 'rb') as f:
        return state, pickle.load(f)


def ours_per_molecule(model: UniMol2, data, batch_size: int = 8):
    """Our outputs, molecule by molecule, from shuffled mixed batches."""
    order = list(range(len(data)))
    random.Random(0).shuffle(order)
    head = model.classification_heads[UNIMOL_TOOLS_HEAD]
    outputs = [None] * len(data)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out = model(to_dense(Batch.from_data_list([data[i]
                                                       for i in idx])))
            logits = head(out.cls)
            for k, i in enumerate(idx):
                n = data[i].num_nodes
                outputs[i] = {
                    'cls': out.cls[k], 'atoms': out.atoms[k, :n],
                    'pair': out.pair[k, :n + 1, :n + 1],
                    'pos_pred': out.pos_pred[k, :n], 'logits': logits[k]}
    return outputs


def max_relative_error(ours: torch.Tensor, official: np.ndarray) -> float:
    official = torch.from_numpy(official)
    return float((ours - official).abs().max() / official.abs().max())


def head_scale(model: UniMol2, cls: torch.Tensor) -> float:
    head = model.classification_heads[UNIMOL_TOOLS_HEAD]
    x = torch.tanh(head.dense(cls)) if isinstance(head,
                                                  ClassificationHead) else cls
    terms = head.out_proj.weight.abs() @ x.abs() + head.out_proj.bias.abs()
    return float(terms.max())


def assert_equivalent(tmp_path, mols, arch, init, output_dim,
                      dense_head=False):
    state, official = run_official(tmp_path, mols, arch, init, output_dim,
                                   dense_head)
    model, report = load_official(state)
    assert report.layout == 'unimol_tools' and not report.ignored
    assert report.heads == [UNIMOL_TOOLS_HEAD]
    model.eval()
    data = [from_mol(m) for m in mols]
    ours = ours_per_molecule(model, data)
    worst = {}  # output -> (max relative error, molecule)
    for d, o, ref in zip(data, ours, official):
        assert d.num_nodes == len(ref['atoms'])
        for key in ('cls', 'atoms', 'pair', 'pos_pred', 'logits'):
            err = max_relative_error(o[key], ref[key])
            if key == 'logits':
                # A few outputs that are sums with cancellation: relative to
                # the magnitude of their terms, sum_j |W_ij x_j| + |b_i|
                # (the scale of a dot product's rounding error).
                err *= float(np.abs(ref[key]).max()) / head_scale(
                    model, torch.from_numpy(ref['cls']))
            worst[key] = max(worst.get(key, (0.0, '')), (err, d.smiles))
    assert all(err <= RTOL for err, _ in worst.values()), '; '.join(
        f'{k}: {e:.2e} ({s})' for k, (e, s) in worst.items())
    return worst


@pytest.fixture(scope='module')
def official_features(mols, tmp_path_factory):
    tiny = {'num_encoder_layers': 1, 'encoder_embed_dim': 32,
            'num_attention_heads': 2, 'encoder_attention_heads': 2,
            'ffn_embedding_dim': 32, 'pair_embed_dim': 16,
            'pair_hidden_dim': 4}
    _, official = run_official(tmp_path_factory.mktemp('features'), mols,
                               tiny, 'default', 1)
    return [ref['features'] for ref in official]


def test_sample_covers_required_chemistry(mols):
    assert len(mols) >= 50
    smiles = [Chem.MolToSmiles(Chem.RemoveHs(m)) for m in mols]
    assert any('+' in s or '-' in s for s in smiles)  # charged
    assert sum('.' in s for s in smiles) >= 4  # salts / fragments
    assert any('@' in s for s in smiles) and any('/' in s for s in smiles)
    assert any(m.GetNumHeavyAtoms() >= 40 for m in mols)  # large


def test_features_equal_unimol_tools(mols, official_features):
    unreachable = 0
    for mol, feat in zip(mols, official_features):
        d = from_mol(mol)
        n = d.num_nodes
        spd = feat['shortest_path'].copy()
        # The one documented difference: pairs in different fragments are
        # 511 in unimol_tools and 510 in the official training code (ours).
        unreachable += int((spd == 511).sum())
        spd[spd == 511] = 510
        np.testing.assert_array_equal(d.z.numpy(), feat['src_tokens'])
        np.testing.assert_array_equal(d.pos.numpy(), feat['src_coord'])
        np.testing.assert_array_equal(d.atom_feat.numpy(), feat['atom_feat'])
        np.testing.assert_array_equal(d.degree.numpy(), feat['degree'])
        np.testing.assert_array_equal(d.pair_feat.view(n, n, 3).numpy(),
                                      feat['edge_feat'])
        np.testing.assert_array_equal(d.spd.view(n, n).numpy(), spd)
        np.testing.assert_array_equal(d.pair_type.view(n, n, 2).numpy(),
                                      feat['pair_type'])
    assert unreachable > 0  # the salts exercise it


def test_equivalent_84M(mols, tmp_path):
    # The real 84M architecture. unimol_tools' own initialisation zeroes
    # the last layer of every residual branch (the atom track would pass
    # the embeddings through unchanged), so every tensor is redrawn.
    worst = assert_equivalent(tmp_path, mols, '84m', 'scrambled', 3)
    print('84M max relative error:', worst)


def test_equivalent_small_scrambled(mols, tmp_path):
    # A small configuration with every tensor redrawn at unit scale, so that
    # no path (Gaussian kernel, CLS pair row, biases) is near zero, and the
    # dense + tanh fine-tuning head.
    arch = {'num_encoder_layers': 3, 'encoder_embed_dim': 64,
            'num_attention_heads': 4, 'encoder_attention_heads': 4,
            'ffn_embedding_dim': 128, 'pair_embed_dim': 32,
            'pair_hidden_dim': 8}
    worst = assert_equivalent(tmp_path, mols, arch, 'scrambled', 2,
                              dense_head=True)
    print('small scrambled max relative error:', worst)


def test_outputs_independent_of_batch(mols):
    torch.manual_seed(0)
    model = UniMol2.from_preset('small').eval()
    data = [from_mol(m) for m in mols]
    small = min(range(len(data)), key=lambda i: data[i].num_nodes)
    larger = sorted(range(len(data)), key=lambda i: -data[i].num_nodes)[:5]
    with torch.no_grad():
        alone = model(to_dense(Batch.from_data_list([data[small]])))
        batch = model(to_dense(Batch.from_data_list(
            [data[i] for i in larger] + [data[small]])))
    n = data[small].num_nodes
    assert batch.atoms.shape[1] > 3 * n  # really padded
    torch.testing.assert_close(batch.cls[-1], alone.cls[0], rtol=1e-6,
                               atol=1e-6)
    torch.testing.assert_close(batch.atoms[-1, :n], alone.atoms[0],
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(batch.pair[-1, :n + 1, :n + 1], alone.pair[0],
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(batch.pos_pred[-1, :n], alone.pos_pred[0],
                               rtol=1e-6, atol=1e-6)


#: lm_head of the official training code (facts sheet B.2), absent from
#: unimol_tools, which has ``classification_head`` instead.
def lm_head_shapes(embed_dim: int) -> dict:
    return {'lm_head.weight': (128, embed_dim), 'lm_head.bias': (128, ),
            'lm_head.dense.weight': (embed_dim, embed_dim),
            'lm_head.dense.bias': (embed_dim, ),
            'lm_head.layer_norm.weight': (embed_dim, ),
            'lm_head.layer_norm.bias': (embed_dim, )}


@pytest.fixture(scope='module')
def official_shapes(tmp_path_factory):
    path = tmp_path_factory.mktemp('shapes')
    with open(path / 'request.pkl', 'wb') as f:
        # 42M exists only in the paper: the 84M architecture with 6 layers.
        pickle.dump({'shapes_for': {
            '42M': {'num_encoder_layers': 6}, '84M': '84m', '164M': '164m',
            '310M': '310m', '570M': '570m', '1.1B': '1.1B'}}, f)
    subprocess.run([REFERENCE_PYTHON, str(RUNNER), str(path / 'request.pkl'),
                    str(path / 'shapes.pkl')], check=True,
                   capture_output=True, cwd=path)
    with open(path / 'shapes.pkl', 'rb') as f:
        return pickle.load(f)


@pytest.mark.parametrize('preset', ['42M', '84M', '164M', '310M', '570M',
                                    '1.1B'])
@pytest.mark.parametrize('layout', ['unimol_tools', 'unicore'])
def test_every_preset_loads_strictly(official_shapes, preset, layout):
    shapes = dict(official_shapes[preset])
    if layout == 'unicore':  # pretraining checkpoint: lm_head, no UT head
        shapes = {k: v for k, v in shapes.items()
                  if not k.startswith('classification_head.')}
        shapes.update(lm_head_shapes(PRESETS[preset].embed_dim))
    state = {k: torch.empty(v, device='meta') for k, v in shapes.items()}
    with torch.device('meta'):
        model, report = load_official({'model': state})  # strict
        exported = to_official_state_dict(model, layout)
    assert report.layout == layout and report.ignored == []
    assert report.config.name == preset
    assert report.config.lm_head == (layout == 'unicore')
    assert {k: tuple(v.shape) for k, v in exported.items()} == shapes


def test_round_trip_and_strictness(tmp_path):
    torch.manual_seed(0)
    model = UniMol2.from_preset('tiny', lm_head=False)
    model.register_classification_head('homo', 2)
    state = to_official_state_dict(model)
    loaded, report = load_official({'model': state})
    assert report.heads == ['homo'] and report.config.name == 'tiny'
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    with pytest.raises(KeyError, match='unexpected'):
        load_official({**state, 'encoder.extra.weight': torch.zeros(1)})
    _, report = load_official({**state, 'encoder.extra.weight':
                               torch.zeros(1)}, strict=False)
    assert report.ignored == ['encoder.extra.weight']
    broken = dict(state)
    del broken['encoder.layers.0.opm.linear_out.bias']
    with pytest.raises(KeyError, match='missing'):
        load_official(broken)
    with pytest.raises(ValueError, match='unimol_tools holds a single'):
        to_official_state_dict(model, 'unimol_tools')
