"""One training run of a Uni-Mol2 preset or a baseline on a split, under a
wall-clock budget: every model goes through
:func:`pyg_unimol2.train.finetune.finetune` (the one training loop), the
baselines with their own learning rates."""
from dataclasses import replace
from typing import Dict, List

from torch_geometric.data import Dataset

from ..data.splits import Split
from ..tasks import Task
from ..train.finetune import FinetuneConfig, TaskData, finetune

#: Learning rates of the baselines (their papers' / common QM9 settings).
BASELINE_LR = {'schnet': 5e-4, 'dimenet++': 1e-3, 'fingerprint': 1e-3}


def run_model(model: str, dataset: Dataset, split: Split,
              target_names: List[str], config: FinetuneConfig
              ) -> Dict[str, object]:
    """Runs ``'unimol2'`` or a baseline with :obj:`config` on the regression
    targets :obj:`target_names` (the columns of ``y``), writing
    ``results.json`` into :obj:`config.out`."""
    if model != 'unimol2':
        config = replace(config, model=model, lr=BASELINE_LR[model],
                         conformers=1, drop_feat=False, pretrained=None)
    tasks = [Task(name=t) for t in target_names]
    return finetune(TaskData('data', dataset, split, tasks), config)
