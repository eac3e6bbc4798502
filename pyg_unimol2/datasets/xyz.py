r"""A user's own labelled molecules with their own geometries, from an XYZ
file (:class:`XYZDataset`): labels are the ``key=value`` properties of each
frame's comment line (extended XYZ).

Labels, the report of skipped frames and bad labels, duplicate detection and
caching are those of :class:`~pyg_unimol2.datasets.tabular.TabularDataset`
(shared in :class:`~pyg_unimol2.datasets.tabular.LabelledMoleculeDataset`).
"""
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from tqdm import tqdm

from ..data.xyz import XYZ_SUFFIXES, from_xyz_frame, read_xyz_frames
from ..errors import InputError
from ..tasks import Task
from .sdf import atom_map_or_reason
from .tabular import LabelledMoleculeDataset, Record, resolve_column

__all__ = ['XYZDataset']


class XYZDataset(LabelledMoleculeDataset):
    r"""Labelled molecules from an XYZ file (plain or extended, one frame
    per molecule, optionally gzipped), each featurized with its own
    coordinates (no re-embedding) by
    :func:`~pyg_unimol2.data.xyz.from_xyz_frame`: bonds from the frame's
    ``smiles=`` template, else perceived from the coordinates (the frame
    must then hold every hydrogen); total charge ``charge=``; stereo from
    3D. Atoms keep the file's order (heavy atoms in file order with
    :obj:`remove_hs`).

    Labels are the properties of the frame's comment line, e.g.

    .. code-block:: text

        3
        name=water energy=-76.4 charges="-0.8 0.4 0.4" smiles=O
        O  0.000 0.000 0.000
        ...

    A molecule-level task's column is a property name (matched exactly,
    else ignoring case); an atom-level property holds one value per atom
    **of the frame**, in file order, separated by whitespace or ``;`` (so
    quoted). A frame without the property has a missing label.

    Each item also has ``idx`` ``[1]`` (0-based frame index), ``smiles``
    (canonical SMILES without hydrogens), ``name`` (the ``name=`` property,
    else the comment's other words) and ``split_tag`` (the
    :obj:`split_prop` property or ``''``).

    **Skipped frames** (see :func:`~pyg_unimol2.data.xyz.read_xyz_frames`
    and :func:`~pyg_unimol2.data.xyz.from_xyz_frame`) are listed in
    :attr:`report` with their frame index (column ``row``). Bad labels,
    duplicates, caching and :attr:`tasks` behave as in
    :class:`~pyg_unimol2.datasets.tabular.TabularDataset`.

    Args:
        root (str): folder for ``processed/``.
        path (str): the XYZ file.
        tasks (Sequence[Task]): the tasks; :attr:`Task.columns` are
            property names.
        remove_hs (bool): drop hydrogens. (default: :obj:`True`)
        split_prop (str, optional): property stored as ``split_tag``.
        max_atoms (int): larger molecules are skipped. (default: :obj:`256`)
        progress (bool): progress bar. (default: :obj:`True`)
        transform, pre_transform, pre_filter, force_reload, log: see
            :class:`~torch_geometric.data.InMemoryDataset`.
    """

    def __init__(self, root: str, path: str,
                 tasks: Sequence[Union[Task, Dict]], *,
                 remove_hs: bool = True, split_prop: Optional[str] = None,
                 max_atoms: int = 256, progress: bool = True,
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None,
                 force_reload: bool = False, log: bool = True) -> None:
        if not str(path).lower().endswith(XYZ_SUFFIXES):
            raise InputError(f'{path}: not an XYZ file (expected one of '
                             f'{", ".join(XYZ_SUFFIXES)})')
        self.split_prop = split_prop
        super().__init__(root, path, tasks, remove_hs=remove_hs,
                         max_atoms=max_atoms, progress=progress,
                         transform=transform, pre_transform=pre_transform,
                         pre_filter=pre_filter, force_reload=force_reload,
                         log=log)

    def _cache_options(self) -> Dict:
        return {'format': 'xyz', 'split_prop': self.split_prop}

    def _read(self) -> Tuple[List[Record], List[str]]:
        source = osp.basename(self.path)
        frames = list(read_xyz_frames(self.path))
        props = sorted({p for f in frames for p in f.properties})

        def prop(name: str) -> str:
            return resolve_column(name, props, source, 'XYZ property',
                                  'XYZ comment-line properties')

        task_props = [prop(c) for t in self._declared for c in t.columns]
        split_prop = prop(self.split_prop) if self.split_prop else None
        records = [Record(
            row=f.index, name=f.name,
            split_tag=f.properties.get(split_prop, '').strip()
            if split_prop else '',
            cells={p: f.properties.get(p, '') for p in task_props},
            failure=f.failure, payload=f, n_atoms=len(f.z))
            for f in frames]
        return records, task_props

    def _featurize(self, records: List[Record]):
        from rdkit import rdBase
        out = []
        for record in tqdm(records, unit='mol', desc='Featurizing',
                           disable=not self.progress):
            frame = record.payload
            try:
                with rdBase.BlockLogs():
                    data = from_xyz_frame(frame, remove_hs=self.remove_hs,
                                          max_atoms=self.max_atoms)
            except Exception as e:  # FeaturizationError or RDKit errors
                out.append(str(e))
                continue
            record.smiles = data.smiles
            record.payload = None  # Free the frame.
            out.append(atom_map_or_reason(data, frame.z.tolist(),
                                          self.remove_hs))
        return out

    def _atom_unit(self) -> str:
        return 'atom of the XYZ frame, in file order'
