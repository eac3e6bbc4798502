r"""Featurization of molecules into Uni-Mol2 inputs.

Every function returns one :class:`~torch_geometric.data.Data` per molecule
with the attributes listed in :mod:`pyg_unimol2.data.dense`, plus the strings
``smiles`` and ``name`` (``''`` when unknown or not given, so that molecules of
any origin batch together). The codes are those of
:mod:`pyg_unimol2.data.encoding`.

By default only heavy atoms are kept, as in the official code: the graph is
that of ``RemoveAllHs(AddHs(mol, addCoords=True))`` and the coordinates are
those of the heavy atoms, in RDKit atom order. Coordinates are not centered
(the model is translation invariant).

* :func:`from_mol`: an RDKit molecule with a conformer.
* :func:`from_smiles`: a SMILES string, embedded with ETKDGv3 and optimized
  with MMFF94 (as in the paper).
* :func:`from_atoms`: atomic numbers and coordinates without a bond graph
  (graph features dropped).
* :func:`featurize_smiles`: many SMILES in crash-safe worker processes
  (:func:`~pyg_unimol2.data.workers.imap_isolated`); molecules that fail,
  crash their worker or exceed the time limit are skipped and reported.
"""
import csv
import math
import os
import time
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, Iterable, List, NamedTuple, Optional, Union

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem
from torch import Tensor
from torch_geometric.data import Data
from tqdm import tqdm

from .encoding import (MAX_ATOMIC_NUM, atom_feat_codes, bond_features,
                       degree_codes, dropped_codes, official_atom_fields,
                       ogb_atom_features, pair_feat_codes, pair_type_codes,
                       spd_codes)
from .errors import (EmbeddingError, EmptyMoleculeError, FeaturizationError,
                     InvalidSmilesError, TooManyAtomsError,
                     UnsupportedElementError)
from .workers import ItemFailure, imap_isolated, single_thread

Features = Dict[str, Union[np.ndarray, str]]


def _check_elements(atomic_numbers: Iterable[int], name: str) -> None:
    bad = sorted({z for z in atomic_numbers if not 1 <= z <= MAX_ATOMIC_NUM})
    if bad:
        raise UnsupportedElementError(
            name, f'atomic numbers {bad} outside 1..{MAX_ATOMIC_NUM}')


def _check_mol(mol: Chem.Mol, name: str, remove_hs: bool,
               max_atoms: int) -> None:
    """Checks the elements and the number of atoms that featurization of
    :obj:`mol` would keep, without adding hydrogens."""
    _check_elements((atom.GetAtomicNum() for atom in mol.GetAtoms()), name)
    num_atoms = mol.GetNumHeavyAtoms()
    if not remove_hs:
        num_atoms = mol.GetNumAtoms() + sum(
            atom.GetTotalNumHs() for atom in mol.GetAtoms())
    if num_atoms == 0:
        raise EmptyMoleculeError(name)
    if num_atoms > max_atoms:
        raise TooManyAtomsError(name, f'{num_atoms} > max_atoms={max_atoms}')


