"""Fine-tuning Uni-Mol2 on molecular property regression.

The recipe follows the paper and the official fine-tuning task: AdamW,
linear warmup then linear (polynomial, power 1) decay, gradient clipping at
1.0, standardised targets, smooth-L1 (or L1) loss, best-validation checkpoint
selection, and per-target test MAE in the targets' own units.

Options of the official recipe, off by default: several conformers per
molecule with test-time averaging (``conformers``, 11 officially), the
"dropped features" input mode (``drop_feat``), an exponential moving average
of the weights (``ema_decay``), and starting from pretrained weights
(``pretrained``).
"""
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter
from torch_geometric.data import Dataset
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from ..data.splits import Split
from ..models.regressor import (UniMol2Regressor, build_regressor,
                                load_backbone_weights)
from .conformers import (RandomConformer, all_conformers,
                         average_by_molecule, build_conformers)
from .ema import ExponentialMovingAverage


@dataclass
class FinetuneConfig:
    """Hyper-parameters of a fine-tuning run (defaults: paper/official)."""
    preset: str = 'small'
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.06
    clip_norm: float = 1.0
    loss: str = 'smooth_l1'
    pooler_dropout: float = 0.0
    seed: int = 0
    num_workers: int = 0
    device: str = 'cpu'
    out: str = 'runs/finetune'
    max_minutes: Optional[float] = None
    model_overrides: Dict[str, float] = field(default_factory=dict)
    conformers: int = 1
    drop_feat: bool = False
    ema_decay: Optional[float] = None
    pretrained: Optional[str] = None
    conformer_workers: Optional[int] = None


