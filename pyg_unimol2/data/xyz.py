"""RDKit molecules from Cartesian coordinates (``xyz``), in the ``xyz`` order.

Quantum-chemistry data sets (QM9, ...) ship a geometry as a list of elements
and coordinates, plus a SMILES string whose atom order is *not* the ``xyz``
order. Uni-Mol2 needs both the molecular graph (atom/bond features) and the
coordinates, row for row in the same order. :func:`mol_from_xyz` builds an
RDKit molecule whose atoms and conformer follow the ``xyz`` order exactly:

* **with a template** (``smiles=...``): the connectivity is perceived from the
  coordinates (:func:`rdkit.Chem.rdDetermineBonds.DetermineConnectivity`),
  every hydrogen is attached to its nearest contact, and the heavy-atom graph
  of the template (with the hydrogen count of every heavy atom) is matched
  onto the perceived heavy-atom graph. Bond orders, formal charges and
  radicals are copied from the template through that match. Perceived
  contacts that the template does not bond are tolerated only when long
  (:data:`CONTACT_RATIO`; e.g. the 1,3 bridgeheads of bicyclo[1.1.1]pentane);
  a short one means a different molecule. When several matches exist
  (symmetric molecules), the one that puts the higher bond orders on the
  shorter bonds is taken. The result is checked: its heavy-atom graph must
  give the same canonical SMILES as the template. Otherwise a
  :class:`~pyg_unimol2.data.errors.GraphMatchError` names the molecule.
  Bonds are stored sorted by ``xyz`` indices, so the result does not depend
  on the template's atom order.
* **without a template**: connectivity and bond orders both come from the
  coordinates (:func:`rdkit.Chem.rdDetermineBonds.DetermineBonds`, total charge
  :obj:`charge`).

Stereo tags are not assigned here (neither copied from the template nor taken
from 3D); that policy belongs to :func:`pyg_unimol2.data.featurize.from_mol`.

XYZ *files* (plain or extended XYZ, one or several frames, gzipped too) are
read by :func:`read_xyz_frames`; :func:`from_xyz_frame` featurizes a frame
as RDKit reads a 3D SD record: atoms in file order, stereo from 3D.
"""
import gzip
import shlex
from pathlib import Path
from typing import (Dict, Iterator, List, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdDetermineBonds, rdqueries
from rdkit.Geometry import Point3D
from torch_geometric.data import Data

from ..errors import InputError
from .errors import (BondPerceptionError, EmptyMoleculeError,
                     FeaturizationError, GraphMatchError, InvalidSmilesError,
                     TooManyAtomsError, UnsupportedElementError)
from .featurize import from_mol

_PT = Chem.GetPeriodicTable()
_MAX_MATCHES = 10000

#: Perceived contacts (length / sum of covalent radii) up to this ratio are
#: bonds; longer ones that the template does not bond are tolerated as
#: non-bonded close contacts. On QM9, true bonds reach 1.13 and the 1,3
#: cross-ring contacts of bicyclo[1.1.1]pentane-like cages start at 1.17.
CONTACT_RATIO = 1.15

__all__ = ['mol_from_xyz', 'from_xyz', 'XYZFrame', 'read_xyz_frames',
           'from_xyz_frame', 'XYZ_SUFFIXES']


def _atomic_numbers(z, name: str) -> np.ndarray:
    if hasattr(z, 'tolist'):  # torch.Tensor / numpy array
        z = z.tolist()
    out = []
    for a in z:
        if isinstance(a, str):
            try:
                out.append(_PT.GetAtomicNumber(a.strip().capitalize()))
            except RuntimeError:
                raise UnsupportedElementError(name, f'unknown element {a!r}') \
                    from None
        else:
            out.append(int(a))
    bad = sorted({a for a in out if not 1 <= a <= 118})
    if bad:
        raise UnsupportedElementError(name, f'atomic numbers {bad}')
    return np.asarray(out, dtype=np.int64)


def _formula(numbers: Sequence[int]) -> str:
    counts = {}
    for a in numbers:
        counts[a] = counts.get(a, 0) + 1
    order = sorted(counts, key=lambda a: (a != 6, a != 1, a))  # Hill order
    return ''.join(
        f'{_PT.GetElementSymbol(a)}{counts[a] if counts[a] > 1 else ""}'
        for a in order)


def _xyz_mol(z: np.ndarray, pos: np.ndarray, name: str) -> Chem.RWMol:
    """Atoms and one conformer, no bonds, in the given order."""
    mol = Chem.RWMol()
    for a in z.tolist():
        atom = Chem.Atom(a)
        atom.SetNoImplicit(True)
        mol.AddAtom(atom)
    conf = Chem.Conformer(len(z))
    for i, (x, y, w) in enumerate(pos.tolist()):
        conf.SetAtomPosition(i, Point3D(x, y, w))
    conf.Set3D(True)
    mol.AddConformer(conf, assignId=True)
    mol.SetProp('_Name', name)
    return mol


def _template(smiles: Union[str, Chem.Mol], name: str) -> Chem.Mol:
    if isinstance(smiles, Chem.Mol):
        tmpl = Chem.Mol(smiles)
        try:
            Chem.SanitizeMol(tmpl)
        except Exception as e:  # noqa: BLE001 (RDKit raises several types)
            raise InvalidSmilesError(name, f'template: {e}') from None
        return tmpl
    tmpl = Chem.MolFromSmiles(smiles)
    if tmpl is None:
        raise InvalidSmilesError(name, f'template SMILES {smiles!r}')
    return tmpl


def _contacts(mol: Chem.RWMol, z: np.ndarray, pos: np.ndarray,
              name: str) -> Dict[Tuple[int, int], float]:
    """Atom pairs connected by RDKit's connect-the-dots perception, each with
    its length divided by the sum of the covalent radii."""
    probe = Chem.RWMol(mol)
    try:
        rdDetermineBonds.DetermineConnectivity(probe)
    except Exception as e:  # noqa: BLE001
        raise BondPerceptionError(name, f'connectivity: {e}') from None
    rcov = np.array([_PT.GetRcovalent(int(a)) for a in z.tolist()])
    out = {}
    for bond in probe.GetBonds():
        i, j = sorted((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        d = pos[i] - pos[j]
        out[(i, j)] = float(np.sqrt(d @ d)) / (rcov[i] + rcov[j])
    return out


def _heavy_graph(z: np.ndarray, bonds: List[Tuple[int, int]],
                 hcount: Optional[np.ndarray]) -> Chem.RWMol:
    """Perceived heavy-atom graph: all bonds single, the hydrogen count of
    every atom stored explicitly (when known)."""
    out = Chem.RWMol()
    for k, a in enumerate(z.tolist()):
        atom = Chem.Atom(a)
        atom.SetNoImplicit(True)
        if hcount is not None:
            atom.SetNumExplicitHs(int(hcount[k]))
        out.AddAtom(atom)
    for i, j in bonds:
        out.AddBond(i, j, Chem.BondType.SINGLE)
    out.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(out)
    return out


def _skeleton_query(tmpl: Chem.Mol, with_h: bool) -> Chem.RWMol:
    """Template heavy atoms as query atoms (element, and total hydrogen count
    when :obj:`with_h`), all bonds single."""
    query = Chem.RWMol()
    for atom in tmpl.GetAtoms():
        qa = rdqueries.AtomNumEqualsQueryAtom(atom.GetAtomicNum())
        if with_h:
            qa.ExpandQuery(rdqueries.HCountEqualsQueryAtom(
                atom.GetTotalNumHs()))
        query.AddAtom(qa)
    for bond in tmpl.GetBonds():
        query.AddBond(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(),
                      Chem.BondType.SINGLE)
    return query


def _best_match(matches: Sequence[Tuple[int, ...]], tmpl: Chem.Mol,
                heavy: np.ndarray, pos: np.ndarray,
                contacts: Dict[Tuple[int, int], float]
                ) -> Tuple[Tuple[int, ...], Optional[Tuple[int, int]]]:
    """Picks a match of the template heavy atoms onto the perceived graph.

    Perceived contacts that are not template bonds ("extra" contacts) are
    allowed only when long (ratio > :obj:`CONTACT_RATIO`: non-bonded 1,3
    contacts in strained cages such as bicyclo[1.1.1]pentane). Among the
    admissible matches, the one with the smallest
    ``sum(bond order * bond length)`` wins (higher orders on shorter bonds).
    Returns the match and ``None``, or the best match and one offending extra
    contact (original atom indices) when no match is admissible.
    """
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.GetBondTypeAsDouble())
             for b in tmpl.GetBonds()]
    is_heavy = set(heavy.tolist())
    heavy_contacts = {(i, j): r for (i, j), r in contacts.items()
                      if i in is_heavy and j in is_heavy}
    best, best_key, bad = None, None, None
    for m in matches:
        used = set()
        score = 0.0
        for i, j, order in bonds:
            a, b = sorted((int(heavy[m[i]]), int(heavy[m[j]])))
            used.add((a, b))
            d = pos[a] - pos[b]
            score += order * float(np.sqrt(d @ d))
        short = [(r, ij) for ij, r in heavy_contacts.items()
                 if ij not in used and r <= CONTACT_RATIO]
        key = (len(short), score)
        if best_key is None or key < best_key:
            best, best_key = m, key
            bad = min(short)[1] if short else None
    return best, bad


def _canonical(mol: Chem.Mol) -> str:
    return Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False),
                            isomericSmiles=False)