def _graph_features(mol: Chem.Mol) -> Features:
    """Graph features of every atom of :obj:`mol` (OGB indices and official
    codes), pair tensors flattened row-major."""
    n = mol.GetNumAtoms()
    x = ogb_atom_features(mol)
    edges, edge_attr = [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        feats = bond_features(bond)
        edges += [(i, j), (j, i)]
        edge_attr += [feats, feats]
    edge_index = np.asarray(edges, np.int64).reshape(-1, 2).T
    edge_attr = np.asarray(edge_attr, np.int64).reshape(-1, 3)
    atom_feat = atom_feat_codes(official_atom_fields(mol, x))
    distance = Chem.GetDistanceMatrix(mol)
    return dict(
        x=x,
        atom_feat=atom_feat,
        degree=degree_codes(edge_index, n),
        edge_index=edge_index,
        edge_attr=edge_attr,
        spd=spd_codes(distance).reshape(n * n),
        pair_feat=pair_feat_codes(edge_index, edge_attr, n).reshape(n * n, 3),
        pair_type=pair_type_codes(atom_feat).reshape(n * n, 2),
        has_graph=np.ones(1, bool),
    )


def _mol_features(mol: Chem.Mol, name: str, conf_id: int, remove_hs: bool,
                  max_atoms: int) -> Features:
    _check_mol(mol, name, remove_hs, max_atoms)
    if mol.GetNumConformers() == 0:
        raise FeaturizationError(name, 'the molecule has no conformer')
    mol = Chem.AddHs(mol, addCoords=True)
    if remove_hs:
        mol = Chem.RemoveAllHs(mol)
    out = _graph_features(mol)
    out['z'] = np.asarray([a.GetAtomicNum() for a in mol.GetAtoms()],
                          np.int64)
    out['pos'] = mol.GetConformer(conf_id).GetPositions().astype(np.float32)
    return out


def _to_data(features: Features) -> Data:
    return Data(**{
        key: torch.from_numpy(value) if isinstance(value, np.ndarray) else
        value
        for key, value in features.items()
    })


def from_mol(mol: Chem.Mol, *, name: Optional[str] = None, conf_id: int = -1,
             remove_hs: bool = True, max_atoms: int = 256) -> Data:
    r"""Featurizes an RDKit molecule with a conformer.

    Args:
        mol (rdkit.Chem.Mol): the molecule; implicit or explicit hydrogens.
        name (str, optional): identifier stored as ``name`` and used in error
            messages; the canonical SMILES names the molecule in messages
            otherwise, and ``name`` is ``''``. (default: :obj:`None`)
        conf_id (int, optional): conformer to take the coordinates from.
            (default: :obj:`-1`, the default conformer)
        remove_hs (bool, optional): keep heavy atoms only, as the official
            code. If :obj:`False`, hydrogens are atoms (token ``1``) and all
            graph features are those of the explicit-hydrogen molecule (e.g.
            the OGB ``numH`` field counts only implicit hydrogens, so it is
            ``0``). (default: :obj:`True`)
        max_atoms (int, optional): largest number of atoms accepted.
            (default: :obj:`256`)

    Returns:
        Data: ``n`` atoms, see :mod:`pyg_unimol2.data.dense`; ``smiles`` is
        the canonical SMILES of :obj:`mol` without hydrogens.

    Raises:
        UnsupportedElementError: an atom is not an element ``1..118`` (e.g.
            a dummy atom ``*``).
        EmptyMoleculeError: no atom is left.
        TooManyAtomsError: more than :obj:`max_atoms` atoms are left.
        FeaturizationError: :obj:`mol` has no conformer.
    """
    smiles = Chem.MolToSmiles(Chem.RemoveAllHs(mol, sanitize=False))
    data = _to_data(_mol_features(mol, smiles if name is None else name,
                                  conf_id, remove_hs, max_atoms))
    data.smiles = smiles
    data.name = '' if name is None else name
    return data


def _parse_smiles(smiles: str, remove_hs: bool = True,
                  max_atoms: Optional[int] = None) -> Chem.Mol:
    """Parses and sanitizes :obj:`smiles` as ``Chem.MolFromSmiles`` does;
    the RDKit log is silenced and its diagnosis moved into the error.

    With :obj:`max_atoms`, a string whose unsanitized parse (linear time)
    already has more atoms than :func:`_check_mol` accepts is rejected
    before sanitization, which takes quadratic time on some long strings
    (a minute for ``'c' * 100000``)."""
    if not isinstance(smiles, str):
        raise InvalidSmilesError(str(smiles), 'not a string')
    try:
        smiles.encode('utf-8')
    except UnicodeEncodeError as e:  # e.g. a lone surrogate
        raise InvalidSmilesError(smiles, f'not valid Unicode text: {e}') \
            from None
    with rdBase.BlockLogs():
        raw = Chem.MolFromSmiles(smiles, sanitize=False)
        if raw is None:
            raise InvalidSmilesError(smiles, 'syntax error')
        # A lower bound of the count of _check_mol.
        num_atoms = raw.GetNumHeavyAtoms() if remove_hs else \
            raw.GetNumAtoms()
        if max_atoms is not None and num_atoms > max_atoms:
            at_least = '' if remove_hs else 'at least '
            raise TooManyAtomsError(
                smiles, f'{at_least}{num_atoms} > max_atoms={max_atoms}')
        mol = Chem.MolFromSmiles(smiles)
        if mol is not None:
            return mol
    try:
        Chem.SanitizeMol(raw)
    except Exception as e:  # RDKit raises several unrelated types.
        raise InvalidSmilesError(smiles, str(e)) from None
    raise InvalidSmilesError(smiles)


#: Successive ETKDGv3 settings tried until one embeds. The first is RDKit's
#: default with a capped attempt count (conformers are identical to the
#: uncapped default whenever it succeeds); strained polycycles such as
#: helicenes, which the torsion knowledge cannot satisfy, then embed without
#: it; random starting coordinates are the last resort.
EMBED_ATTEMPTS = (dict(maxIterations=50), dict(useBasicKnowledge=False),
                  dict(useRandomCoords=True))

#: Default time limit (s) of the featurization of one molecule in
#: :func:`featurize_smiles` and :func:`~pyg_unimol2.data.store.build_store`.
TIME_LIMIT = 300.0


def _embed(mol: Chem.Mol, name: str, seed: int, optimize: bool,
           time_limit: Optional[float] = None) -> Chem.Mol:
    """Adds hydrogens to :obj:`mol` and embeds one conformer with ETKDGv3
    (trying the settings of :data:`EMBED_ATTEMPTS` in turn), then optimizes
    it with MMFF94 when :obj:`optimize` is set and MMFF parameters exist.
    RDKit errors raised on the way (e.g. a molecule that sanitizes but that
    ETKDG cannot kekulize, or a bounds-matrix invariant violation) become
    :class:`EmbeddingError`. With a :obj:`time_limit` (s), the attempts
    share it as RDKit's own embedding timeout (conformers are unchanged
    when it is not reached)."""
    deadline = None if time_limit is None else time.monotonic() + time_limit
    try:
        mol = Chem.AddHs(mol)
        for settings in EMBED_ATTEMPTS:
            params = AllChem.ETKDGv3()
            params.randomSeed = seed
            for key, value in settings.items():
                setattr(params, key, value)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                params.timeout = max(math.ceil(left), 1)  # whole seconds
            if AllChem.EmbedMolecule(mol, params) >= 0:
                break
        if mol.GetNumConformers() == 0:
            detail = f'ETKDGv3, seed {seed}'
            if deadline is not None and time.monotonic() >= deadline:
                detail += f': timed out after {time_limit:g} s'
            raise EmbeddingError(name, detail)
        if optimize and AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol)
    except FeaturizationError:
        raise
    except Exception as e:  # RDKit raises several unrelated types.
        detail = ' '.join(str(e).split())  # One line.
        raise EmbeddingError(
            name, f'ETKDGv3, seed {seed}: {type(e).__name__}: {detail}'
        ) from None
    return mol


