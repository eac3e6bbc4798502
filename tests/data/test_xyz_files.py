"""read_xyz_frames / from_xyz_frame: plain and extended XYZ files."""
import gzip

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from pyg_unimol2.data import from_mol
from pyg_unimol2.data.errors import FeaturizationError, TooManyAtomsError
from pyg_unimol2.data.xyz import from_xyz_frame, read_xyz_frames
from pyg_unimol2.errors import InputError

WATER = ('3\nname=water energy=-76.4 "note=a b" smiles=O\n'
         'O 0.0 0.0 0.0\nH 0.96 0.0 0.0\nh -0.24 0.93 0.0 0.1 extra\n')
METHANE = ('5\nmethane from a plain XYZ\n6 0 0 0\n1 0.63 0.63 0.63\n'
           '1 -0.63 -0.63 0.63\n1 -0.63 0.63 -0.63\n1 0.63 -0.63 -0.63\n')


def _frames(tmp_path, text, name='m.xyz'):
    path = tmp_path / name
    if name.endswith('.gz'):
        with gzip.open(path, 'wt') as f:
            f.write(text)
    else:
        path.write_text(text)
    return list(read_xyz_frames(path))


def test_frames_names_and_properties(tmp_path):
    frames = _frames(tmp_path, WATER + '\n\n' + METHANE, 'm.xyz.gz')
    water, methane = frames
    assert [f.index for f in frames] == [0, 1]
    assert water.name == 'water' and methane.name == 'methane from a ' \
        'plain XYZ'
    assert water.properties == {'name': 'water', 'energy': '-76.4',
                                'note': 'a b', 'smiles': 'O'}
    assert water.get('SMILES') == 'O' and methane.properties == {}
    assert water.z.tolist() == [8, 1, 1] and methane.z.tolist() == [6] + \
        [1] * 4
    np.testing.assert_array_equal(water.pos[2], [-0.24, 0.93, 0.0])
    assert water.failure is None and methane.failure is None
    data = from_xyz_frame(water)
    assert data.smiles == 'O' and data.name == 'water'
    assert from_xyz_frame(methane).smiles == 'C'  # bonds perceived


@pytest.mark.parametrize('text, reason', [
    ('2\nx\nXx 0 0 0\nH 1 0 0\n', "unknown element 'Xx'"),
    ('2\nx\nC 0 0\nH 1 0 0\n', 'atom line 1'),
    ('2\nx\nC 0 0 a\nH 1 0 0\n', 'atom line 1'),
    ('1\nLattice="5 0 0 0 5 0 0 0 5" pbc="T T T"\nC 0 0 0\n', 'periodic'),
    ('1\nProperties=pos:R:3:species:S:1\n0 0 0 C\n', 'Properties='),
])
def test_bad_frames_are_failures_and_the_next_frame_is_read(tmp_path, text,
                                                            reason):
    bad, good = _frames(tmp_path, text + WATER)
    assert reason in bad.failure and good.failure is None
    assert good.name == 'water'
    with pytest.raises(FeaturizationError, match=reason):
        from_xyz_frame(bad)


def test_truncated_last_frame_and_bad_count_line(tmp_path):
    frames = _frames(tmp_path, WATER + '4\nshort\nC 0 0 0\n')
    assert frames[1].failure == 'truncated frame (1 of 4 atom lines)'
    with pytest.raises(InputError, match=r"m\.xyz: line 6: 'C 0 0 0' is "
                       r"not the atom count of frame 1"):
        _frames(tmp_path, WATER + 'C 0 0 0\n')
    (tmp_path / 'b.xyz').write_bytes(b'\xff\xfe\x00')
    with pytest.raises(InputError, match='b.xyz: cannot be read as an XYZ'):
        list(read_xyz_frames(tmp_path / 'b.xyz'))


def test_frame_equals_its_sd_record_with_stereo_from_3d(tmp_path):
    mol = Chem.AddHs(Chem.MolFromSmiles('C[C@@H](N)C(=O)O'))
    assert AllChem.EmbedMolecule(mol, randomSeed=0) == 0
    lines = [f'{a.GetSymbol()} {x:.6f} {y:.6f} {z:.6f}' for a, (x, y, z) in
             zip(mol.GetAtoms(), mol.GetConformer().GetPositions())]
    frame, = _frames(tmp_path, f'{len(lines)}\nalanine charge=0\n'
                     + '\n'.join(lines) + '\n')
    ours = from_xyz_frame(frame)
    sd = from_mol(Chem.MolFromMolBlock(Chem.MolToMolBlock(mol),
                                       removeHs=False))
    assert ours.smiles == sd.smiles == 'C[C@@H](N)C(=O)O'
    for key in ('z', 'atom_feat', 'degree', 'spd', 'pair_feat', 'pair_type'):
        assert torch.equal(ours[key], sd[key]), key
    torch.testing.assert_close(ours.pos, sd.pos, atol=1e-4, rtol=0)
    with pytest.raises(TooManyAtomsError, match='6 > max_atoms=5'):
        from_xyz_frame(frame, max_atoms=5)
    bad = frame._replace(properties={'charge': 'one'})
    with pytest.raises(FeaturizationError, match="charge='one'"):
        from_xyz_frame(bad)
