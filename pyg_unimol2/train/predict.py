"""Batched property prediction for a list of SMILES with a fine-tuned model."""
import csv
from pathlib import Path
from typing import List, Sequence, Union

import torch
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from ..data.featurize import FeaturizeResult, featurize_smiles, write_failures
from ..models.regressor import UniMol2Regressor


def read_smiles(path: Union[str, Path]) -> List[str]:
    """SMILES from a ``.smi``/``.txt`` file (first whitespace-separated field
    of each line) or a ``.csv`` file (column ``smiles``/``SMILES``, else the
    first column)."""
    path = Path(path)
    with open(path, newline='') as f:
        if path.suffix == '.csv':
            reader = csv.reader(f)
            header = next(reader)
            lower = [h.strip().lower() for h in header]
            col = lower.index('smiles') if 'smiles' in lower else 0
            return [row[col].strip() for row in reader if row]
        return [line.split()[0] for line in f if line.strip()]


@torch.no_grad()
def predict_smiles(model: UniMol2Regressor, smiles: Sequence[str],
                   batch_size: int = 64, workers: int = None, seed: int = 0,
                   device: str = 'cpu') -> tuple:
    """Featurizes :obj:`smiles` (bad ones skipped and reported) and predicts.

    Returns:
        (Tensor, FeaturizeResult): predictions ``[num_good, T]`` in target
        units, in the order of ``result.indices``, and the featurization
        result with its failures.
    """
    result: FeaturizeResult = featurize_smiles(smiles, workers=workers,
                                               seed=seed)
    model = model.to(device).eval()
    preds = [model.predict(batch.to(device)).cpu() for batch in tqdm(
        DataLoader(result.data, batch_size=batch_size), desc='predict',
        unit='batch')]
    num_targets = len(model.target_names)
    return (torch.cat(preds) if preds else torch.empty(0, num_targets)), result


def write_predictions(path: Union[str, Path], smiles: Sequence[str],
                      preds: torch.Tensor, result: FeaturizeResult,
                      target_names: Sequence[str]) -> None:
    """Writes ``index,smiles,<targets...>`` rows for the good molecules, and
    the failures next to it as ``<path>.failures.csv``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['index', 'smiles', *target_names])
        for i, row in zip(result.indices, preds.tolist()):
            writer.writerow([i, smiles[i], *(f'{v:.6g}' for v in row)])
    if result.failures:
        write_failures(result.failures, path.with_suffix('.failures.csv'))