def _smiles_features(smiles: str, seed: int, remove_hs: bool, max_atoms: int,
                     optimize: bool,
                     time_limit: Optional[float] = None) -> Features:
    mol = _parse_smiles(smiles, remove_hs, max_atoms)
    _check_mol(mol, smiles, remove_hs, max_atoms)  # Before embedding.
    mol = _embed(mol, smiles, seed, optimize, time_limit)
    out = _mol_features(mol, smiles, -1, remove_hs, max_atoms)
    out['smiles'] = smiles
    out['name'] = ''
    return out


def from_smiles(smiles: str, *, seed: int = 0, remove_hs: bool = True,
                max_atoms: int = 256, optimize: bool = True) -> Data:
    r"""Featurizes a SMILES string with one generated 3D conformer.

    The hydrogen-added molecule is embedded with RDKit ETKDGv3 seeded with
    :obj:`seed` (falling back as described in :data:`EMBED_ATTEMPTS`). The
    conformer is then optimized with MMFF94 (skipped for molecules without
    MMFF parameters). Salts and other disconnected molecules are accepted.
    With ``seed=42`` the conformer is the one ``unimol_tools`` generates
    (same RDKit version), except where the first embedding fails.

    Args:
        smiles (str): the molecule.
        seed (int, optional): ETKDG random seed; the same seed gives the same
            conformer. (default: :obj:`0`)
        remove_hs (bool, optional): see :func:`from_mol`.
            (default: :obj:`True`)
        max_atoms (int, optional): largest number of atoms accepted, checked
            before embedding (and, as far as the unsanitized parse tells,
            before sanitization, slow on huge strings).
            (default: :obj:`256`)
        optimize (bool, optional): run the MMFF94 optimization.
            (default: :obj:`True`)

    Returns:
        Data: see :func:`from_mol`; ``smiles`` is :obj:`smiles` as given.

    Raises:
        InvalidSmilesError: RDKit cannot parse or sanitize :obj:`smiles`.
        EmbeddingError: no conformer could be embedded.
        UnsupportedElementError, EmptyMoleculeError, TooManyAtomsError: see
            :func:`from_mol`.
    """
    return _to_data(_smiles_features(smiles, seed, remove_hs, max_atoms,
                                     optimize))


