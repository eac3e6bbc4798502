r"""Vocabularies and integer codes of the official Uni-Mol2 featurization.

Two families of features are produced for every molecule:

* **OGB indices** (paper Tables 7 and 8): ``x`` ``[n, 9]`` is exactly
  :func:`ogb.utils.features.atom_to_feature_vector`, and ``edge_attr``
  ``[E, 3]`` indexes :data:`ogb.utils.features.allowable_features` like
  :func:`ogb.utils.features.bond_to_feature_vector` (see the stereo mapping
  below, where OGB raises).
* **Official codes**, the integers the official embedding tables are indexed
  with (``unimol2_dataset.get_graph_features``). Code ``0`` is padding and
  code ``1`` (``511`` for the shortest path) marks a dropped feature:

  ============= ============================================== ============
  code          value                                          dropped
  ============= ============================================== ============
  ``atom_feat`` ``v_k + 16 k + 3`` for field ``k = 0..7``      ``1``
                (Table 7 fields 1-8; the atomic number is not
                encoded)
  ``degree``    heavy-atom graph neighbours ``+ 2``            ``1``
  ``pair_feat`` bonded pair: ``[type + 4, stereo + 20,         ``1``
                conjugated + 36]``; any other pair, diagonal
                included: ``[2, 2, 2]``
  ``spd``       ``hops + 1``; unreachable pairs                ``511``
                :data:`UNREACHABLE_SPD` ``= 510``
  ``pair_type`` ``[a_i + 1, a_j + 129]`` with ``a`` the first  ``[2, 130]``
                ``atom_feat`` column: the chirality code, as
                in the official code, not the element
  ============= ============================================== ============

Unreachable pairs (salts, disconnected fragments) follow the official
training code (``510``); ``unimol_tools`` codes them ``511``, the official
"dropped" code.

The official vocabularies differ from OGB's only for chirality
(:data:`CHIRALITY_VOCAB`). The official code looks chirality and bond stereo
up exactly and raises on tags it does not know. Tags that modern RDKit emits
outside these vocabularies are mapped deterministically instead:

============================================== =================
RDKit tag                                      mapped to
============================================== =================
``CHI_TETRAHEDRAL``, ``CHI_ALLENE``, any other ``CHI_OTHER``
chirality tag outside :data:`CHIRALITY_VOCAB`
``STEREOATROPCW``, ``STEREOATROPCCW``, any     ``STEREOANY``
other stereo tag outside
:data:`BOND_STEREO_VOCAB`
============================================== =================

Hybridizations outside the vocabulary (``S``, ``SP2D``, ``UNSPECIFIED``,
``OTHER``) fall into ``misc`` in both conventions, as in the official code.
"""
from typing import List, Tuple

import numpy as np
from ogb.utils.features import allowable_features, atom_to_feature_vector
from rdkit import Chem

#: Official chirality vocabulary (differs from OGB's).
CHIRALITY_VOCAB: Tuple[str, ...] = (
    'CHI_UNSPECIFIED',
    'CHI_TETRAHEDRAL_CW',
    'CHI_TETRAHEDRAL_CCW',
    'CHI_TRIGONALBIPYRAMIDAL',
    'CHI_OCTAHEDRAL',
    'CHI_SQUAREPLANAR',
    'CHI_OTHER',
)
#: Bond stereo vocabulary (official = OGB).
BOND_STEREO_VOCAB: Tuple[str, ...] = tuple(
    allowable_features['possible_bond_stereo_list'])
#: Chirality and stereo tags that unknown RDKit tags are mapped to.
UNKNOWN_CHIRALITY = 'CHI_OTHER'
UNKNOWN_STEREO = 'STEREOANY'

#: Atom token vocabulary: atomic numbers ``1..118``, ``0`` padding,
#: ``127`` mask.
NUM_TOKENS = 128
PAD_TOKEN = 0
MASK_TOKEN = 127
MAX_ATOMIC_NUM = 118

#: Width of one field in the official single-table encodings.
FIELD_WIDTH = 16
#: Official shortest-path code of pairs in different fragments (hops
#: sentinel ``509``, stored ``+ 1``).
UNREACHABLE_SPD = 510
#: Official codes of dropped features.
DROPPED_ATOM_FEAT = 1
DROPPED_DEGREE = 1
DROPPED_PAIR_FEAT = 1
DROPPED_SPD = 511
DROPPED_PAIR_TYPE = (2, 130)
#: Official pair code of a non-bonded pair (diagonal included).
NO_BOND_PAIR_FEAT = 2

_ATOM_OFFSETS = np.arange(8) * FIELD_WIDTH + 3
_BOND_OFFSETS = np.arange(3) * FIELD_WIDTH + 4
_CHIRALITY_INDEX = {tag: i for i, tag in enumerate(CHIRALITY_VOCAB)}
_BOND_TYPES = allowable_features['possible_bond_type_list']


