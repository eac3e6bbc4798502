r"""Molecule and atom representations of a trained Uni-Mol2 written to HDF5,
for the molecules of any input file (read by :mod:`pyg_unimol2.train.inputs`:
SMILES lists, tables, SD and XYZ files; SD and XYZ atoms in file order).

Layout of the output file (ragged per-atom arrays with offsets, no pickled
objects)::

    index         [M]         int64    input entry of the molecule (0-based
                                       line, row, SD record or XYZ frame)
    smiles        [M]         str      input SMILES (SD / XYZ: canonical
                                       SMILES of the record)
    name          [M]         str      name given in the file, or ''
    cls           [M, E]      float32  molecule (CLS) representation
    atom_offsets  [M + 1]     int64    atoms of molecule m: rows
                                       atom_offsets[m]:atom_offsets[m + 1]
    atoms         [A, E]      float32  atom representations (heavy atoms)
    z             [A]         int16    atomic numbers
    pos           [A, 3]      float32  the conformer the model saw (Angstrom)

Attributes: ``checkpoint``, ``config`` (JSON), ``num_failures``,
``num_cropped`` and those the caller gives (the command line: ``input``,
``seed``, ``max_atoms``, ``crop``). Molecules that cannot be featurized are
skipped and listed in ``<out>.failures.csv`` (index, SMILES, reason),
cropped ones in ``<out>.cropped.csv``.
"""
import json
from pathlib import Path
from typing import Dict, Iterable, Optional, Union

import h5py
import numpy as np
import torch
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from ..data.dense import to_dense
from ..checkpoints import load_backbone
from ..models.unimol2 import UniMol2
from .inputs import MoleculeInputs


def load_encoder(checkpoint: Union[str, Path, dict]) -> UniMol2:
    r"""The :class:`UniMol2` encoder of a checkpoint of any format (see
    :mod:`pyg_unimol2.checkpoints.formats`), its architecture taken from
    the checkpoint."""
    return load_backbone(checkpoint)


class _RaggedWriter:
    """Appends rows to resizable HDF5 datasets."""
    def __init__(self, f: h5py.File, dim: int):
        string = h5py.string_dtype()
        specs = {'index': ((), 'i8'), 'smiles': ((), string),
                 'name': ((), string),
                 'cls': ((dim, ), 'f4'), 'atoms': ((dim, ), 'f4'),
                 'z': ((), 'i2'), 'pos': ((3, ), 'f4')}
        self.sets = {
            name: f.create_dataset(name, (0, ) + shape, dtype=dtype,
                                   maxshape=(None, ) + shape,
                                   chunks=(256, ) + shape)
            for name, (shape, dtype) in specs.items()}
        self.offsets = [0]

    def append(self, name: str, rows: np.ndarray) -> None:
        ds = self.sets[name]
        start = ds.shape[0]
        ds.resize(start + len(rows), axis=0)
        ds[start:] = rows


@torch.no_grad()
def embed_molecules(checkpoint: Union[str, Path],
                    chunks: Iterable[MoleculeInputs], out: Union[str, Path],
                    batch_size: int = 64, device: str = 'cpu',
                    progress: bool = True,
                    attrs: Optional[Dict[str, object]] = None
                    ) -> MoleculeInputs:
    r"""Writes the CLS and atom representations of the encoder in
    :obj:`checkpoint` for the molecules of :obj:`chunks` (e.g.
    :func:`~pyg_unimol2.train.inputs.iter_molecules` with a ``chunk``
    size, so that memory does not grow with the input) to the HDF5 file
    :obj:`out` (layout in the module docstring), with :obj:`attrs` as file
    attributes.

    Returns:
        MoleculeInputs: the input indices of the molecules written (no
        molecules) and the skipped and cropped ones of all chunks, for
        :func:`~pyg_unimol2.train.inputs.write_input_report`.
    """
    model = load_encoder(checkpoint).to(device).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = MoleculeInputs()
    try:
        _write(model, chunks, out, batch_size, device, progress,
               {'checkpoint': str(checkpoint), **(attrs or {})}, report)
    except BaseException:  # e.g. a broken record: no half-written file
        out.unlink(missing_ok=True)
        raise
    return report


def _write(model: UniMol2, chunks: Iterable[MoleculeInputs], out: Path,
           batch_size: int, device: str, progress: bool,
           attrs: Dict[str, object], report: MoleculeInputs) -> None:
    """The work of :func:`embed_molecules`, which removes :obj:`out` when
    it fails."""
    with h5py.File(out, 'w') as f, tqdm(unit='mol', desc='embed',
                                        disable=not progress) as bar:
        f.attrs.update(config=json.dumps(model.config.to_dict()), **attrs)
        writer = _RaggedWriter(f, model.config.embed_dim)
        for part in chunks:
            report.kind, bar.total = part.kind, part.total
            report.result.indices += part.result.indices
            report.result.failures += part.result.failures
            report.cropped += part.cropped
            molecules = part.result.data
            indices = iter(part.result.indices)
            for batch in DataLoader(molecules, batch_size=batch_size):
                dense = to_dense(batch.to(device))
                output = model(dense, compute_pos=False)
                mask = output.atom_mask
                counts = mask.sum(dim=1).cpu().numpy()
                writer.append('index', np.array([next(indices)
                                                 for _ in counts]))
                writer.append('smiles', list(batch.smiles))
                writer.append('name', list(batch.name))
                writer.append('cls', output.cls.float().cpu().numpy())
                writer.append('atoms', output.atoms[mask].float().cpu()
                              .numpy())
                writer.append('z', dense.token[mask].cpu().numpy())
                writer.append('pos', dense.pos[mask].float().cpu().numpy())
                writer.offsets += (writer.offsets[-1]
                                   + np.cumsum(counts)).tolist()
            bar.update(len(molecules) + len(part.result.failures))
        f.create_dataset('atom_offsets',
                         data=np.asarray(writer.offsets, dtype=np.int64))
        f.attrs['num_failures'] = len(report.result.failures)
        f.attrs['num_cropped'] = len(report.cropped)