def from_atoms(z: Union[Tensor, np.ndarray, List[int]],
               pos: Union[Tensor, np.ndarray, List[List[float]]], *,
               name: str, remove_hs: bool = True) -> Data:
    r"""Featurizes a molecule known only by its atomic numbers and
    coordinates, without a bond graph.

    All graph features take their official "dropped" codes (``atom_feat``,
    ``degree``, ``pair_feat`` ``1``; ``spd`` ``511``; ``pair_type``
    ``[2, 130]``), ``has_graph`` is :obj:`False` and there are no bonds
    (``edge_index`` ``[2, 0]``, ``edge_attr`` ``[0, 3]``). ``x`` holds the
    OGB atomic-number index (``z - 1``) in column 0 and ``0`` in the other
    columns, which carry no information here. ``smiles`` is ``''``.

    Args:
        z (LongTensor or array): atomic numbers ``[n]``.
        pos (Tensor or array): coordinates ``[n, 3]`` in Angstrom.
        name (str): identifier stored as ``name`` and used in error
            messages.
        remove_hs (bool, optional): drop hydrogen atoms (``z == 1``).
            (default: :obj:`True`)

    Raises:
        ValueError: :obj:`z` and :obj:`pos` do not have shapes ``[n]`` and
            ``[n, 3]``.
        UnsupportedElementError: an atomic number is outside ``1..118``.
        EmptyMoleculeError: no atom is left.
    """
    z = np.asarray(z, dtype=np.int64)
    pos = np.asarray(pos, dtype=np.float32)
    if z.ndim != 1 or pos.shape != (z.shape[0], 3):
        raise ValueError(f"{name!r}: expected z [n] and pos [n, 3], got "
                         f"{list(z.shape)} and {list(pos.shape)}")
    _check_elements(z.tolist(), name)
    if remove_hs:
        keep = z != 1
        z, pos = z[keep], pos[keep]
    n = z.shape[0]
    if n == 0:
        raise EmptyMoleculeError(name)
    atom_feat, degree, pair_feat, spd, pair_type = dropped_codes(n)
    x = np.zeros((n, 9), np.int64)
    x[:, 0] = z - 1
    return _to_data(dict(
        z=z,
        x=x,
        atom_feat=atom_feat,
        degree=degree,
        edge_index=np.zeros((2, 0), np.int64),
        edge_attr=np.zeros((0, 3), np.int64),
        pos=pos,
        spd=spd.reshape(n * n),
        pair_feat=pair_feat.reshape(n * n, 3),
        pair_type=pair_type.reshape(n * n, 2),
        has_graph=np.zeros(1, bool),
        smiles='',
        name=name,
    ))


class Failure(NamedTuple):
    """A molecule that :func:`featurize_smiles` skipped."""
    index: int  #: position in the input list
    smiles: str  #: the input SMILES
    reason: str  #: the error message


