"""Batched prediction with a fine-tuned task model for molecules in a file:
SMILES lists (``.smi``/``.txt``), tables (``.csv``/``.tsv``, gzipped too)
and SD files (their conformers used as given)."""
import csv
import gzip
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from ..data.errors import FeaturizationError
from ..data.featurize import (Failure, FeaturizeResult, featurize_smiles,
                              from_mol, write_failures)
from ..errors import InputError, MissingFileError
from ..models.multitask import TaskModel

__all__ = ['read_smiles', 'read_molecules', 'predict_molecules',
           'write_predictions']

SDF_ENDINGS = ('.sdf', '.sd', '.sdf.gz', '.sd.gz')


def read_smiles(path: Union[str, Path],
                smiles_col: Optional[str] = None) -> List[str]:
    """SMILES from a ``.smi``/``.txt`` file (first whitespace-separated field
    of each line) or a table (``.csv``/``.tsv``, optionally gzipped; column
    :obj:`smiles_col`, else ``smiles`` in any case, else the first
    column).

    Raises:
        MissingFileError: no such file (a ``FileNotFoundError``).
        TaskError: the SMILES column is not in the table (naming the
            columns it has).
    """
    from ..datasets.tabular import read_table, resolve_column
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f'SMILES file {path}: no such file (check '
                               f'the path given to --smiles)')
    name = path.name.lower()
    if name.endswith(('.csv', '.tsv', '.csv.gz', '.tsv.gz')):
        header, rows, _ = read_table(str(path))
        if smiles_col is None:
            lower = [h.lower() for h in header]
            col = lower.index('smiles') if 'smiles' in lower else 0
        else:
            col = header.index(resolve_column(smiles_col, header, str(path)))
        return [row[col].strip() for row in rows]
    opener = gzip.open if name.endswith('.gz') else open
    try:
        with opener(path, 'rt') as f:
            return [line.split()[0] for line in f if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise InputError(f'SMILES file {path} cannot be read as text ({e}); '
                         f'give a .smi/.txt file with one SMILES per line '
                         f'or a .csv/.tsv table') from None


def _read_sdf(path: Path, max_atoms: int) -> Tuple[List[str], FeaturizeResult]:
    from rdkit import Chem, rdBase
    result, names = FeaturizeResult(), []
    opener = gzip.open if path.name.lower().endswith('.gz') else open
    with opener(path, 'rb') as f, rdBase.BlockLogs():
        for i, mol in enumerate(Chem.ForwardSDMolSupplier(f, removeHs=False)):
            if mol is None:
                names.append('')
                result.failures.append(Failure(i, '', f'record {i}: RDKit '
                                               f'could not read it'))
                continue
            name = mol.GetProp('_Name') if mol.HasProp('_Name') else ''
            try:
                data = from_mol(mol, name=name or None, max_atoms=max_atoms)
            except FeaturizationError as e:
                names.append(name)
                result.failures.append(Failure(i, name, f'record {i}: {e}'))
                continue
            names.append(data.smiles)
            result.data.append(data)
            result.indices.append(i)
    return names, result


def read_molecules(path: Union[str, Path], smiles_col: Optional[str] = None,
                   seed: int = 0, workers: Optional[int] = None,
                   max_atoms: int = 256) -> Tuple[List[str], FeaturizeResult]:
    """The molecules of a file, featurized: SMILES are embedded (ETKDG +
    MMFF, seeded), SD records keep their own conformer and atom order.

    Returns:
        (List[str], FeaturizeResult): one identifier per input entry (the
        SMILES, or an SD record's SMILES) and the featurized molecules with
        the failures (skipped, with reasons).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f'SMILES file {path}: no such file (check '
                               f'the path given to --smiles)')
    if path.name.lower().endswith(SDF_ENDINGS):
        return _read_sdf(path, max_atoms)
    smiles = read_smiles(path, smiles_col)
    return smiles, featurize_smiles(smiles, workers=workers, seed=seed,
                                    max_atoms=max_atoms)


@torch.no_grad()
def predict_molecules(model: TaskModel, result: FeaturizeResult,
                      dataset: Optional[str] = None, batch_size: int = 64,
                      device: str = 'cpu') -> Dict[str, torch.Tensor]:
    """Predictions of every task of :obj:`dataset` (default: the model's
    first) for the molecules of :obj:`result`, in their order: label units
    for regression, probabilities for classification."""
    dataset = dataset or model.default_dataset
    model = model.to(device).eval()
    tasks = model.groups[dataset]
    outputs: Dict[str, List[torch.Tensor]] = {t.name: [] for t in tasks}
    for batch in tqdm(DataLoader(result.data, batch_size=batch_size),
                      desc='predict', unit='batch'):
        for name, value in model.predict(batch.to(device), dataset).items():
            outputs[name].append(value.float().cpu())
    return {t.name: torch.cat(outputs[t.name]) if outputs[t.name] else
            torch.zeros(0, t.num_outputs) for t in tasks}


def _columns(model: TaskModel, dataset: str) -> List[str]:
    names = []
    for task in model.groups[dataset]:
        if task.level != 'molecule':
            continue
        if task.kind == 'multiclass':
            names += [f'{task.name}_prob_{c}' for c in task.classes]
        elif task.kind == 'regression':
            names += list(task.columns)
        else:
            names += [f'{c}_prob' for c in task.columns]
    return names


def write_predictions(path: Union[str, Path], identifiers: Sequence[str],
                      preds: Dict[str, torch.Tensor], result: FeaturizeResult,
                      model: TaskModel, dataset: Optional[str] = None
                      ) -> None:
    """Writes ``index,smiles`` and the molecule-level predictions (one column
    per regression target, ``<label>_prob`` per binary / multi-label
    column, ``<task>_prob_<class>`` per class) of the good molecules, and
    the failures next to it as ``<path>.failures.csv``."""
    dataset = dataset or model.default_dataset
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in model.groups[dataset] if t.level == 'molecule']
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['index', 'smiles', *_columns(model, dataset)])
        for row, i in enumerate(result.indices):
            values = [v for t in tasks for v in preds[t.name][row].tolist()]
            writer.writerow([i, identifiers[i], *(f'{v:.6g}' for v in values)])
    if result.failures:
        write_failures(result.failures, path.with_suffix('.failures.csv'))