def mol_from_xyz(z, pos, *, smiles: Optional[Union[str, Chem.Mol]] = None,
                 charge: Optional[int] = None,
                 name: Optional[str] = None) -> Chem.Mol:
    r"""Builds an RDKit molecule whose atom order and conformer are exactly
    the ``xyz`` order and coordinates.

    Args:
        z (sequence of int or str): atomic numbers (or element symbols)
            ``[n]``.
        pos (array-like): coordinates in Angstrom ``[n, 3]``.
        smiles (str or rdkit.Chem.Mol, optional): template giving bond orders
            and formal charges. The ``xyz`` may contain all hydrogens (the
            full graph, hydrogens included, must then match) or only the heavy
            atoms (hydrogen counts are then taken from the template). Without
            a template, bonds and bond orders are perceived from the
            coordinates, which then must contain all hydrogens.
            (default: :obj:`None`)
        charge (int, optional): total charge. Without a template it is passed
            to the bond-order perception (:obj:`None` means 0); with a
            template it is checked against the template's net charge when not
            :obj:`None`. (default: :obj:`None`)
        name (str, optional): identifier used in error messages and stored as
            the molecule's ``_Name``. (default: the SMILES, or ``'xyz'``)

    Returns:
        rdkit.Chem.Mol: sanitized molecule with explicit hydrogen atoms where
        the ``xyz`` has them and one 3D conformer; atom ``i`` is ``xyz`` row
        ``i``.

    Raises:
        GraphMatchError: the perceived graph does not match the template
            (different formula, heavy-atom graph or hydrogen placement).
        BondPerceptionError: template-free bond perception failed.
        InvalidSmilesError: the template cannot be parsed.
        UnsupportedElementError: an element outside ``1..118``.
        EmptyMoleculeError: no atoms.
        ValueError: :obj:`pos` is not ``[n, 3]``.
    """
    if name is None:
        name = smiles if isinstance(smiles, str) else 'xyz'
    z = _atomic_numbers(z, name)
    pos = np.asarray(pos.tolist() if hasattr(pos, 'tolist') else pos,
                     dtype=np.float64)
    if z.size == 0:
        raise EmptyMoleculeError(name)
    if pos.shape != (z.size, 3):
        raise ValueError(f'{name!r}: pos has shape {tuple(pos.shape)}, '
                         f'expected ({z.size}, 3)')
    mol = _xyz_mol(z, pos, name)

    if smiles is None:
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=int(charge or 0),
                                            embedChiral=False)
            Chem.SanitizeMol(mol)
        except Exception as e:  # noqa: BLE001
            raise BondPerceptionError(name, str(e)) from None
        return mol.GetMol()

    tmpl = _template(smiles, name)
    has_h = bool((z == 1).any())
    # Template atoms: the heavy atoms, each with its total hydrogen count.
    tmpl = Chem.RemoveHs(tmpl)
    if charge is not None and Chem.GetFormalCharge(tmpl) != charge:
        raise GraphMatchError(name, f'template net charge '
                              f'{Chem.GetFormalCharge(tmpl)} != {charge}')
    t_h = np.array([a.GetTotalNumHs() for a in tmpl.GetAtoms()], np.int64)
    t_z = [a.GetAtomicNum() for a in tmpl.GetAtoms()]
    heavy = np.flatnonzero(z != 1)
    formula_t = t_z + [1] * (int(t_h.sum()) if has_h else 0)
    formula_x = z.tolist() if has_h else z[heavy].tolist()
    if sorted(formula_t) != sorted(formula_x):
        raise GraphMatchError(name, f'formula differs: xyz '
                              f'{_formula(formula_x)} vs template '
                              f'{_formula(formula_t)}')

    contacts = _contacts(mol, z, pos, name)
    # Hydrogens: bonded to their closest contact; any other contact must be
    # long (a non-bonded close contact, e.g. inside a cage).
    hcount = np.zeros(len(z), dtype=np.int64)
    h_bonds = []
    near_h = {h: [] for h in np.flatnonzero(z == 1).tolist()}
    for (i, j), r in contacts.items():
        if i in near_h:
            near_h[i].append((r, j))
        if j in near_h:
            near_h[j].append((r, i))
    for h, near in near_h.items():
        near.sort()
        if not near or z[near[0][1]] == 1:
            raise GraphMatchError(name, f'hydrogen {h} is not bonded to a '
                                  f'heavy atom in the geometry')
        if len(near) > 1 and near[1][0] <= CONTACT_RATIO:
            raise GraphMatchError(name, f'hydrogen {h} is bonded to atoms '
                                  f'{near[0][1]} and {near[1][1]} in the '
                                  f'geometry')
        hcount[near[0][1]] += 1
        h_bonds.append((h, near[0][1]))
    heavy_pos = {int(a): k for k, a in enumerate(heavy)}
    p_bonds = [(heavy_pos[i], heavy_pos[j]) for (i, j) in contacts
               if z[i] != 1 and z[j] != 1]
    perc = _heavy_graph(z[heavy], p_bonds, hcount[heavy] if has_h else None)

    if perc.GetNumBonds() < tmpl.GetNumBonds():
        raise GraphMatchError(name, f'heavy-atom graph differs: '
                              f'{perc.GetNumBonds()} bonds perceived from '
                              f'the geometry, {tmpl.GetNumBonds()} in the '
                              f'template')
    matches = perc.GetSubstructMatches(_skeleton_query(tmpl, has_h),
                                       uniquify=False, useChirality=False,
                                       maxMatches=_MAX_MATCHES)
    if not matches:
        if has_h and perc.HasSubstructMatch(_skeleton_query(tmpl, False)):
            detail = ('hydrogen placement differs from the template '
                      '(same heavy-atom graph)')
        else:
            detail = 'heavy-atom graph differs from the template'
        raise GraphMatchError(name, detail)
    m, extra = _best_match(matches, tmpl, heavy, pos, contacts)
    if extra is not None:
        i, j = extra
        raise GraphMatchError(
            name, f'heavy-atom graph differs: atoms {i} and {j} are bonded '
            f'in the geometry ({float(np.linalg.norm(pos[i] - pos[j])):.3f} '
            f'A) but not in the template')

    # Bonds, bond orders, charges, radicals from a Kekule form of the
    # template, mapped through the match.
    kek = Chem.Mol(tmpl)
    Chem.Kekulize(kek, clearAromaticFlags=True)
    # Bonds are added sorted by xyz atom indices, so that the result does
    # not depend on the atom order of the template.
    bonds = [(min(h, a), max(h, a), Chem.BondType.SINGLE) for h, a in h_bonds]
    for bond in kek.GetBonds():
        i = int(heavy[m[bond.GetBeginAtomIdx()]])
        j = int(heavy[m[bond.GetEndAtomIdx()]])
        bonds.append((min(i, j), max(i, j), bond.GetBondType()))
    for i, j, bond_type in sorted(bonds):
        mol.AddBond(i, j, bond_type)
    for k, atom in enumerate(kek.GetAtoms()):
        target = mol.GetAtomWithIdx(int(heavy[m[k]]))
        target.SetFormalCharge(atom.GetFormalCharge())
        target.SetNumRadicalElectrons(atom.GetNumRadicalElectrons())
        target.SetNoImplicit(True)
        target.SetNumExplicitHs(0 if has_h else int(t_h[k]))
    try:
        Chem.SanitizeMol(mol)
    except Exception as e:  # noqa: BLE001
        raise GraphMatchError(name, f'sanitization after matching: {e}') \
            from None
    got, want = _canonical(mol), _canonical(tmpl)
    if got != want:
        raise GraphMatchError(name, f'matched graph {got!r} != template '
                              f'{want!r}')
    return mol.GetMol()