@dataclass
class FeaturizeResult:
    """Output of :func:`featurize_smiles`.

    Attributes:
        data (List[Data]): the featurized molecules, in input order.
        indices (List[int]): input position of each entry of :obj:`data`.
        failures (List[Failure]): the skipped molecules, in input order.
    """
    data: List[Data] = field(default_factory=list)
    indices: List[int] = field(default_factory=list)
    failures: List[Failure] = field(default_factory=list)


def _featurize_or_reason(smiles: str, **kwargs) -> Union[Features, str]:
    """Worker job: the features of :obj:`smiles`, or why they failed."""
    try:
        with rdBase.BlockLogs():
            return _smiles_features(smiles, **kwargs)
    except FeaturizationError as e:
        return str(e)
    except Exception as e:  # Unexpected RDKit errors skip the molecule too.
        return f'{type(e).__name__}: {e} ({smiles!r})'


def featurize_smiles(smiles: Iterable[str], *, workers: Optional[int] = None,
                     seed: int = 0, progress: bool = True, chunksize: int = 8,
                     remove_hs: bool = True, max_atoms: int = 256,
                     optimize: bool = True,
                     time_limit: Optional[float] = TIME_LIMIT
                     ) -> FeaturizeResult:
    r"""Featurizes many SMILES strings with :func:`from_smiles` in parallel
    worker processes.

    A molecule that raises any error is skipped and reported in
    :attr:`FeaturizeResult.failures`; every other molecule is kept. So is a
    molecule that crashes its worker process twice (a segmentation fault,
    the OOM killer; reason ``'worker crashed (...)'``) or that takes longer
    than :obj:`time_limit` (``'timed out after N s'``): the workers are
    those of :func:`~pyg_unimol2.data.workers.imap_isolated`, and the other
    molecules a dead worker held are featurized again. All molecules are
    embedded with the same :obj:`seed`, so a molecule's conformer depends
    neither on its position nor on :obj:`workers`.

    Args:
        smiles (Iterable[str]): the molecules.
        workers (int, optional): number of worker processes; ``1`` runs in
            the calling process, where a crash is not isolated and only
            RDKit's embedding timeout bounds the time of a molecule.
            (default: :obj:`None`, ``os.cpu_count()``)
        seed (int, optional): ETKDG seed of every molecule.
            (default: :obj:`0`)
        progress (bool, optional): show a progress bar. (default: :obj:`True`)
        chunksize (int, optional): molecules sent to a worker at once.
            (default: :obj:`8`)
        remove_hs, max_atoms, optimize: see :func:`from_smiles`.
        time_limit (float, optional): seconds one molecule may take; also
            RDKit's embedding timeout. (default: :data:`TIME_LIMIT`, 300;
            :obj:`None`: no limit)

    Returns:
        FeaturizeResult: the molecules in input order, their input indices
        and the failures.
    """
    smiles = list(smiles)
    job = partial(_featurize_or_reason, seed=seed, remove_hs=remove_hs,
                  max_atoms=max_atoms, optimize=optimize,
                  time_limit=time_limit)
    workers = min(workers or os.cpu_count() or 1, max(len(smiles), 1))
    result = FeaturizeResult()
    outputs = imap_isolated(job, smiles, workers, chunksize=chunksize,
                            time_limit=time_limit, initializer=single_thread)
    with closing(outputs), tqdm(total=len(smiles), unit='mol',
                                desc='Featurizing',
                                disable=not progress) as bar:
        for index, (out, smi) in enumerate(zip(outputs, smiles)):
            if isinstance(out, ItemFailure):
                out = f'{out.reason} ({smi!r})'
            if isinstance(out, str):
                result.failures.append(Failure(index, smi, out))
            else:
                result.data.append(_to_data(out))
                result.indices.append(index)
            bar.update()
    return result


def write_failures(failures: Iterable[Failure],
                   path: Union[str, os.PathLike]) -> None:
    """Writes :obj:`failures` to the CSV file :obj:`path` with the columns
    ``index``, ``smiles`` and ``reason``."""
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(Failure._fields)
        writer.writerows(failures)
