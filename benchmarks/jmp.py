"""The JMP claim, measured: does joint multi-domain pretraining on energies
and forces make fine-tuning on an unseen domain better and faster?

Domains, all GFN2-xTB (``datasets/xtb_domains.py``, in the published file
layouts): (a) ANI-1x-like small molecules at displaced and MD geometries,
(b) SPICE-like drug-like conformers, (c) rMD17-like MD trajectories of named
molecules, held out. One Uni-Mol2 backbone is pretrained jointly on (a) + (b)
(a head set per domain, temperature sampling T = 2) for ``--pretrain-steps``.
Then, for every target molecule of (c) and seed, the same fine-tuning
budget (``--finetune-steps`` on ``--train-frames`` frames, tested on
``--test-frames`` other frames) is given to

* ``scratch``: the same architecture, randomly initialised;
* ``jmp``: the pretrained backbone with fresh heads;
* ``jmp-kept``: the pretrained backbone and the (a) heads kept.

Reported: test energy MAE (meV) and force MAE (meV/Angstrom, per
component) at the end, mean (std) over seeds, and the first fine-tuning step
at which a pretrained model's test force MAE reaches the scratch model's
final one. Also a t-SNE map of the pretrained backbone's molecule
representations (CLS) of structures of all three domains, coloured by domain
(JMP's figure).

CPU run committed in ``benchmarks/results/jmp.md``::

    make xtb-data   # or: python datasets/xtb_domains.py --out /work/xtb_domains
    python benchmarks/jmp.py --data /work/xtb_domains
"""
import argparse
import json
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from pyg_unimol2.checkpoints import list_checkpoints, load_energy_force_model
from pyg_unimol2.data.store import build_geometry_store
from pyg_unimol2.datasets.hdf5 import HDF5MoleculeDataset
from pyg_unimol2.pretrain import PretrainConfig
from pyg_unimol2.pretrain.trainer import pretrain

HERE = Path(__file__).resolve().parent
ARMS = ('scratch', 'jmp', 'jmp-kept')


def _store(files, out: Path, fmt: str) -> str:
    if not (out / 'manifest.json').exists():
        build_geometry_store(files, out, format=fmt, workers=2,
                             progress=False, verbose=True)
    return str(out)


def _split_trajectory(npz: Path, out: Path, train: int, test: int,
                      seed: int = 0) -> Dict[str, str]:
    """Random disjoint train/test frames of an rMD17 file, as two files in
    the rMD17 layout, and their stores."""
    stores = {}
    data = dict(np.load(npz))
    order = np.random.default_rng(seed).permutation(data['energies'].shape[0])
    for name, frames in (('train', order[:train]),
                         ('test', order[train:train + test])):
        path = out / f'rmd17_{npz.stem[6:]}_{name}.npz'
        if not path.exists():
            np.savez(path, nuclear_charges=data['nuclear_charges'],
                     coords=data['coords'][frames],
                     energies=data['energies'][frames],
                     forces=data['forces'][frames])
        stores[name] = _store(path, out / f'{npz.stem}_{name}', 'rmd17')
    return stores


def _common(args) -> Dict:
    return dict(preset=args.preset, max_tokens=args.max_tokens,
                clip_norm=args.clip_norm, num_workers=0,
                progress=False, threads=1, seed=0, valid_fraction=0.05,
                ckpt_every=10_000)


