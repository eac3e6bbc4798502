"""Training-step and inference throughput: pyg_unimol2 vs the official
Uni-Mol2 implementation (``unimol_tools`` 0.1.6), same weights, same batch.

Runs in the reference environment, which holds both implementations::

    OMP_NUM_THREADS=1 .venv-ref/bin/python benchmarks/throughput.py \\
        --threads 1 --out benchmarks/results/throughput.json

Cases (``--cases``): ``84M-moses-16`` (the 84M preset, the first 16 MOSES
test molecules, RDKit ETKDGv3 + MMFF conformers from
:func:`~pyg_unimol2.data.from_smiles` with ``seed=0``) and ``small-qm9-64``
(the ``small`` preset, 64 molecules of the seeded 20,000-molecule QM9
subset of ``make run`` drawn at random with seed 0, DFT geometries).
``--smoke`` runs a two-layer toy
model on 4 molecules for 2 steps (CI).

Both models see the same tensors: the official batch is built from our
:class:`~pyg_unimol2.data.DenseBatch` (official key names; the UT collater
pads ``attn_bias`` with zeros). The official model is random-initialised
(an empty checkpoint) and every tensor is then redrawn (as in the
equivalence tests: the official init zeroes the last layer of several
residual branches, which would hide the pair track from CLS); its
``state_dict`` is copied into ours with
:func:`~pyg_unimol2.models.official.load_official`. Default dropouts.

* **train**: ``model.train()``, forward (CLS -> the unimol_tools linear
  head; the position head runs in both, as the official forward always
  runs it), MSE loss, ``backward``, ``AdamW(lr=1e-4, betas=(0.9, 0.99),
  eps=1e-6, weight_decay=1e-4, fused=True)`` step; one optimizer per
  model, identical settings (the fused kernel shortens both steps by the
  same absolute amount).
* **infer**: ``model.eval()`` forward under :func:`torch.inference_mode`.

Ours and official alternate step by step (which one goes first alternates
too), after ``--warmup`` steps each; molecules/s is the batch size over the
median step time, and the speedup is ours / official. The *paired* speedup
is the median over steps of official time / ours time for the two runs of
the same step (back to back), which is robust to load that changes during
the run on a shared machine.

**Peak memory** is the peak of live CPU tensor bytes allocated during one
extra (untimed) step above the bytes live before it, from the allocation
and free events of :func:`torch.profiler.profile` (``profile_memory=True``)
summed in time order. It counts activations saved for backward, gradients
and (on the first step) optimizer state, but not parameters or memory held
before the step; it is the allocator-level quantity and independent of RSS
and of what the other implementation left in the process.

**Equivalence**: in eval mode, fp32, each of the first ``--check``
molecules alone (batch of one, so the official padded normalisation equals
ours); the JSON reports max |CLS_ours - CLS_off| / max |CLS_off|.

**Profile**: the operators with the most self CPU time in one more
training step and one more inference pass of each implementation
(``--no-profile`` skips it).

Prints a markdown table, writes the JSON (``--out``) and a markdown file
beside it with the table, the profiles and the command.
"""
import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch_geometric.data import Batch

from pyg_unimol2.bench.results import write_keeping_notes
from pyg_unimol2.bench.shared import moses_test
from pyg_unimol2.data import DenseBatch, from_smiles, to_dense
from pyg_unimol2.models.official import UNIMOL_TOOLS_HEAD, load_official
from pyg_unimol2.train.loop import autocast

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MOSES_TEST = moses_test()

#: unimol_tools ``molecule_architecture`` fields of each size.
ARCHS = {
    '84M': dict(num_encoder_layers=12, encoder_embed_dim=768,
                num_attention_heads=48, encoder_attention_heads=48,
                ffn_embedding_dim=768, pair_embed_dim=512, pair_hidden_dim=64),
    'small': dict(num_encoder_layers=6, encoder_embed_dim=256,
                  num_attention_heads=16, encoder_attention_heads=16,
                  ffn_embedding_dim=256, pair_embed_dim=64,
                  pair_hidden_dim=16),
    '164M': dict(num_encoder_layers=24, encoder_embed_dim=768,
                 num_attention_heads=48, encoder_attention_heads=48,
                 ffn_embedding_dim=768, pair_embed_dim=512,
                 pair_hidden_dim=64),
    '310M': dict(num_encoder_layers=32, encoder_embed_dim=1024,
                 num_attention_heads=64, encoder_attention_heads=64,
                 ffn_embedding_dim=1024, pair_embed_dim=512,
                 pair_hidden_dim=64),
    'toy': dict(num_encoder_layers=2, encoder_embed_dim=32,
                num_attention_heads=2, encoder_attention_heads=2,
                ffn_embedding_dim=32, pair_embed_dim=16, pair_hidden_dim=4),
}
CASES = {  # name: (size, dataset, batch size)
    '84M-moses-16': ('84M', 'moses', 16),
    'small-qm9-64': ('small', 'qm9', 64),
    'toy-moses-4': ('toy', 'moses', 4),
}


