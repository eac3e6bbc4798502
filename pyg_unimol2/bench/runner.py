"""One training run of a Uni-Mol2 preset or a baseline on a split, under a
wall-clock budget, returning the test MAE per target.

Uni-Mol2 runs through :func:`pyg_unimol2.train.finetune.finetune`. Baselines
run through :func:`train_baseline`, which mirrors it: AdamW, linear warmup and
decay (following steps or the clock, whichever is further along),
standardised targets, smooth-L1 loss, best-validation selection, and the same
budget accounting (validation included).
"""
import copy
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter
from torch_geometric.data import Data, Dataset
from torch_geometric.loader import DataLoader

from ..data.splits import Split
from ..train.finetune import FinetuneConfig, finetune, lr_lambda
from .baselines import build_baseline, morgan_fingerprints

#: Learning rates of the baselines (their papers' / common QM9 settings).
BASELINE_LR = {'schnet': 5e-4, 'dimenet++': 1e-3, 'fingerprint': 1e-3}


def _baseline_items(dataset: Dataset, index, with_fp: bool) -> List[Data]:
    items = [dataset[int(i)] for i in index]
    fps = morgan_fingerprints([d.smiles for d in items]) if with_fp else None
    return [Data(z=d.z, pos=d.pos, y=d.y,
                 **({} if fps is None else dict(fp=fps[k:k + 1])))
            for k, d in enumerate(items)]


@torch.no_grad()
def _mae(model: torch.nn.Module, loader: DataLoader, mean: torch.Tensor,
         std: torch.Tensor) -> torch.Tensor:
    model.eval()
    err, count = 0.0, 0
    for batch in loader:
        batch = batch.to(mean.device)
        err = err + ((model(batch) * std + mean) - batch.y).abs().sum(0)
        count += batch.num_graphs
    return err / count


def train_baseline(name: str, dataset: Dataset, split: Split,
                   target_names: List[str], *, epochs: int = 1000,
                   budget_minutes: Optional[float] = None,
                   batch_size: int = 32, lr: Optional[float] = None,
                   warmup_ratio: float = 0.06, seed: int = 0,
                   device: str = 'cpu',
                   out: str = 'runs/baseline') -> Dict[str, object]:
    """Trains the baseline :obj:`name` (see
    :data:`~pyg_unimol2.bench.baselines.BASELINES`) and reports test MAE in
    target units, in the format of :func:`finetune`'s results."""
    torch.manual_seed(seed)
    lr = BASELINE_LR[name] if lr is None else lr
    with_fp = name == 'fingerprint'
    sets = {k: _baseline_items(dataset, split[k], with_fp)
            for k in ('train', 'valid', 'test')}
    loaders = {k: DataLoader(v, batch_size=batch_size, shuffle=k == 'train')
               for k, v in sets.items()}
    y = torch.cat([d.y for d in sets['train']]).to(device)
    mean, std = y.mean(0), y.std(0).clamp_min(1e-12)
    model = build_baseline(name, len(target_names)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr,
                                  weight_decay=1e-4)
    total = epochs * len(loaders['train'])
    warmup = max(1, int(warmup_ratio * total))
    budget = math.inf if budget_minutes is None else 60 * budget_minutes
    writer = SummaryWriter(out)
    best, best_state, best_epoch, step = math.inf, None, 0, 0
    start = time.time()
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in loaders['train']:
            batch = batch.to(device)
            progress = max(step, total * (time.time() - start) / budget)
            for group in optimizer.param_groups:
                group['lr'] = lr * lr_lambda(progress, warmup, total)
            loss = F.smooth_l1_loss(model(batch), (batch.y - mean) / std)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            step += 1
            writer.add_scalar('train/loss', loss.item(), step)
            if time.time() - start > budget:
                break
        valid = _mae(model, loaders['valid'], mean, std)
        for t, v in zip(target_names, valid.tolist()):
            writer.add_scalar(f'valid_mae/{t}', v, epoch)
        score = (valid / std).mean().item()
        if score < best:
            best, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        if time.time() - start > budget:
            break
    model.load_state_dict(best_state)
    test = _mae(model, loaders['test'], mean, std)
    writer.close()
    return dict(targets=target_names, best_epoch=best_epoch,
                test_mae=dict(zip(target_names, test.tolist())),
                epochs_run=epoch, steps=step, seconds=time.time() - start,
                parameters=sum(p.numel() for p in model.parameters()))


def run_model(model: str, dataset: Dataset, split: Split,
              target_names: List[str], config: FinetuneConfig
              ) -> Dict[str, object]:
    """Runs ``'unimol2'`` (with :obj:`config`) or a baseline (with the
    budget, epochs, batch size, seed and output folder of :obj:`config`),
    writing ``results.json`` into :obj:`config.out`."""
    Path(config.out).mkdir(parents=True, exist_ok=True)
    if model == 'unimol2':
        return finetune(dataset, split, target_names, config)
    results = train_baseline(
        model, dataset, split, target_names, epochs=config.epochs,
        budget_minutes=config.max_minutes, batch_size=config.batch_size,
        warmup_ratio=config.warmup_ratio, seed=config.seed,
        device=config.device, out=config.out)
    results['config'] = dict(asdict(config), model=model)
    (Path(config.out) / 'results.json').write_text(json.dumps(results,
                                                              indent=2))
    return results