def from_xyz(z, pos, *, smiles: Optional[Union[str, Chem.Mol]] = None,
             charge: Optional[int] = None, name: Optional[str] = None,
             remove_hs: bool = True, max_atoms: int = 256) -> Data:
    r"""Featurizes a molecule given as ``xyz``: :func:`mol_from_xyz` then
    :func:`~pyg_unimol2.data.featurize.from_mol`.

    The atom order of the returned :class:`~torch_geometric.data.Data` is the
    ``xyz`` order (hydrogens removed when :obj:`remove_hs`), and :obj:`pos` is
    the given geometry. See :func:`mol_from_xyz` for the arguments and errors
    and :func:`pyg_unimol2.data.featurize.from_mol` for the output.
    """
    if name is None:
        name = smiles if isinstance(smiles, str) else 'xyz'
    mol = mol_from_xyz(z, pos, smiles=smiles, charge=charge, name=name)
    return from_mol(mol, name=name, remove_hs=remove_hs, max_atoms=max_atoms)


# --------------------------------------------------------------------------
# XYZ files.
# --------------------------------------------------------------------------
#: File endings read as XYZ files by :func:`read_xyz_frames`.
XYZ_SUFFIXES = ('.xyz', '.extxyz', '.xyz.gz', '.extxyz.gz')