def moses_data(count: int) -> list:
    with gzip.open(MOSES_TEST, 'rt') as f:
        next(f)
        smiles = [next(f).strip() for _ in range(count)]
    return [from_smiles(s, seed=0) for s in smiles]


def qm9_data(count: int) -> list:
    from pyg_unimol2.datasets import QM9
    dataset = QM9(str(ROOT / 'data' / 'qm9'), subset=20000, subset_seed=0,
                  workers=1, progress=False)
    # A random sample: QM9 is ordered by size, its first molecules have 1-6
    # heavy atoms (a typical batch has 8-9).
    order = torch.randperm(len(dataset), generator=torch.Generator()
                           .manual_seed(0))
    return [dataset[int(i)] for i in order[:count]]


def official_batch(dense: DenseBatch) -> dict:
    r"""The unimol_tools batch (``batch_collate_fn`` key names and padding)
    holding the same tensors as :obj:`dense`."""
    B, L = dense.atom_mask.shape
    return dict(atom_feat=dense.atom_feat, atom_mask=dense.atom_mask.long(),
                edge_feat=dense.pair_feat, shortest_path=dense.spd,
                degree=dense.degree, pair_type=dense.pair_type,
                attn_bias=torch.zeros(B, L + 1, L + 1,
                                      device=dense.atom_mask.device),
                src_tokens=dense.token, src_coord=dense.pos)


def build_models(size: str, seed: int = 0):
    from unimol_tools.models import unimolv2
    original = unimolv2.molecule_architecture

    def architecture(model_size: str = '84m'):
        args = original('84m')
        args.update(ARCHS[size])
        return args

    unimolv2.molecule_architecture = architecture
    try:
        torch.manual_seed(seed)
        with tempfile.TemporaryDirectory() as tmp:
            empty = os.path.join(tmp, 'empty.pt')
            torch.save({}, empty)  # random weights: nothing to load
            official = unimolv2.UniMolV2Model(output_dim=1,
                                              pretrained_model_path=empty)
    finally:
        unimolv2.molecule_architecture = original
    # The official initialisation zeroes the last layer of several residual
    # branches, so CLS would not see the pair track; redraw every tensor
    # (as the equivalence tests do) so that the check below covers it.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in official.named_parameters():
            scale = p.shape[-1]**-0.5 if p.dim() > 1 else 0.2
            offset = 1.0 if name.endswith('norm.weight') else 0.0
            p.copy_(offset + scale * torch.randn(p.shape, generator=generator))
    ours, report = load_official(official.state_dict())
    assert report.layout == 'unimol_tools' and not report.ignored
    return ours, official


class Runner:
    r"""One implementation: a training step and an inference pass, the
    forward under :func:`~pyg_unimol2.train.loop.autocast` with
    :obj:`precision` (``'fp32'``: none)."""
    def __init__(self, name: str, model: torch.nn.Module,
                 forward: Callable[[bool], torch.Tensor],
                 precision: str = 'fp32'):
        self.name = name
        self.model = model
        self.forward = forward  # (train: bool) -> logits [B, 1]
        self.precision = precision
        self.device = next(model.parameters()).device
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4,
                                     betas=(0.9, 0.99), eps=1e-6,
                                     weight_decay=1e-4, fused=True)
        self.times: Dict[str, List[float]] = {'train': [], 'infer': []}
        self.peak: Dict[str, int] = {}

    def train_step(self) -> None:
        self.model.train()
        with autocast(self.device, self.precision):
            logits = self.forward(True)
        loss = logits.float().pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def infer_step(self) -> None:
        self.model.eval()
        with torch.inference_mode(), autocast(self.device, self.precision):
            self.forward(False)

    def step(self, mode: str) -> None:
        r"""One training step (``'train'``) or inference pass."""
        (self.train_step if mode == 'train' else self.infer_step)()

    def timed(self, mode: str, record: bool) -> None:
        start = time.perf_counter()
        self.step(mode)
        if record:
            self.times[mode].append(time.perf_counter() - start)

    def measure_peak(self, mode: str) -> None:
        self.peak[mode] = peak_bytes(lambda: self.step(mode))


def pair_runners(ours, official, dense: DenseBatch, runner: type = Runner,
                 precision: str = 'fp32') -> List[Runner]:
    r"""The :obj:`runner` s of ours (CLS -> the unimol_tools head, position
    head run) and of the official model, on the same batch :obj:`dense`."""
    head = ours.classification_heads[UNIMOL_TOOLS_HEAD]
    off_batch = official_batch(dense)
    return [
        runner('ours', ours,
               lambda train: head(ours(dense, compute_pos=True).cls),
               precision),
        runner('official', official, lambda train: official(**off_batch),
               precision),
    ]


