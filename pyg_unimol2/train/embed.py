r"""Molecule and atom representations of a trained Uni-Mol2 written to HDF5.

Layout of the output file (ragged per-atom arrays with offsets, no pickled
objects)::

    index         [M]         int64    line of the molecule in the input
    smiles        [M]         str      input SMILES
    cls           [M, E]      float32  molecule (CLS) representation
    atom_offsets  [M + 1]     int64    atoms of molecule m: rows
                                       atom_offsets[m]:atom_offsets[m + 1]
    atoms         [A, E]      float32  atom representations (heavy atoms)
    z             [A]         int16    atomic numbers
    pos           [A, 3]      float32  the conformer the model saw (Angstrom)

Attributes: ``checkpoint``, ``config`` (JSON), ``seed``, ``num_failures``.
Molecules that cannot be featurized are skipped and listed in
``<out>.failures.csv`` (index, SMILES, reason).
"""
import json
from pathlib import Path
from typing import Iterator, List, Sequence, Union

import h5py
import numpy as np
import torch
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from ..data.dense import to_dense
from ..data.featurize import Failure, featurize_smiles, write_failures
from ..checkpoints import load_backbone
from ..models.unimol2 import UniMol2


def load_encoder(checkpoint: Union[str, Path, dict]) -> UniMol2:
    r"""The :class:`UniMol2` encoder of a checkpoint of any format (see
    :mod:`pyg_unimol2.checkpoints.formats`), its architecture taken from
    the checkpoint."""
    return load_backbone(checkpoint)


def _chunks(items: Sequence, size: int) -> Iterator[range]:
    for start in range(0, len(items), size):
        yield range(start, min(start + size, len(items)))


class _RaggedWriter:
    """Appends rows to resizable HDF5 datasets."""
    def __init__(self, f: h5py.File, dim: int):
        string = h5py.string_dtype()
        specs = {'index': ((), 'i8'), 'smiles': ((), string),
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
def embed_smiles(checkpoint: Union[str, Path], smiles: Sequence[str],
                 out: Union[str, Path], batch_size: int = 64,
                 workers: int = None, seed: int = 0, device: str = 'cpu',
                 chunk: int = 4096, progress: bool = True) -> List[Failure]:
    r"""Featurizes :obj:`smiles` (ETKDGv3 + MMFF conformers, seeded) and
    writes the CLS and atom representations of the encoder in
    :obj:`checkpoint` to the HDF5 file :obj:`out` (layout in the module
    docstring). Work proceeds in chunks of :obj:`chunk` molecules, so memory
    does not grow with the input.

    Returns:
        List[Failure]: the skipped molecules (also written next to
        :obj:`out` as ``.failures.csv`` when there are any).
    """
    model = load_encoder(checkpoint).to(device).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    failures: List[Failure] = []
    with h5py.File(out, 'w') as f, tqdm(total=len(smiles), unit='mol',
                                        desc='embed',
                                        disable=not progress) as bar:
        f.attrs.update(checkpoint=str(checkpoint), seed=seed,
                       config=json.dumps(model.config.to_dict()))
        writer = _RaggedWriter(f, model.config.embed_dim)
        for rows in _chunks(smiles, chunk):
            result = featurize_smiles([smiles[i] for i in rows],
                                      workers=workers, seed=seed,
                                      progress=False)
            failures += [fail._replace(index=rows[fail.index])
                         for fail in result.failures]
            indices = iter(result.indices)
            for batch in DataLoader(result.data, batch_size=batch_size):
                dense = to_dense(batch.to(device))
                output = model(dense, compute_pos=False)
                mask = output.atom_mask
                counts = mask.sum(dim=1).cpu().numpy()
                index = [rows[next(indices)] for _ in counts]
                writer.append('index', np.array(index))
                writer.append('smiles', [smiles[i] for i in index])
                writer.append('cls', output.cls.float().cpu().numpy())
                writer.append('atoms', output.atoms[mask].float().cpu()
                              .numpy())
                writer.append('z', dense.token[mask].cpu().numpy())
                writer.append('pos', dense.pos[mask].float().cpu().numpy())
                writer.offsets += (writer.offsets[-1]
                                   + np.cumsum(counts)).tolist()
            bar.update(len(rows))
        f.create_dataset('atom_offsets',
                         data=np.asarray(writer.offsets, dtype=np.int64))
        f.attrs['num_failures'] = len(failures)
    if failures:
        write_failures(failures, out.with_suffix('.failures.csv'))
    return failures
