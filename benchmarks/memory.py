"""Memory per GPU of pretraining each preset, with DDP and with FSDP.

**Computed** (exact arithmetic on the parameter counts of `PRESETS`, the
models built on the meta device), bytes per GPU for P parameters and W
ranks:

* DDP: fp32 weights, gradients and AdamW's two moments, (4 + 4 + 8) P,
  plus DDP's all-reduce buckets, a second copy of the gradients (4 P, with
  `gradient_as_bucket_view=False`, the trainer's setting): 20 P.
  `--ema-decay` adds 4 P.
* FSDP (`--fsdp`): the same state sharded, 16 P / W (EMA: 4 P / W), plus a
  transient working set: the unsharded parameters of two blocks (the one
  running and the one prefetched; 2 bytes each with `--precision bf16`,
  4 with fp32), the unsharded fp32 gradients of one block before its
  reduce-scatter, and the root group's parameters and gradients
  (embeddings, Gaussian kernel, heads), unsharded during the forward and
  the backward.

**Measured**, on the CPU: the activation memory of a training forward, the
bytes of the tensors autograd saves for the backward (pack hook of
`torch.autograd.graph.saved_tensors_hooks`, each storage counted once,
parameters excluded), of the pretraining forward and loss (`corrupt`
masking, position head, masked-atom head, dropout on) on real MOSES test
molecules, heavy atoms only (what the featurizer gives the model; MOSES
has 21.4 on average, 26 at most), all of one size so that the batch has no
padding. Per molecule: the slope between batches of 2 and 4 molecules. Per
block: the difference between models of 2 and 1 blocks of the preset's
widths; a model of L blocks saves `one-block model + (L - 1) * block`
(checked against the full model for the presets of at most
`--full-depth-max` parameters: `total_full_model` in the JSON), so the
deep presets are never run in full (presets of the same widths share the
measurement). `pair` (JSON) is the share of tensors of N^2 elements per
molecule and channel (with or without the CLS token): the pair track, the
attention weights, the heads' pairwise terms. bf16: under CPU autocast
(the DDP path); FSDP's bf16 blocks, whose inputs and residual streams are
bf16 too, should save no more (not measured). With activation
checkpointing (`checkpointing=True`, column `ckpt`) a step keeps each
block's fp32 inputs (N E + N^2 P values per molecule, N = atoms + 1) plus
one block's activations during its recomputation: computed from the
measured block.

    python benchmarks/memory.py --atoms 22,26 --ranks 8

Prints the table and writes `benchmarks/results/memory.json` and
`memory.md` (with the command).
"""
import argparse
import gzip
import json
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Dict, List

import torch
from rdkit import Chem, rdBase
from torch_geometric.data import Batch

from pyg_unimol2.bench.shared import moses_test
from pyg_unimol2.data import from_smiles, to_dense
from pyg_unimol2.models.unimol2 import PRESETS, UniMol2, UniMol2Config
from pyg_unimol2.pretrain import ObjectiveConfig, corrupt, pretrain_loss

HERE = Path(__file__).resolve().parent
MOSES = moses_test()
GIB, MIB = 2.0 ** 30, 2.0 ** 20
#: Heavy-atom count -> 4 featurized MOSES molecules of that size.
MOLECULES: Dict[int, list] = {}


def molecules(count: int, atoms: int) -> list:
    """The first :obj:`count` MOSES test molecules with :obj:`atoms` heavy
    atoms, featurized (ETKDG conformer, no MMFF)."""
    found = []
    with gzip.open(MOSES, 'rt') as f, rdBase.BlockLogs():
        next(f)
        for line in f:
            smiles = line.strip()
            if Chem.MolFromSmiles(smiles).GetNumAtoms() == atoms:
                found.append(from_smiles(smiles, seed=0, optimize=False))
                if len(found) == count:
                    return found
    raise ValueError(f'fewer than {count} MOSES molecules with {atoms} atoms')


def counts(name: str) -> Dict[str, int]:
    """Parameters of a preset: all, one block, the root group (the rest)."""
    with torch.device('meta'):
        model = UniMol2.from_preset(name)
    total = sum(p.numel() for p in model.parameters())
    block = sum(p.numel() for p in model.encoder.layers[0].parameters())
    return dict(params=total, block=block,
                root=total - block * model.config.num_layers,
                layers=model.config.num_layers)


def saved_bytes(model: UniMol2, data: list, precision: str
                ) -> Dict[str, int]:
    """Bytes autograd saves for the backward of a pretraining forward and
    loss on :obj:`data` (one batch): all, and those of tensors with two
    token dimensions."""
    batch = corrupt(to_dense(Batch.from_data_list(data)), ObjectiveConfig(),
                    torch.Generator().manual_seed(0))
    B, L = batch.inputs.token.shape
    pairs = {B * (L + 1) ** 2, B * L ** 2}  # with and without the CLS token
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: Dict[int, torch.Tensor] = {}  # kept alive: no address reuse
    total = pair = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total, pair
        key = t.untyped_storage().data_ptr()
        if key not in params and key not in seen:
            seen[key] = t
            size = t.untyped_storage().nbytes()
            total += size
            if any(t.numel() % n == 0 for n in pairs):
                pair += size
        return t

    torch.manual_seed(0)
    model.train()
    amp = torch.autocast('cpu', dtype=torch.bfloat16) \
        if precision == 'bf16' else nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with amp:
            out = model(batch.inputs, masked_tokens=batch.masked)
        pretrain_loss(out, batch, ObjectiveConfig())
    return dict(total=total, pair=pair)