def alternate(runners: List[Runner], steps: int, warmup: int) -> None:
    r"""Times :obj:`warmup` + :obj:`steps` training steps, then as many
    inference passes, of the :obj:`runners` alternating step by step
    (which one goes first alternates too), the first :obj:`warmup`
    unrecorded; then measures the peak memory of each."""
    for mode in ('train', 'infer'):
        for step in range(warmup + steps):
            order = runners if step % 2 == 0 else runners[::-1]
            for r in order:
                r.timed(mode, record=step >= warmup)
        for r in runners:
            r.measure_peak(mode)


def compare(runners: List[Runner], batch_size: int) -> dict:
    r"""Per implementation and mode: median step time, molecules/s and
    peak memory; and the speedups (ours / official: of the medians and the
    paired median) and memory ratios, from :func:`alternate`."""
    result = dict(implementations={})
    for r in runners:
        result['implementations'][r.name] = {
            mode: dict(
                median_s=statistics.median(r.times[mode]),
                step_s=r.times[mode],
                molecules_per_s=batch_size / statistics.median(r.times[mode]),
                peak_mib=r.peak[mode] / 2**20)
            for mode in ('train', 'infer')
        }
    impl = result['implementations']
    for mode in ('train', 'infer'):
        result[f'{mode}_speedup'] = (impl['ours'][mode]['molecules_per_s'] /
                                     impl['official'][mode]['molecules_per_s'])
        # official / ours time of the two steps run back to back: robust to
        # load changes that hit one implementation's median
        paired = [f / o for o, f in zip(impl['ours'][mode]['step_s'],
                                        impl['official'][mode]['step_s'])]
        result[f'{mode}_speedup_per_step'] = paired
        result[f'{mode}_speedup_paired_median'] = statistics.median(paired)
        result[f'{mode}_memory_ratio'] = (impl['ours'][mode]['peak_mib'] /
                                          impl['official'][mode]['peak_mib'])
    return result


