"""Property-based (hypothesis) tests of the SMILES featurizer on fuzzed
input: random text over the SMILES alphabet, mutations of real MOSES SMILES
and valid ones. Every input comes back exactly once, as a molecule that
meets the dense contract of :mod:`pyg_unimol2.data.dense` or as a failure
naming it, and :func:`from_smiles` raises nothing but
:class:`~pyg_unimol2.data.errors.FeaturizationError`.

The examples are deterministic (the ``ci`` profile of ``conftest.py``);
``HYPOTHESIS_PROFILE=fuzz`` explores more. Embedding is kept cheap: no MMFF
optimization and a small ``max_atoms`` for random strings (with
``remove_hs=False`` every atom, hydrogens included, counts)."""
from unittest import mock

import pytest
import torch
from conftest import check_dense_contract, fuzz_examples, read_moses
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyg_unimol2.data import featurize as featurize_module
from pyg_unimol2.data.errors import FeaturizationError, TooManyAtomsError
from pyg_unimol2.data.featurize import featurize_smiles, from_smiles

MOSES = read_moses(64)


# ----------------------------------------------------------- strategies
ELEMENTS = ['H', 'He', 'Li', 'B', 'C', 'N', 'O', 'F', 'Na', 'Mg', 'Si', 'P',
            'S', 'Cl', 'K', 'Fe', 'Cu', 'Zn', 'Se', 'Br', 'Pd', 'Sn', 'I',
            'Xe', 'Pt', 'Hg', 'U', 'Og', 'Ts', 'Db', 'c', 'n', 'o', 's', 'p',
            'se', 'te', 'as', 'b', '*', '#6', '#0', '#118', '#119', '#250']
CHIRALITY = ['', '@', '@@', '@TH1', '@AL1', '@SP2', '@TB7', '@OH12']
CHARGES = ['', '+', '-', '++', '--', '+2', '-3', '+15', '-16']

bracket_atom = st.builds(
    lambda iso, el, chi, h, q, amap: f'[{iso}{el}{chi}{h}{q}{amap}]',
    st.sampled_from(['', '', '2', '13', '0', '999']),
    st.sampled_from(ELEMENTS),
    st.sampled_from(CHIRALITY),
    st.sampled_from(['', '', 'H', 'H2', 'H4', 'H9']),
    st.sampled_from(CHARGES),
    st.sampled_from(['', '', ':1', ':99']))

#: Single characters and tokens of the SMILES grammar (organic subset,
#: bonds, branches, ring closures incl. ``%nn``, stereo, dots) and some that
#: are not part of it (whitespace, unicode, control characters).
TOKENS = (list('BCNOPSFIcnosp()[]=#-+\\/@.:*~$0123456789%') +
          ['Cl', 'Br', '%10', '%99', '%1', '%00', '(=O)', 'c1ccccc1',
           ' ', '\t', '\n', '\x00', '\u00e9', '\u03bb', '\U0001F600'])
token = st.one_of(st.sampled_from(TOKENS), bracket_atom)

ORGANIC = ['C', 'C', 'C', 'N', 'O', 'B', 'P', 'S', 'F', 'Cl', 'Br', 'I']
AROMATIC = ['c', 'n', 'o', 's', 'p', '*']
BONDS = ['', '', '', '', '', '-', '=', '=', '#', '$', ':', '/', '\\', '~']
RING_BONDS = ['1', '2', '3', '%10', '%99']


@st.composite
def grammar_smiles(draw):
    """Mostly well-formed SMILES of up to 8 atoms (balanced branches,
    paired ring closures, dots) from the organic subset and bracket atoms:
    they parse far more often than random text, so they exercise
    sanitization, embedding and featurization of unusual molecules."""
    out, rings, depth = [], [], 0
    n = draw(st.integers(1, 8))
    for i in range(n):
        if i and out[-1] != '.':
            out.append(draw(st.sampled_from(BONDS)))
        kind = draw(st.integers(0, 9))
        out.append(draw(st.sampled_from(ORGANIC)) if kind < 7 else
                   draw(st.sampled_from(AROMATIC)) if kind < 8 else
                   draw(bracket_atom))
        if draw(st.integers(0, 2)) == 0:
            if rings and draw(st.booleans()):
                out.append(rings.pop())
            else:
                ring = draw(st.sampled_from(RING_BONDS))
                if ring not in rings:
                    rings.append(ring)
                    out.append(ring)
        if i < n - 1:
            move = draw(st.integers(0, 5))
            if move == 0:
                out.append('(')
                depth += 1
            elif move == 1 and depth:
                out.append(')')
                depth -= 1
            elif move == 2 and not depth:
                out.append('.')
    if rings and draw(st.integers(0, 4)):  # else left open: syntax error
        out.append(draw(st.sampled_from(BONDS)) + ''.join(rings))
    out.append(')' * depth)
    return ''.join(out)


smiles_text = st.one_of(
    st.lists(token, max_size=30).map(''.join),
    grammar_smiles(),
    st.text(max_size=12),  # any unicode (whitespace, empty, ...)
    st.sampled_from(['', ' ', '\t\n', 'C C', ' CCO ', 'CCO\n', '\ud800C']))