def per_molecule(config: UniMol2Config, depth: int, data: list,
                 precision: str) -> Dict[str, float]:
    """Slope of :func:`saved_bytes` between 2 and 4 molecules of
    :obj:`data`, for :obj:`config` with :obj:`depth` blocks."""
    torch.manual_seed(0)
    model = UniMol2(config, num_layers=depth)
    two, four = (saved_bytes(model, data[:b], precision) for b in (2, 4))
    return {k: (four[k] - two[k]) / 2 for k in two}


@lru_cache(maxsize=None)
def _widths(name: str, atoms: int, precision: str, depth: int
            ) -> Dict[str, float]:
    """:func:`per_molecule` of a preset, shared by the presets of the
    same widths (those differ in depth only)."""
    config = PRESETS[name]
    for other, c in PRESETS.items():
        if replace(c, num_layers=1, name='') == \
                replace(config, num_layers=1, name=''):
            name = other
            break
    return per_molecule(PRESETS[name], depth, MOLECULES[atoms], precision)


def activations(name: str, atoms: int, precision: str,
                full_depth: bool) -> Dict[str, float]:
    """Per-molecule activation bytes of preset :obj:`name` (see the module
    docstring) on molecules of :obj:`atoms` atoms."""
    config = PRESETS[name]
    per = {d: _widths(name, atoms, precision, d) for d in (1, 2)}
    block = {k: per[2][k] - per[1][k] for k in per[1]}
    L = config.num_layers
    out = dict(block=block['total'], block_pair=block['pair'],
               other=per[1]['total'] - block['total'],
               total=per[1]['total'] + (L - 1) * block['total'],
               pair=per[1]['pair'] + (L - 1) * block['pair'])
    if full_depth:
        out['total_full_model'] = per_molecule(
            config, L, MOLECULES[atoms], precision)['total']
    return out


def checkpointed(name: str, atoms: int, block: float) -> float:
    """Per-molecule bytes with activation checkpointing: every block's
    fp32 inputs plus one block's activations (its recomputation)."""
    c = PRESETS[name]
    N = atoms + 1
    return c.num_layers * 4 * (N * c.embed_dim + N * N * c.pair_dim) + block


def fsdp_working_set(count: Dict[str, int], param_bytes: int) -> int:
    """Transient bytes of FSDP beside the sharded state (module
    docstring)."""
    return (2 * count['block'] * param_bytes + 4 * count['block'] +
            8 * count['root'])


def table(rows: List[Dict], atoms: List[int], ranks: int) -> str:
    head = (['preset', 'params', 'DDP state', f'FSDP state (W={ranks})',
             'FSDP working set fp32 / bf16'] +
            [f'act./mol {n} atoms fp32 / bf16' for n in atoms] +
            [f'act./mol {atoms[0]} atoms, ckpt'])
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [r['preset'], f'{r["params"] / 1e6:.1f}M',
                 f'{r["ddp_bytes"] / GIB:.2f} GiB',
                 f'{r["fsdp_bytes"] / GIB:.3f} GiB',
                 f'{r["fsdp_working_fp32"] / GIB:.3f} / '
                 f'{r["fsdp_working_bf16"] / GIB:.3f} GiB']
        for n in atoms:
            a = r['activations'][str(n)]
            cells.append(f'{a["fp32"]["total"] / MIB:.1f} / '
                         f'{a["bf16"]["total"] / MIB:.1f} MiB')
        ckpt = r['activations'][str(atoms[0])]['checkpointed']
        cells.append(f'{ckpt / MIB:.1f} MiB')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--presets', default=','.join(PRESETS))
    parser.add_argument('--atoms', default='22,26',
                        help='heavy-atom counts of the measured molecules')
    parser.add_argument('--ranks', type=int, default=8,
                        help='W of the FSDP column')
    parser.add_argument('--full-depth-max', type=float, default=1e7,
                        help='also measure the full model of presets with '
                        'at most this many parameters (extrapolation check)')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--out', default=str(HERE / 'results' /
                                             'memory.json'))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    atoms = [int(n) for n in args.atoms.split(',')]
    MOLECULES.update({n: molecules(4, n) for n in atoms})
    rows = []
    start = time.perf_counter()
    for name in args.presets.split(','):
        count = counts(name)
        P, W = count['params'], args.ranks
        row = dict(preset=name, **count, ddp_bytes=20 * P,
                   ddp_ema_bytes=4 * P, fsdp_bytes=16 * P / W,
                   fsdp_ema_bytes=4 * P / W,
                   fsdp_working_fp32=fsdp_working_set(count, 4),
                   fsdp_working_bf16=fsdp_working_set(count, 2),
                   activations={})
        for n in atoms:
            entry = {p: activations(name, n, p, P <= args.full_depth_max)
                     for p in ('fp32', 'bf16')}
            entry['checkpointed'] = checkpointed(name, n,
                                                 entry['fp32']['block'])
            row['activations'][str(n)] = entry
        rows.append(row)
        print(f'{name}: {time.perf_counter() - start:.0f} s', file=sys.stderr)
    text = table(rows, atoms, args.ranks)
    print(text)
    command = 'python benchmarks/memory.py ' + ' '.join(sys.argv[1:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(command=command, ranks=args.ranks, atoms=atoms,
                seconds=time.perf_counter() - start,
                torch=torch.__version__, machine=platform.machine(),
                date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + '\n')
    notes = __doc__.split('\n\n')[1:4]
    out.with_suffix('.md').write_text(
        '# Pretraining memory per GPU\n\n```bash\n' + command + '\n```\n\n' +
        text + '\n\n' + '\n\n'.join(notes) + '\n')


if __name__ == '__main__':
    main()