def peak_bytes(fn: Callable[[], None]) -> int:
    r"""Peak of live tensor bytes allocated by :obj:`fn` (above the bytes
    live before it): the allocation (+) and free (-) events recorded by
    :func:`torch.profiler.profile` with ``profile_memory=True``, summed in
    time order."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        fn()
    events = []

    def walk(node) -> None:
        if type(node.extra_fields).__name__.endswith('Allocation'):
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    live = peak = 0
    for _, delta in sorted(events):
        live += delta
        peak = max(peak, live)
    return peak


def op_profile(runners: List[Runner], mode: str,
               rows: int = 12) -> Dict[str, list]:
    r"""Per implementation, the :obj:`rows` operators with the most self
    CPU time in an extra (untimed) training step or inference pass
    (:obj:`mode`), from :func:`torch.profiler.profile`:
    ``[name, calls, self CPU ms]``."""
    from torch.profiler import ProfilerActivity, profile
    tables = {}
    for r in runners:
        for _ in range(2):  # the second: without the profiler's first use
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                r.step(mode)
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in ops) / 1e3
        tables[r.name] = [['total', None, round(total, 2)]] + [
            [e.key, e.count, round(e.self_cpu_time_total / 1e3, 2)]
            for e in ops[:rows]]
    return tables


def profile_markdown(result: dict) -> str:
    """The op profiles of a case (:func:`op_profile`, per mode) as markdown
    tables, ours beside official."""
    blocks = []
    for mode, what in (('train', 'one training step'),
                       ('infer', 'one inference pass')):
        ours, off = (result['profile'][mode][k] for k in ('ours', 'official'))
        lines = [f'### {result["case"]}: {what}, self CPU ms per op', '',
                 '| ours: op | calls | ms | official: op | calls | ms |',
                 '|---|---|---|---|---|---|']
        for a, b in zip(ours, off):
            lines.append(f'| {a[0]} | {a[1] or ""} | {a[2]} | {b[0]} | '
                         f'{b[1] or ""} | {b[2]} |')
        blocks.append('\n'.join(lines))
    return '\n\n'.join(blocks)


def check_equivalence(ours, official, data: list) -> float:
    r"""Max relative CLS difference, each molecule alone, eval, fp32."""
    ours.eval()
    official.eval()
    device = next(ours.parameters()).device
    worst = 0.0
    with torch.no_grad():
        for d in data:
            dense = to_dense(Batch.from_data_list([d])).to(device)
            a = ours(dense, compute_pos=False).cls[0]
            b = official(**official_batch(dense), return_repr=True)[0]
            worst = max(worst, float((a - b).abs().max() / b.abs().max()))
    return worst


def run_case(name: str, steps: int, warmup: int, check: int,
             profile: bool = False) -> dict:
    size, dataset, batch_size = CASES[name]
    data = (moses_data if dataset == 'moses' else qm9_data)(batch_size)
    dense = to_dense(Batch.from_data_list(data))
    ours, official = build_models(size)
    max_rel = check_equivalence(ours, official, data[:check])
    runners = pair_runners(ours, official, dense)
    alternate(runners, steps, warmup)

    num_atoms = dense.atom_mask.sum(1)
    result = dict(
        case=name, preset=size, dataset=dataset, batch_size=batch_size,
        padded_atoms=int(dense.atom_mask.size(1)),
        mean_atoms=float(num_atoms.float().mean()),
        parameters=ours.num_parameters(), steps=steps, warmup=warmup,
        cls_max_rel_diff=max_rel, equivalence_molecules=len(data[:check]))
    result.update(compare(runners, batch_size))
    if profile:
        result['profile'] = {mode: op_profile(runners, mode)
                             for mode in ('train', 'infer')}
    return result


def table(results: List[dict]) -> str:
    lines = [
        '| case | mode | ours mol/s | official mol/s | speedup | '
        'paired speedup | ours peak MiB | official peak MiB | '
        'CLS max rel. diff |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for res in results:
        impl = res['implementations']
        for mode in ('train', 'infer'):
            o, f = impl['ours'][mode], impl['official'][mode]
            lines.append(
                f"| {res['case']} | {mode} | {o['molecules_per_s']:.2f} | "
                f"{f['molecules_per_s']:.2f} | "
                f"**{res[f'{mode}_speedup']:.2f}x** | "
                f"{res[f'{mode}_speedup_paired_median']:.2f}x | "
                f"{o['peak_mib']:.0f} | "
                f"{f['peak_mib']:.0f} | {res['cls_max_rel_diff']:.1e} |")
    return '\n'.join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cases', nargs='+',
                        default=['84M-moses-16', 'small-qm9-64'],
                        choices=sorted(CASES))
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--check', type=int, default=4,
                        help='molecules checked for equivalence')
    parser.add_argument('--no-profile', dest='profile', action='store_false',
                        help='skip the per-op profiles')
    parser.add_argument('--smoke', action='store_true',
                        help='toy model, 4 molecules, 2 steps (CI)')
    parser.add_argument('--out', type=Path,
                        default=HERE / 'results' / 'throughput.json')
    args = parser.parse_args(argv)
    if args.smoke:
        args.cases, args.steps, args.warmup, args.check = (['toy-moses-4'], 2,
                                                           0, 2)
    torch.set_num_threads(args.threads)
    command = ' '.join(['OMP_NUM_THREADS=' +
                        os.environ.get('OMP_NUM_THREADS', '?'),
                        '.venv-ref/bin/python', 'benchmarks/throughput.py'] +
                       (argv if argv is not None else sys.argv[1:]))
    results, failed = [], []
    for case in args.cases:
        try:
            results.append(run_case(case, args.steps, args.warmup,
                                    args.check, args.profile))
        except Exception as e:  # one failing case must not lose the others
            traceback.print_exc()
            failed.append(dict(case=case, error=f'{type(e).__name__}: {e}'))
            print(f'case {case} failed: {failed[-1]["error"]}',
                  file=sys.stderr, flush=True)
    md = table(results) + ''.join(f"\n\n**{f['case']} failed:** "
                                  f"`{f['error']}`" for f in failed)
    print(md)
    out = dict(command=command, threads=args.threads, torch=torch.__version__,
               machine=platform.processor() or platform.machine(),
               cpu_count=os.cpu_count(), results=results, failed=failed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + '\n')
    write_keeping_notes(
        args.out.with_suffix('.md'),
        f'# Throughput: pyg_unimol2 vs official (unimol_tools 0.1.6)\n\n'
        f'```bash\n{command}\n```\n\n'
        f'torch {torch.__version__}, {args.threads} thread(s), '
        f'{os.cpu_count()} CPU cores; median of {args.steps} steps after '
        f'{args.warmup} warm-up step(s). Peak memory: live CPU tensor '
        f'bytes allocated during one step (profiler allocation events), see '
        f'the docstring of `benchmarks/throughput.py`.\n\n'
        f'{md}\n' + ''.join(f'\n{profile_markdown(r)}\n' for r in results
                            if 'profile' in r))
    if failed:
        sys.exit(f'{len(failed)} of {len(args.cases)} cases failed: '
                 + ', '.join(f['case'] for f in failed))
    return out


if __name__ == '__main__':
    main()