#: Leading ``Properties=`` columns of an extended-XYZ frame that are read
#: (element or atomic number, then the coordinates).
_EXTXYZ_COLUMNS = ('species:S:1:pos:R:3', 'Z:I:1:pos:R:3')


class XYZFrame(NamedTuple):
    """One frame (molecule) of an XYZ file."""
    index: int  #: 0-based frame index in the file
    z: np.ndarray  #: atomic numbers ``[n]``
    pos: np.ndarray  #: coordinates ``[n, 3]`` (Angstrom)
    name: str  #: ``name=`` property, else the comment's other words
    properties: Dict[str, str]  #: ``key=value`` pairs of the comment line
    failure: Optional[str] = None  #: why the frame cannot be used

    def get(self, key: str) -> Optional[str]:
        """The property :obj:`key` (matched ignoring case), or
        :obj:`None`."""
        for k, value in self.properties.items():
            if k.lower() == key.lower():
                return value
        return None


def _comment(line: str) -> Tuple[Dict[str, str], List[str]]:
    """The ``key=value`` pairs of an (extended-XYZ) comment line, with
    quotes removed, and its other words."""
    try:
        tokens = shlex.split(line)
    except ValueError:  # an unbalanced quote: a free-text title
        return {}, line.split()
    properties, words = {}, []
    for token in tokens:
        key, eq, value = token.partition('=')
        if eq and key:
            properties[key] = value
        else:
            words.append(token)
    return properties, words