def _pretrain(args, stores: Dict[str, str]) -> Path:
    out = Path(args.work) / 'pretrain'
    config = PretrainConfig(
        out=str(out), max_steps=args.pretrain_steps,
        warmup_steps=args.pretrain_steps // 20, lr=args.lr,
        valid_every=max(args.pretrain_steps // 10, 1),
        domains=[dict(name='ani', store=stores['ani']),
                 dict(name='spice', store=stores['spice'])],
        **_common(args))
    start = time.perf_counter()
    pretrain(config)
    print(f'pretraining: {args.pretrain_steps} steps in '
          f'{time.perf_counter() - start:.0f} s', flush=True)
    return list_checkpoints(out / 'checkpoints')[-1]


def _finetune_job(job: Dict) -> Dict:
    torch.set_num_threads(1)
    arm, seed = job['arm'], job['seed']
    extra = {}
    if arm != 'scratch':
        extra['init_from'] = job['checkpoint']
    if arm == 'jmp-kept':
        extra['keep_heads'] = {'md': 'ani'}
    common = dict(job['common'], seed=seed)
    config = PretrainConfig(
        out=job['out'], max_steps=job['steps'],
        warmup_steps=max(job['steps'] // 20, 1), lr=job['lr'],
        valid_every=job['valid_every'], ema_decay=job['ema_decay'],
        layer_decay=job['layer_decay'] if arm != 'scratch' else 1.0,
        domains=[dict(name='md', store=job['train'],
                      valid_store=job['test'])], **common, **extra)
    start = time.perf_counter()
    pretrain(config)
    curve = [json.loads(line) for line in
             (Path(job['out']) / 'metrics.jsonl').read_text().splitlines()]
    valid = [(r['step'], r['valid_md_energy_mae'], r['valid_md_force_mae'])
             for r in curve if 'valid_md_force_mae' in r]
    return dict(job, seconds=time.perf_counter() - start, curve=valid,
                energy_mev=1000 * valid[-1][1], force_mev=1000 * valid[-1][2])


def _steps_to_reach(curve: List, target: float) -> int:
    """First validation step whose force MAE (eV/A) is at most
    :obj:`target`, or -1."""
    for step, _, force in curve:
        if force <= target:
            return step
    return -1


@torch.no_grad()
def _representation_map(checkpoint: Path, stores: Dict[str, str],
                        per_domain: int, png: Path) -> Dict:
    from sklearn.manifold import TSNE
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from torch_geometric.data import Batch

    model = load_energy_force_model(checkpoint).eval()
    reps, labels = [], []
    for name, store in stores.items():
        dataset = HDF5MoleculeDataset(store)
        pick = np.random.default_rng(0).choice(
            len(dataset), min(per_domain, len(dataset)), replace=False)
        for start in range(0, len(pick), 64):
            batch = Batch.from_data_list([dataset[int(i)] for i in
                                          pick[start:start + 64]])
            reps.append(model.backbone(batch, compute_pos=False).cls)
            labels += [name] * batch.num_graphs
    points = TSNE(2, random_state=0, init='pca',
                  perplexity=30).fit_transform(torch.cat(reps).numpy())
    fig, ax = plt.subplots(figsize=(6, 5))
    for name in stores:
        mask = np.array(labels) == name
        ax.scatter(points[mask, 0], points[mask, 1], s=6, label=name)
    ax.set_title('t-SNE of pretrained Uni-Mol2 CLS representations')
    ax.legend(markerscale=3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    return dict(points=len(labels), png=str(png))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', required=True,
                        help='output folder of datasets/xtb_domains.py')
    parser.add_argument('--work', default='runs/jmp')
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--max-tokens', type=int, default=512)
    parser.add_argument('--lr', type=float, default=5e-4)
    parser.add_argument('--clip-norm', type=float, default=100.0,
                        help='gradient-norm clipping (the force loss has '
                        'gradient norms of 10-150: clipping at 1 slows '
                        'learning forces and stalls the energy head)')
    parser.add_argument('--pretrain-steps', type=int, default=1500)
    parser.add_argument('--finetune-steps', type=int, default=400)
    parser.add_argument('--finetune-lr', type=float, default=3e-4)
    parser.add_argument('--valid-every', type=int, default=25)
    parser.add_argument('--layer-decay', type=float, default=0.8)
    parser.add_argument('--ema-decay', type=float, default=0.99)
    parser.add_argument('--targets', default='aspirin,ethanol')
    parser.add_argument('--train-frames', type=int, default=200)
    parser.add_argument('--test-frames', type=int, default=200)
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--workers', type=int, default=2,
                        help='fine-tuning runs in parallel')
    parser.add_argument('--map-per-domain', type=int, default=300)
    parser.add_argument('--out', default=str(HERE / 'results' / 'jmp'))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    stores = dict(
        ani=_store(data / 'ani1x_gfn2xtb.h5', work / 'ani', 'ani1x'),
        spice=_store(data / 'spice_gfn2xtb.hdf5', work / 'spice', 'spice'))
    targets = {t: _split_trajectory(data / 'rmd17' / 'npz_data' /
                                    f'rmd17_{t}.npz', work,
                                    args.train_frames, args.test_frames)
               for t in args.targets.split(',')}
    checkpoint = _pretrain(args, stores)

    jobs = [dict(arm=arm, seed=int(seed), target=t, train=s['train'],
                 test=s['test'], checkpoint=str(checkpoint),
                 out=str(work / f'{t}_{arm}_seed{seed}'),
                 steps=args.finetune_steps, lr=args.finetune_lr,
                 valid_every=args.valid_every, ema_decay=args.ema_decay,
                 layer_decay=args.layer_decay, common=_common(args))
            for t, s in targets.items() for seed in args.seeds.split(',')
            for arm in ARMS]
    with ProcessPoolExecutor(args.workers,
                             mp_context=get_context('spawn')) as pool:
        runs = list(pool.map(_finetune_job, jobs))

    table = []
    for t in targets:
        scratch_final = {r['seed']: r['curve'][-1][2] for r in runs
                         if r['target'] == t and r['arm'] == 'scratch'}
        for arm in ARMS:
            mine = [r for r in runs if r['target'] == t and r['arm'] == arm]
            reach = [_steps_to_reach(r['curve'], scratch_final[r['seed']])
                     for r in mine]
            table.append(dict(
                target=t, arm=arm,
                energy_mev=[r['energy_mev'] for r in mine],
                force_mev=[r['force_mev'] for r in mine],
                steps_to_scratch_final=reach))
    rep_map = _representation_map(
        checkpoint, dict(stores, **{f'rmd17 {t}': s['test']
                                    for t, s in targets.items()}),
        args.map_per_domain, Path(args.out + '_tsne.png'))
    manifest = json.loads((data / 'manifest.json').read_text())
    pretraining = _validation_curve(work / 'pretrain' / 'metrics.jsonl')
    results = dict(command='python ' + ' '.join(map(shlex.quote, sys.argv)),
                   settings=vars(args), table=table, runs=runs,
                   data={k: v.get('content_sha256') for k, v in
                         manifest['domains'].items()},
                   representation_map=rep_map, pretraining=pretraining,
                   wall_seconds=time.perf_counter() - start,
                   cpus=os.cpu_count())
    Path(args.out + '.json').write_text(json.dumps(results, indent=1) + '\n')
    _write_table(results, Path(args.out + '.md'))
    print(Path(args.out + '.md').read_text())


def _validation_curve(metrics: Path) -> Dict[str, List]:
    """Per pretraining domain, ``[step, energy MAE (meV), force MAE
    (meV/Angstrom)]`` at every validation."""
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    records = [r for r in records if 'valid_loss' in r]
    domains = sorted({k[len('valid_'):-len('_force_mae')] for r in records
                      for k in r if k.endswith('_force_mae')})
    return {d: [[r['step'], 1000 * r[f'valid_{d}_energy_mae'],
                 1000 * r[f'valid_{d}_force_mae']] for r in records]
            for d in domains}


def _fmt(values: List[float]) -> str:
    return f'{np.mean(values):.1f} ({np.std(values):.1f})'


def _write_table(results: Dict, path: Path) -> None:
    s = results['settings']
    lines = [
        '# JMP on GFN2-xTB domains: fine-tuning an unseen domain, pretrained '
        'vs scratch', '',
        f'Pretraining: {s["preset"]} preset, jointly on ANI-1x-like and '
        f'SPICE-like domains, {s["pretrain_steps"]} steps. Fine-tuning: '
        f'{s["finetune_steps"]} steps on {s["train_frames"]} frames of each '
        f'rMD17-like target, tested on {s["test_frames"]} other frames; '
        f'seeds {s["seeds"]}. Mean (std) over seeds. Wall time '
        f'{results["wall_seconds"] / 60:.0f} min on {results["cpus"]} CPUs.',
        '', '```bash', results['command'], '```', '',
        '| target | model | energy MAE (meV) | force MAE (meV/Å) | steps to '
        'scratch\'s final force MAE |',
        '|---|---|---:|---:|---|']
    for row in results['table']:
        reach = ', '.join('never' if r < 0 else str(r)
                          for r in row['steps_to_scratch_final'])
        lines.append(f'| {row["target"]} | {row["arm"]} | '
                     f'{_fmt(row["energy_mev"])} | {_fmt(row["force_mev"])} '
                     f'| {reach} |')
    lines += ['', 'Pretraining validation (first and last validation):', '',
              '| domain | step | energy MAE (meV) | force MAE (meV/Å) |',
              '|---|---:|---:|---:|']
    for domain, curve in results['pretraining'].items():
        for step, energy, force in (curve[0], curve[-1]):
            lines.append(f'| {domain} | {step} | {energy:.1f} | '
                         f'{force:.1f} |')
    lines += ['', f'Representation map: `{Path(results["representation_map"]["png"]).name}`.']
    path.write_text('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