@st.composite
def mutated_smiles(draw):
    """A MOSES SMILES with a few characters inserted, deleted or
    replaced."""
    chars = list(draw(st.sampled_from(MOSES)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(['insert', 'delete', 'replace']))
        i = draw(st.integers(0, len(chars)))
        if op == 'insert':
            chars.insert(i, draw(token))
        elif chars:
            i = min(i, len(chars) - 1)
            if op == 'delete':
                del chars[i]
            else:
                chars[i] = draw(token)
    return ''.join(chars)


@st.composite
def huge_smiles(draw):
    """Valid SMILES far over a small ``max_atoms``: several MOSES molecules
    as one salt, a long chain, or a long conjugated / aromatic string."""
    k = draw(st.integers(4, 40))
    return draw(st.sampled_from([
        '.'.join(draw(st.lists(st.sampled_from(MOSES), min_size=k,
                               max_size=k))),
        'C' * (100 * k),
        'C=C' * (100 * k),
        'c1ccccc1' * (50 * k),
        'c' * (2000 * k),  # sanitization fails, in quadratic time
    ]))


valid_smiles = st.sampled_from(MOSES)
any_smiles = st.one_of(smiles_text, mutated_smiles(), valid_smiles)


# ------------------------------------------------------------ contract
def check_data(data, smiles: str, max_atoms: int) -> None:
    check_dense_contract(data, max_atoms)
    assert bool(data.has_graph)
    assert data.smiles == smiles and data.name == ''


def check_failure_names(reason: str, smiles: str) -> None:
    assert reason.strip()
    assert repr(smiles) in reason, (reason, smiles)


def check_exactly_once(result, inputs, max_atoms: int) -> None:
    indices = result.indices + [f.index for f in result.failures]
    assert sorted(indices) == list(range(len(inputs)))
    assert result.indices == sorted(result.indices)
    assert len(result.data) == len(result.indices)
    for i, data in zip(result.indices, result.data):
        check_data(data, inputs[i], max_atoms)
    for failure in result.failures:
        assert failure.smiles == inputs[failure.index]
        check_failure_names(failure.reason, failure.smiles)


# --------------------------------------------------------- properties
#: Inputs on which from_smiles once raised something else than a
#: FeaturizationError.
EMBEDDING_CRASHES = [
    # Sanitizes, but ETKDG raises KekulizeException.
    'Cn1c(=O)=c2cc(C-N)c(=O)oc2c2cccc21',
    # A query bond '~' in an aromatic ring: AtomValenceException.
    'CC(C)NC(=O)Cc1cc~c(Br)cc1',
    # RuntimeError: Invariant Violation in the bounds matrix builder.
    'O=C1CCCCCC1C[Hg]1(O)C(=O)Nc2ccccc21',
]


def _from_smiles(smiles: str, remove_hs: bool, max_atoms: int) -> None:
    try:
        data = from_smiles(smiles, optimize=False, remove_hs=remove_hs,
                           max_atoms=max_atoms)
    except FeaturizationError as e:
        assert e.name == smiles
        check_failure_names(str(e), smiles)
    else:
        check_data(data, smiles, max_atoms)


@settings(max_examples=fuzz_examples(500))
@given(smiles=smiles_text, remove_hs=st.booleans())
@example(smiles='\ud800', remove_hs=True)  # UnicodeEncodeError from RDKit
@example(smiles='[Og][Ts][Lv]', remove_hs=True)
@example(smiles='[2H][2H]', remove_hs=True)
def test_from_smiles_random_text(smiles, remove_hs):
    # A small max_atoms (with remove_hs=False every atom counts, hydrogens
    # included): cheap embedding.
    _from_smiles(smiles, remove_hs, 6 if remove_hs else 12)


@settings(max_examples=fuzz_examples(200))
@given(smiles=mutated_smiles())
@example(smiles=EMBEDDING_CRASHES[0])
@example(smiles=EMBEDDING_CRASHES[1])
@example(smiles=EMBEDDING_CRASHES[2])
def test_from_smiles_mutated_moses(smiles):
    _from_smiles(smiles, True, 64)


@settings(max_examples=fuzz_examples(30))
@given(smiles=valid_smiles, remove_hs=st.booleans())
def test_from_smiles_valid_moses(smiles, remove_hs):
    data = from_smiles(smiles, optimize=False, remove_hs=remove_hs,
                       max_atoms=128)
    check_data(data, smiles, 128)


@settings(max_examples=fuzz_examples(30))
@given(smiles=huge_smiles(), remove_hs=st.booleans())
@example(smiles='c' * 100000, remove_hs=True)  # took a minute to fail
def test_huge_molecules_rejected_before_embedding(smiles, remove_hs):
    # Neither embedded nor (for the unsanitizable 'ccc...') sanitized.
    def no_embedding(*args, **kwargs):
        raise AssertionError('a molecule over max_atoms was embedded')

    with mock.patch.object(featurize_module, '_embed', no_embedding):
        with pytest.raises(TooManyAtomsError) as info:
            from_smiles(smiles, optimize=False, remove_hs=remove_hs,
                        max_atoms=32)
    check_failure_names(str(info.value), smiles)


@settings(max_examples=fuzz_examples(80))
@given(inputs=st.lists(any_smiles, max_size=8))
@example(inputs=[])
@example(inputs=EMBEDDING_CRASHES + ['\ud800', 'CCO', 'CCO'])
def test_featurize_smiles_exactly_once(inputs):
    result = featurize_smiles(inputs, workers=1, progress=False,
                              optimize=False, max_atoms=64)
    check_exactly_once(result, inputs, 64)


@settings(max_examples=fuzz_examples(8))
@given(inputs=st.lists(any_smiles, min_size=2, max_size=16))
def test_featurize_smiles_two_workers(inputs):
    # The same result as in the calling process, conformers included.
    result = featurize_smiles(inputs, workers=2, chunksize=3,
                              progress=False, optimize=False, max_atoms=64)
    check_exactly_once(result, inputs, 64)
    serial = featurize_smiles(inputs, workers=1, progress=False,
                              optimize=False, max_atoms=64)
    assert result.indices == serial.indices
    assert [f.index for f in result.failures] == \
        [f.index for f in serial.failures]
    for a, b in zip(result.data, serial.data):
        assert torch.equal(a.pos, b.pos)