def _frame(index: int, comment: str, lines: List[str]) -> XYZFrame:
    properties, words = _comment(comment)
    empty = (np.zeros(0, np.int64), np.zeros((0, 3)))
    frame = XYZFrame(index, *empty, '', properties)
    frame = frame._replace(name=frame.get('name') or ' '.join(words))
    columns = frame.get('Properties')
    if columns is not None and not columns.startswith(_EXTXYZ_COLUMNS):
        return frame._replace(failure=(
            f'extended-XYZ Properties={columns} (expected '
            f'the element and the coordinates first: '
            f'{" or ".join(_EXTXYZ_COLUMNS)})'))
    pbc = (frame.get('pbc') or '').upper().split()
    lattice = frame.get('Lattice') is not None  # periodic unless pbc says
    if 'T' in pbc or (lattice and pbc != ['F', 'F', 'F']):
        return frame._replace(failure='periodic (a Lattice or pbc): not '
                              'supported by the Uni-Mol2 backbone')
    symbols, pos = [], []
    for k, line in enumerate(lines):
        fields = line.split()
        try:
            pos.append([float(v) for v in fields[1:4]])
            if len(fields) < 4:
                raise ValueError('fewer than 4 fields')
        except ValueError as e:
            return frame._replace(failure=(
                f'atom line {k + 1} {line.strip()!r} is not '
                f'"element x y z" ({e})'))
        symbols.append(int(fields[0]) if fields[0].isdigit() else fields[0])
    try:
        with rdBase.BlockLogs():
            z = _atomic_numbers(symbols, frame.name or f'frame #{index + 1}')
    except UnsupportedElementError as e:
        return frame._replace(failure=e.detail)
    return frame._replace(z=z, pos=np.asarray(pos, np.float64))