def chirality_tag(atom: Chem.Atom) -> str:
    """Name of the chiral tag of :obj:`atom`, mapped into
    :data:`CHIRALITY_VOCAB` (unknown tags become ``CHI_OTHER``)."""
    tag = str(atom.GetChiralTag())
    return tag if tag in _CHIRALITY_INDEX else UNKNOWN_CHIRALITY


def bond_stereo_tag(bond: Chem.Bond) -> str:
    """Name of the stereo tag of :obj:`bond`, mapped into
    :data:`BOND_STEREO_VOCAB` (unknown tags become ``STEREOANY``)."""
    tag = str(bond.GetStereo())
    return tag if tag in BOND_STEREO_VOCAB else UNKNOWN_STEREO


def bond_features(bond: Chem.Bond) -> List[int]:
    """OGB bond feature indices ``[type, stereo, conjugated]`` of
    :obj:`bond` (paper Table 8), with the stereo mapping of this module."""
    bond_type = str(bond.GetBondType())
    type_index = (_BOND_TYPES.index(bond_type) if bond_type in _BOND_TYPES
                  else len(_BOND_TYPES) - 1)
    return [
        type_index,
        BOND_STEREO_VOCAB.index(bond_stereo_tag(bond)),
        int(bond.GetIsConjugated()),
    ]


def ogb_atom_features(mol: Chem.Mol) -> np.ndarray:
    """OGB atom feature indices of every atom of :obj:`mol`, ``[n, 9]``
    int64 (:func:`ogb.utils.features.atom_to_feature_vector`)."""
    rows = [atom_to_feature_vector(atom) for atom in mol.GetAtoms()]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 9)


def official_atom_fields(mol: Chem.Mol, x: np.ndarray) -> np.ndarray:
    """Official raw indices of Table 7 fields 1-8, ``[n, 8]`` int64.

    The official vocabularies equal OGB's except for chirality, so fields
    2-8 are taken from the OGB features :obj:`x` ``[n, 9]`` of :obj:`mol`.
    """
    fields = x[:, 1:].copy()
    fields[:, 0] = [_CHIRALITY_INDEX[chirality_tag(a)] for a in mol.GetAtoms()]
    return fields


def atom_feat_codes(fields: np.ndarray) -> np.ndarray:
    """Official ``atom_feat`` codes ``[n, 8]`` from raw indices ``[n, 8]``:
    ``v + 16 k + 3`` for field ``k``."""
    return fields + _ATOM_OFFSETS


def degree_codes(edge_index: np.ndarray, num_atoms: int) -> np.ndarray:
    """Official ``degree`` codes ``[n]``: graph neighbours ``+ 2``, from the
    directed bonds :obj:`edge_index` ``[2, E]``."""
    return np.bincount(edge_index[0], minlength=num_atoms) + 2


def pair_feat_codes(edge_index: np.ndarray, edge_attr: np.ndarray,
                    num_atoms: int) -> np.ndarray:
    """Official per-pair bond codes ``[n, n, 3]`` uint8 from the directed
    bonds :obj:`edge_index` ``[2, E]`` and their OGB features
    :obj:`edge_attr` ``[E, 3]``."""
    out = np.full((num_atoms, num_atoms, 3), NO_BOND_PAIR_FEAT, np.uint8)
    out[edge_index[0], edge_index[1]] = edge_attr + _BOND_OFFSETS
    return out


def spd_codes(distance: np.ndarray) -> np.ndarray:
    """Official shortest-path codes ``[n, n]`` int16 from topological
    distances ``[n, n]`` (any value ``>= 509``, e.g. RDKit's ``1e8``, means
    unreachable): ``hops + 1``, unreachable pairs :data:`UNREACHABLE_SPD`."""
    return (np.minimum(distance, UNREACHABLE_SPD - 1) + 1).astype(np.int16)


def pair_type_codes(atom_feat: np.ndarray) -> np.ndarray:
    """Official pair-type codes ``[n, n, 2]`` uint8 from the official
    ``atom_feat`` codes ``[n, 8]``: ``[a_i + 1, a_j + 129]`` with
    ``a = atom_feat[:, 0]``."""
    a = atom_feat[:, 0]
    n = a.shape[0]
    out = np.empty((n, n, 2), np.uint8)
    out[..., 0] = (a + 1)[:, None]
    out[..., 1] = (a + 129)[None, :]
    return out


def dropped_codes(num_atoms: int) -> Tuple[np.ndarray, ...]:
    """Official codes of a molecule whose graph features are dropped:
    ``atom_feat`` ``[n, 8]``, ``degree`` ``[n]``, ``pair_feat``
    ``[n, n, 3]``, ``spd`` ``[n, n]`` and ``pair_type`` ``[n, n, 2]``."""
    n = num_atoms
    pair_type = np.empty((n, n, 2), np.uint8)
    pair_type[...] = DROPPED_PAIR_TYPE
    return (
        np.full((n, 8), DROPPED_ATOM_FEAT, np.int64),
        np.full(n, DROPPED_DEGREE, np.int64),
        np.full((n, n, 3), DROPPED_PAIR_FEAT, np.uint8),
        np.full((n, n), DROPPED_SPD, np.int16),
        pair_type,
    )
