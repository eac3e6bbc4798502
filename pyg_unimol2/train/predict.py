"""Batched prediction with a fine-tuned task model for the molecules of an
input file (read by :mod:`pyg_unimol2.train.inputs`: SMILES lists, tables,
SD and XYZ files), averaged over conformers when there are several."""
import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from ..models.multitask import TaskModel
from .conformers import average_by_molecule
from .inputs import MoleculeInputs, write_input_report

__all__ = ['predict_molecules', 'write_predictions']


@torch.no_grad()
def predict_molecules(model: TaskModel, molecules: Sequence[Data],
                      dataset: Optional[str] = None, batch_size: int = 64,
                      device: str = 'cpu', progress: bool = True
                      ) -> Dict[str, torch.Tensor]:
    """Predictions of every task of :obj:`dataset` (default: the model's
    first) for :obj:`molecules`: label units for regression, probabilities
    for classification. Items that carry ``mol`` (the conformers of
    :func:`~pyg_unimol2.train.inputs.conformer_views`) are averaged per
    molecule, as fine-tuning evaluation does
    (:func:`~pyg_unimol2.train.conformers.average_by_molecule`), and so are
    atom-level predictions per atom; rows follow the molecules (and their
    atoms) in order."""
    dataset = dataset or model.default_dataset
    model = model.to(device).eval()
    tasks = model.groups[dataset]
    outputs: Dict[str, List[torch.Tensor]] = {t.name: [] for t in tasks}
    keys: Dict[str, List[torch.Tensor]] = {'molecule': [], 'atom': []}
    offset = 0
    for batch in tqdm(DataLoader(list(molecules), batch_size=batch_size),
                      desc='predict', unit='batch', disable=not progress):
        mol = batch.mol if 'mol' in batch else \
            offset + torch.arange(batch.num_graphs)
        offset += batch.num_graphs
        atom = torch.arange(batch.num_nodes) - batch.ptr[batch.batch]
        keys['molecule'].append(mol)
        keys['atom'].append(torch.stack([mol[batch.batch], atom], dim=1))
        for name, value in model.predict(batch.to(device), dataset).items():
            outputs[name].append(value.float().cpu())
    out = {}
    for task in tasks:
        if not outputs[task.name]:
            out[task.name] = torch.zeros(0, task.num_outputs)
            continue
        key = torch.cat(keys[task.level])
        _, group = torch.unique(key, dim=0, return_inverse=True)
        out[task.name] = average_by_molecule(torch.cat(outputs[task.name]),
                                             group)
    return out


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


def write_predictions(path: Union[str, Path], inputs: MoleculeInputs,
                      preds: Dict[str, torch.Tensor], model: TaskModel,
                      dataset: Optional[str] = None) -> List[str]:
    """Writes ``index,smiles`` (``index,smiles,name`` when the file names
    its molecules) and the molecule-level predictions (one column per
    regression target, ``<label>_prob`` per binary / multi-label column,
    ``<task>_prob_<class>`` per class) of the molecules of :obj:`inputs`,
    and the skipped and cropped ones next to it
    (:func:`~pyg_unimol2.train.inputs.write_input_report`).

    Returns:
        List[str]: the report lines to print.
    """
    dataset = dataset or model.default_dataset
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in model.groups[dataset] if t.level == 'molecule']
    molecules = inputs.result.data
    named = any(d.name for d in molecules)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['index', 'smiles', *(['name'] if named else []),
                         *_columns(model, dataset)])
        for row, (i, data) in enumerate(zip(inputs.result.indices,
                                            molecules)):
            values = [v for t in tasks for v in preds[t.name][row].tolist()]
            writer.writerow([i, data.smiles, *([data.name] if named else []),
                             *(f'{v:.6g}' for v in values)])
    return write_input_report(inputs, path)