def read_xyz_frames(path: Union[str, Path]) -> Iterator[XYZFrame]:
    r"""The frames of an XYZ file, lazily: plain XYZ or extended XYZ, one
    frame or several, optionally gzipped.

    A frame is a count line (the number of atoms ``n``), a comment line and
    ``n`` lines ``element x y z`` (element symbol in any case, or atomic
    number; Angstrom; further columns are ignored). Blank lines between
    frames are skipped. The comment line's ``key=value`` pairs (extended
    XYZ; values may be quoted) are the frame's :attr:`XYZFrame.properties`;
    ``smiles=`` (a template for bond orders and charges), ``charge=`` (total
    charge) and ``name=`` are read by :func:`from_xyz_frame`, any other is a
    label (:class:`~pyg_unimol2.datasets.XYZDataset`). Without ``name=``,
    the comment's other words name the frame.

    A frame that cannot be used is yielded with :attr:`XYZFrame.failure`
    set: an atom line that is not ``element x y z``, an unknown element, an
    extended-XYZ ``Properties=`` that does not start with the element and
    the coordinates, a periodic frame (``Lattice=`` or ``pbc`` with ``T``),
    or a truncated last frame.

    Raises:
        InputError: a count line that is not a number of atoms (the file is
            not XYZ: later frames cannot be found), or a file that is not
            text, naming the file and the line.
    """
    path = Path(path)
    opener = gzip.open if path.name.lower().endswith('.gz') else open
    try:
        with opener(path, 'rt', encoding='utf-8-sig') as f:
            lines = enumerate(f, 1)
            index = 0
            for number, line in lines:
                if not line.strip():
                    continue
                count = line.strip()
                if not count.isdigit():
                    raise InputError(
                        f'{path}: line {number}: {count[:40]!r} is not the '
                        f'atom count of frame {index}; give an XYZ file (a '
                        f'count line, a comment line and one "element x y '
                        f'z" line per atom, for each frame)')
                block = [text for _, text in zip(range(int(count) + 1),
                                                  (t for _, t in lines))]
                if len(block) < int(count) + 1:
                    empty = (np.zeros(0, np.int64), np.zeros((0, 3)))
                    yield XYZFrame(index, *empty, '', {}, failure=(
                        f'truncated frame ({max(len(block) - 1, 0)} of '
                        f'{count} atom lines)'))
                    return
                yield _frame(index, block[0], block[1:])
                index += 1
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise InputError(f'{path}: cannot be read as an XYZ text file '
                         f'({e})') from None


def from_xyz_frame(frame: XYZFrame, *, remove_hs: bool = True,
                   max_atoms: int = 256) -> Data:
    r"""Featurizes a frame of :func:`read_xyz_frames` with its own
    coordinates, atoms in file order, as
    :class:`~pyg_unimol2.datasets.SDFDataset` does an SD record: the
    molecule of :func:`mol_from_xyz` (template: the ``smiles=`` property;
    total charge: ``charge=``), with stereo tags assigned from the 3D
    coordinates (``Chem.AssignStereochemistryFrom3D``, as RDKit does for a
    3D SD record), then :func:`~pyg_unimol2.data.featurize.from_mol`.
    Without ``smiles=`` the frame must hold every hydrogen: bonds and bond
    orders are perceived from the coordinates.

    Raises:
        FeaturizationError: the frame's failure, a ``charge=`` that is not
            an integer, more than :obj:`max_atoms` heavy atoms (before bond
            perception), or an error of :func:`mol_from_xyz` /
            :func:`~pyg_unimol2.data.featurize.from_mol`; each names the
            frame (its name, else ``frame #<index + 1>``).
    """
    label = frame.name or f'frame #{frame.index + 1}'
    if frame.failure is not None:
        raise FeaturizationError(label, frame.failure)
    raw = frame.get('charge')
    try:
        charge = None if raw is None else int(raw)
    except ValueError:
        raise FeaturizationError(label, f'charge={raw!r} is not an '
                                 f'integer') from None
    kept = int((frame.z != 1).sum()) if remove_hs else len(frame.z)
    if kept > max_atoms:
        raise TooManyAtomsError(label, f'{kept} > max_atoms={max_atoms}')
    mol = mol_from_xyz(frame.z, frame.pos, smiles=frame.get('smiles') or None,
                       charge=charge, name=label)
    Chem.AssignStereochemistryFrom3D(mol)
    return from_mol(mol, name=frame.name or None, remove_hs=remove_hs,
                    max_atoms=max_atoms)
