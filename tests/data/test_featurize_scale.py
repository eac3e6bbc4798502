"""Acceptance test of :func:`featurize_smiles` at scale: 10,000 MOSES
molecules with 50 broken SMILES mixed in at seeded random positions."""
import time

import numpy as np
import pytest
from conftest import read_moses
from rdkit import Chem, rdBase

from pyg_unimol2.data import featurize_smiles

NUM_GOOD = 10_000
SEED = 1234

#: Hand-written breakage of the kinds met in real SMILES files.
BROKEN = [
    # Unbalanced parentheses.
    'CC(C(=O)O', 'CC(=O)O)', 'CC(C)C(=O)N1CCC(CC1', 'Brc1ccc(cc1', '(CCO',
    # Unclosed or dangling ring bonds.
    'C1CCCC', 'c1ccccc', 'C1CC2CCC1', 'Cc1ccc2', 'C12',
    # Hypervalent atoms.
    'CC(C)(C)(C)(C)C', 'FC(F)(F)(F)F', 'CO(C)C', 'CN(C)(C)C', '[NH4]',
    'B(C)(C)(C)C', 'OC(=O)C(N)(N)(N)N', 'C1=CC=CC=C1=C', 'N#N#N', 'O=O=O',
    # Aromaticity that cannot be kekulized.
    'c1cccc1', 'Cc1cccc1C',
    # Unknown elements and dummy atoms.
    '[Xx]', 'C[Xx]C', '[Qq]CC', 'CC[Zz]O', '*C', 'c1ccccc1[*]',
    # Broken bracket atoms.
    'C[', '[C', 'CC]', '[14C', '[Fe@@@@]', '[Hg++++++++++]',
    # Garbage.
    'not a smiles', 'hello world', '!!!', 'C==C', 'C%', ' ',
]
NUM_TRUNCATED = 50 - len(BROKEN)


def truncated(smiles: str) -> str:
    """The longest prefix of at most half of :obj:`smiles` that RDKit
    rejects (a file cut in the middle of a line)."""
    with rdBase.BlockLogs():
        for end in range(len(smiles) // 2, 0, -1):
            if Chem.MolFromSmiles(smiles[:end]) is None:
                return smiles[:end]
    raise AssertionError(f'no broken prefix of {smiles!r}')


@pytest.mark.slow
def test_featurize_10k_moses_with_broken_smiles():
    moses = read_moses(NUM_GOOD + 200)
    good, spare = moses[:NUM_GOOD], moses[NUM_GOOD:]
    broken = BROKEN + [truncated(s) for s in spare[:NUM_TRUNCATED]]
    assert len(broken) == 50 and len(set(broken)) == 50

    total = NUM_GOOD + len(broken)
    rng = np.random.default_rng(SEED)
    bad_positions = np.sort(rng.choice(total, len(broken), replace=False))
    bad_set = set(bad_positions.tolist())
    good_positions = [i for i in range(total) if i not in bad_set]
    smiles = [None] * total
    for pos, smi in zip(bad_positions.tolist(), rng.permutation(broken)):
        smiles[pos] = str(smi)
    for pos, smi in zip(good_positions, good):
        smiles[pos] = smi

    start = time.perf_counter()
    result = featurize_smiles(smiles, workers=2, progress=False)
    elapsed = time.perf_counter() - start
    print(f'\nfeaturized {total} SMILES in {elapsed:.1f} s '
          f'({total / elapsed:.1f} mol/s, 2 workers)')

    assert [f.index for f in result.failures] == bad_positions.tolist()
    for failure in result.failures:
        assert failure.smiles == smiles[failure.index]
        assert repr(failure.smiles) in failure.reason, failure
    assert result.indices == good_positions
    assert len(result.data) == NUM_GOOD
    for index, data in zip(result.indices, result.data):
        assert data.smiles == smiles[index]
        n = data.num_nodes
        assert data.pos.shape == (n, 3) and data.spd.numel() == n * n