def lr_lambda(step: float, warmup: int, total: int) -> float:
    """Linear warmup to 1, then linear decay to 0 (polynomial power 1)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == 'smooth_l1':
        return F.smooth_l1_loss(pred, target, beta=1.0)
    if kind == 'l1':
        return F.l1_loss(pred, target)
    raise ValueError(f"unknown loss {kind!r} (use 'smooth_l1' or 'l1')")


@torch.no_grad()
def evaluate(model: UniMol2Regressor, loader: DataLoader,
             device: torch.device) -> torch.Tensor:
    """Per-target mean absolute error in target units, ``[T]``; predictions
    of items sharing ``mol`` (conformers of one molecule) are averaged
    first."""
    model.eval()
    preds, ys, mols, offset = [], [], [], 0
    for batch in loader:
        batch = batch.to(device)
        preds.append(model.predict(batch))
        ys.append(batch.y)
        mols.append(batch.mol if 'mol' in batch else
                    offset + torch.arange(batch.num_graphs, device=device))
        offset += batch.num_graphs
    return average_by_molecule(torch.cat(preds), torch.cat(ys),
                               torch.cat(mols))


def _datasets(dataset: Dataset, split: Split,
              config: FinetuneConfig) -> Dict[str, object]:
    """Train/valid/test views: the dataset itself, or with ``conformers >
    1`` / ``drop_feat`` a random conformer per molecule for training and all
    conformers (averaged at scoring) for validation and test."""
    if config.conformers <= 1 and not config.drop_feat:
        return {name: dataset[torch.as_tensor(split[name])]
                for name in ('train', 'valid', 'test')}
    views = {}
    for name in ('train', 'valid', 'test'):
        confs = build_conformers(dataset[torch.as_tensor(split[name])],
                                 config.conformers,
                                 drop_feat=config.drop_feat,
                                 workers=config.conformer_workers)
        views[name] = RandomConformer(confs) if name == 'train' else \
            all_conformers(confs)
    return views


def finetune(dataset: Dataset, split: Split, target_names: List[str],
             config: FinetuneConfig) -> Dict[str, object]:
    """Trains a regressor on ``dataset[split['train']]``; selects the epoch with
    the lowest mean standardised validation MAE; reports test MAE.

    :obj:`dataset` items must hold ``y`` of shape ``[1, T]`` with the targets
    in the order of :obj:`target_names`. Writes TensorBoard logs, the best
    checkpoint (``best.pt``) and ``results.json`` into :obj:`config.out`.
    """
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    train_set = dataset[torch.as_tensor(split['train'])]
    loaders = {
        name: DataLoader(view, batch_size=config.batch_size,
                         shuffle=name == 'train',
                         num_workers=config.num_workers)
        for name, view in _datasets(dataset, split, config).items()
    }
    y_train = torch.cat([d.y for d in train_set], dim=0)

    model = build_regressor(config.preset, target_names, config.pooler_dropout,
                            **config.model_overrides)
    if config.pretrained:
        load_backbone_weights(model, config.pretrained)
    model = model.to(device)
    model.set_target_stats(y_train.mean(0), y_train.std(0))
    ema = None if config.ema_decay is None else \
        ExponentialMovingAverage(model, config.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  betas=(0.9, 0.99), eps=1e-6,
                                  weight_decay=config.weight_decay)
    total = config.epochs * len(loaders['train'])
    warmup = max(1, int(config.warmup_ratio * total))

    writer = SummaryWriter(str(out))
    print(f'{model!r}: {sum(p.numel() for p in model.parameters()):,} '
          f'parameters; train/valid/test = '
          f'{len(split["train"])}/{len(split["valid"])}/{len(split["test"])}')
    best, best_epoch, step = math.inf, -1, 0
    start = time.time()
    budget = math.inf if config.max_minutes is None else 60 * config.max_minutes
    for epoch in range(1, config.epochs + 1):
        model.train()
        bar = tqdm(loaders['train'], desc=f'epoch {epoch}/{config.epochs}',
                   unit='batch', dynamic_ncols=True)
        for batch in bar:
            batch = batch.to(device)
            progress = max(step, total * (time.time() - start) / budget)
            lr = config.lr * lr_lambda(progress, warmup, total)
            for group in optimizer.param_groups:
                group['lr'] = lr
            loss = _loss(model(batch), model.standardize(batch.y), config.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                       config.clip_norm)
            optimizer.step()
            if ema is not None:
                ema.update()
            step += 1
            writer.add_scalar('train/loss', loss.item(), step)
            writer.add_scalar('train/lr', lr, step)
            writer.add_scalar('train/grad_norm', grad_norm.item(), step)
            bar.set_postfix(loss=f'{loss.item():.4f}')
            if time.time() - start > budget:
                break

        with nullcontext() if ema is None else ema.average_parameters():
            valid_mae = evaluate(model, loaders['valid'], device)
            score = (valid_mae / model.std).mean().item()
            if score < best:
                best, best_epoch = score, epoch
                save_checkpoint(model, config, out / 'best.pt')
        for name, mae in zip(target_names, valid_mae.tolist()):
            writer.add_scalar(f'valid_mae/{name}', mae, epoch)
        print(f'epoch {epoch}: valid MAE ' + ', '.join(
            f'{n}={m:.5f}' for n, m in zip(target_names, valid_mae.tolist())))
        if time.time() - start > budget:
            print(f'stopping in epoch {epoch}: the {config.max_minutes:g}-'
                  f'minute budget is spent')
            break

    model.load_state_dict(torch.load(out / 'best.pt', weights_only=False)['model'])
    test_mae = evaluate(model, loaders['test'], device)
    y_test = torch.cat([d.y for d in dataset[torch.as_tensor(split['test'])]], 0)
    mean_mae = (y_test - y_train.mean(0)).abs().mean(0)
    results = dict(
        targets=target_names, best_epoch=best_epoch,
        test_mae=dict(zip(target_names, test_mae.tolist())),
        train_mean_baseline_mae=dict(zip(target_names, mean_mae.tolist())),
        epochs_run=epoch, seconds=time.time() - start, config=asdict(config))
    for name, mae in results['test_mae'].items():
        writer.add_scalar(f'test_mae/{name}', mae, best_epoch)
    writer.close()
    (out / 'results.json').write_text(json.dumps(results, indent=2))
    return results


def save_checkpoint(model: UniMol2Regressor, config: Optional[FinetuneConfig],
                    path: Path) -> None:
    """Writes the weights plus everything :func:`load_regressor` needs."""
    torch.save(dict(model=model.state_dict(),
                    model_config=asdict(model.backbone.config),
                    target_names=model.target_names,
                    pooler_dropout=model.head.dropout,
                    finetune_config=None if config is None else asdict(config)),
               path)
