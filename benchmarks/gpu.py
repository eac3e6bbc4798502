r"""GPU training and inference throughput, peak memory and model FLOPs
utilisation (MFU): pyg_unimol2 vs the official Uni-Mol2 implementation
(``unimol_tools`` 0.1.6), same weights, same batches, in one process.

Runs in the reference environment, which holds both implementations, on a
machine with a CUDA device::

    .venv-ref/bin/python benchmarks/gpu.py --out benchmarks/results/gpu.json

Cases: the ``84M``, ``164M`` and ``310M`` presets (``--presets``) on batches
of the first 32 and 128 MOSES test molecules (``--batch-sizes``; heavy
atoms, RDKit ETKDGv3 + MMFF conformers, as ``benchmarks/throughput.py``),
under bf16 autocast (``--precision``; fp32 weights, gradients and fused
AdamW). The models, the batches, the training step (CLS -> the unimol_tools
linear head, MSE, AdamW) and the inference pass are those of
``benchmarks/throughput.py`` (official random init, every tensor redrawn,
loaded into ours with :func:`~pyg_unimol2.models.official.load_official`):
both implementations alternate step by step, after ``--warmup`` steps
each; molecules/s is the batch size over the median of ``--steps`` step
times, and the *paired* speedup is the median over steps of official /
ours time of the two runs of the same step.

* **Timing**: :func:`torch.cuda.synchronize`, then the step between two
  CUDA events (kernel launches and host work included).
* **Peak memory**: :func:`torch.cuda.max_memory_allocated` during one
  extra untimed step minus the memory allocated before it (``peak_mib``:
  activations, gradients, temporaries; the weights, gradients and AdamW
  state of both models are resident before the step), and the absolute
  maximum (``max_allocated_mib``, both models' resident state included).
* **MFU**: the model FLOPs of the step (:func:`flops.step_flops`: an
  analytic count of the matrix products of the forward, and of forward +
  backward for training, for the batch's padded shape) over the median
  step time and the device's peak dense bf16 FLOP/s. Both implementations
  get the same model FLOPs, so their MFU ratio is their throughput ratio
  (ours computes fewer: it skips the padded pairs; the official code
  more: it materialises the outer product). The peak is ``--peak-tflops``
  or the first :data:`PEAK_BF16_TFLOPS` entry whose key is a substring of
  :func:`torch.cuda.get_device_name`: NVIDIA's datasheet tensor-core BF16
  figures, which are quoted with 2:4 structured sparsity, halved (dense),
  at boost clocks; a card that throttles (power, heat) cannot reach them.
  Unknown devices and fp32 get no MFU unless ``--peak-tflops`` is given.
* **Equivalence**: as ``benchmarks/throughput.py`` (eval, fp32, each of
  the first ``--check`` molecules alone), on the device.
* **FLOP check**: :func:`flops.flop_check`, the analytic count against
  :class:`~torch.utils.flop_counter.FlopCounterMode` for a tiny model
  (:data:`flops.CHECK_CONFIG`) on the first 4 molecules, on the CPU
  (``flop_check`` in the JSON).

``--smoke`` (CI, no GPU): the same code path on the CPU with the two-layer
toy model, 4 molecules, 1 warm-up and 2 timed steps, bf16 CPU autocast,
CPU peak memory as ``benchmarks/throughput.py`` measures it, and a fake
peak of 1 TFLOP/s. Without ``--smoke`` and without a CUDA device the
script stops with a one-line error.

Prints a markdown table, writes the JSON (``--out``) and a markdown file
beside it.
"""
import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch_geometric.data import Batch

from pyg_unimol2.data import to_dense
from pyg_unimol2.errors import ConfigError, run_cli

# sibling scripts (benchmarks/ is sys.path[0] when this one runs)
from flops import flop_check, step_flops  # isort: skip
from throughput import (Runner, alternate, build_models,  # isort: skip
                        check_equivalence, compare, moses_data, pair_runners)

HERE = Path(__file__).resolve().parent
MIB = 2.0**20
#: Peak dense bf16 tensor-core TFLOP/s by a substring of the device name
#: (first match wins, so the specific names come first): NVIDIA datasheet
#: figures "with sparsity", halved.
PEAK_BF16_TFLOPS: Tuple[Tuple[str, float], ...] = (
    ('GH200', 989.0),  # Hopper, as H100 SXM
    ('H200 NVL', 835.0),  # 1,671 sparse
    ('H200', 989.0),  # H200 SXM: 1,979 sparse
    ('H100 NVL', 835.0),  # 1,671 sparse
    ('H100 PCIe', 756.0),  # 1,513 sparse
    ('H100', 989.0),  # H100 SXM ("H100 80GB HBM3"): 1,979 sparse
    ('B200', 2250.0),  # HGX B200: 4.5 PFLOP/s sparse
    ('A100', 312.0),  # SXM and PCIe: 624 sparse
    ('L40S', 362.0),  # datasheet: 362 dense, 733 sparse
    ('L40', 181.0),  # 362 sparse
    ('L4', 121.0),  # 242 sparse
    ('RTX 4090', 165.0),  # FP32 accumulate: 330 sparse
)
SMOKE_PEAK_TFLOPS = 1.0


def device_peak(name: str, precision: str,
                override: Optional[float]) -> Tuple[Optional[float], str]:
    r"""Peak TFLOP/s for MFU and where it comes from."""
    if override is not None:
        return override, '--peak-tflops'
    if precision != 'bf16':
        return None, f'no {precision} peak in the table: pass --peak-tflops'
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return tflops, f"table: '{key}' in '{name}'"
    return None, f"'{name}' is not in the table: pass --peak-tflops"


class DeviceRunner(Runner):
    r"""A :class:`throughput.Runner` timed with CUDA events and measured
    with the CUDA allocator's statistics on a CUDA device (on the CPU, as
    its base class)."""
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_allocated: Dict[str, int] = {}

    def timed(self, mode: str, record: bool) -> None:
        if self.device.type != 'cuda':
            return super().timed(mode, record)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(self.device)
        start.record()
        self.step(mode)
        end.record()
        end.synchronize()
        if record:
            self.times[mode].append(start.elapsed_time(end) / 1e3)

    def measure_peak(self, mode: str) -> None:
        if self.device.type != 'cuda':
            return super().measure_peak(mode)
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self.step(mode)
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        self.peak[mode] = peak - before
        self.max_allocated[mode] = peak


def build_on(preset: str, device: torch.device, check_data: list) -> tuple:
    r"""Ours and the official model of :obj:`preset` on :obj:`device` and
    their CLS max relative difference on :obj:`check_data`."""
    ours, official = build_models(preset)
    ours.to(device)
    official.to(device)
    return ours, official, check_equivalence(ours, official, check_data)


def run_case(ours, official, max_rel: float, preset: str, data: list,
             steps: int, warmup: int, precision: str,
             peak_tflops: Optional[float]) -> dict:
    device = next(ours.parameters()).device
    dense = to_dense(Batch.from_data_list(data)).to(device)
    runners = pair_runners(ours, official, dense, DeviceRunner, precision)
    alternate(runners, steps, warmup)

    B, L = dense.atom_mask.shape
    num_atoms = dense.atom_mask.sum(1)
    model = step_flops(ours.config, B, L)
    ours_rows = int(((num_atoms + 1)**2).sum())
    executed = step_flops(ours.config, B, L, ours_rows)
    flops = {'train': model.train, 'infer': model.forward}
    result = dict(
        case=f'{preset}-moses-{B}', preset=preset, batch_size=B,
        padded_atoms=L, mean_atoms=float(num_atoms.float().mean()),
        parameters=ours.num_parameters(), precision=precision, steps=steps,
        warmup=warmup, cls_max_rel_diff=max_rel,
        model_flops=dict(flops, forward_components=model.components),
        ours_executed_flops=dict(
            train=executed.train + executed.recompute,
            infer=executed.forward))
    result.update(compare(runners, B))
    for r in runners:
        for mode, entry in result['implementations'][r.name].items():
            tflops = flops[mode] / entry['median_s'] / 1e12
            entry['tflops'] = tflops
            entry['mfu'] = tflops / peak_tflops if peak_tflops else None
            entry['max_allocated_mib'] = (r.max_allocated[mode] / MIB
                                          if mode in r.max_allocated else
                                          None)
    return result


def _mfu(value: Optional[float]) -> str:
    return '-' if value is None else f'{100 * value:.1f}%'


def table(results: List[dict]) -> str:
    lines = [
        '| case | mode | ours mol/s | official mol/s | paired speedup | '
        'ours MFU | official MFU | model GFLOP/step | ours peak MiB | '
        'official peak MiB | CLS max rel. diff |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for res in results:
        impl = res['implementations']
        for mode in ('train', 'infer'):
            o, f = impl['ours'][mode], impl['official'][mode]
            lines.append(
                f"| {res['case']} | {mode} | {o['molecules_per_s']:.1f} | "
                f"{f['molecules_per_s']:.1f} | "
                f"**{res[f'{mode}_speedup_paired_median']:.2f}x** | "
                f"{_mfu(o['mfu'])} | {_mfu(f['mfu'])} | "
                f"{res['model_flops'][mode] / 1e9:.4g} | "
                f"{o['peak_mib']:.0f} | {f['peak_mib']:.0f} | "
                f"{res['cls_max_rel_diff']:.1e} |")
    return '\n'.join(lines)


def check_summary(check: dict) -> str:
    packed, padded = check['packed'], check['padded']
    return (f"FLOP count check ({check['config']} model, "
            f"{check['batch_size']} molecules, CPU, FlopCounterMode): "
            f"relative difference forward {packed['forward']['rel_diff']:.1e}"
            f" (our packed pairs) / {padded['forward']['rel_diff']:.1e} "
            f"(padded, the MFU count), training "
            f"{packed['train']['rel_diff']:.1e} / "
            f"{padded['train']['rel_diff']:.1e} (model FLOPs leave out the "
            f"recomputed outer-product projection: "
            f"{padded['train']['model_rel_diff']:.1%} fewer).")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--presets', nargs='+', default=['84M', '164M',
                                                          '310M'],
                        choices=['84M', '164M', '310M', 'small', 'toy'])
    parser.add_argument('--batch-sizes', nargs='+', type=int,
                        default=[32, 128])
    parser.add_argument('--precision', default='bf16',
                        choices=['bf16', 'fp32'])
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--check', type=int, default=4,
                        help='molecules checked for equivalence')
    parser.add_argument('--peak-tflops', type=float,
                        help="the device's peak TFLOP/s for MFU (overrides "
                        "the table)")
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--smoke', action='store_true',
                        help='CPU, toy model, 4 molecules, 2 steps (CI)')
    parser.add_argument('--out', type=Path,
                        help='JSON output (default: benchmarks/results/'
                        'gpu.json, gpu_smoke.json with --smoke)')
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = HERE / 'results' / ('gpu_smoke.json' if args.smoke else
                                       'gpu.json')
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise ConfigError(f'--peak-tflops must be positive (got '
                          f'{args.peak_tflops})')
    if min(args.batch_sizes) < 1 or args.steps < 1 or args.warmup < 0:
        raise ConfigError('--batch-sizes and --steps must be positive and '
                          '--warmup non-negative')
    if args.smoke:
        args.presets, args.batch_sizes = ['toy'], [4]
        args.steps, args.warmup, args.check = 2, 1, 2
    return args


def target(args: argparse.Namespace
           ) -> Tuple[torch.device, str, Optional[float], str]:
    r"""The device, its name, the peak TFLOP/s for MFU and its source."""
    if args.smoke:
        return (torch.device('cpu'), 'cpu (smoke)',
                args.peak_tflops or SMOKE_PEAK_TFLOPS, 'smoke: fake peak')
    if not torch.cuda.is_available():
        raise ConfigError(
            f'no CUDA device (torch {torch.__version__}, CUDA build: '
            f'{torch.version.cuda}); run it on a GPU machine, or pass '
            f'--smoke for the CPU check of the code path')
    device = torch.device('cuda', torch.cuda.current_device())
    name = torch.cuda.get_device_name(device)
    return (device, name) + device_peak(name, args.precision,
                                        args.peak_tflops)


def run_all(args: argparse.Namespace, device: torch.device, data: list,
            peak: Optional[float]) -> Tuple[List[dict], List[dict]]:
    r"""Every preset x batch size: the results and the failed cases (an
    out-of-memory error fails its case, not the run)."""
    results, failed = [], []
    for preset in args.presets:
        built = None  # the models, shared by the batch sizes
        for size in args.batch_sizes:
            case = f'{preset}-moses-{size}'
            try:
                if built is None:
                    built = build_on(preset, device, data[:args.check])
                results.append(run_case(*built, preset, data[:size],
                                        args.steps, args.warmup,
                                        args.precision, peak))
            except Exception as e:
                traceback.print_exc()
                failed.append(dict(case=case,
                                   error=f'{type(e).__name__}: {e}'))
                print(f'case {case} failed: {failed[-1]["error"]}',
                      file=sys.stderr, flush=True)
            if device.type == 'cuda':
                torch.cuda.empty_cache()
        del built
    return results, failed


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, name, peak, source = target(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if peak is None:
        print(f'warning: no MFU ({source})', file=sys.stderr, flush=True)
    command = ' '.join(['.venv-ref/bin/python', 'benchmarks/gpu.py'] +
                       (argv if argv is not None else sys.argv[1:]))
    data = moses_data(max(args.batch_sizes + [4]))
    check = flop_check(to_dense(Batch.from_data_list(data[:4])))
    results, failed = run_all(args, device, data, peak)

    md = table(results) + ''.join(f"\n\n**{f['case']} failed:** "
                                  f"`{f['error']}`" for f in failed)
    print(md)
    out = dict(command=command, smoke=args.smoke, device=name,
               peak_tflops=peak, peak_source=source, torch=torch.__version__,
               cuda=torch.version.cuda, precision=args.precision,
               steps=args.steps, warmup=args.warmup, results=results,
               failed=failed, flop_check=check)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + '\n')
    peak_text = (f'{peak:g} TFLOP/s ({source})' if peak else
                 f'none ({source})')
    autocast = ('bf16 autocast' if args.precision == 'bf16' else
                'fp32, no autocast')
    args.out.with_suffix('.md').write_text(
        f'# GPU throughput and MFU: pyg_unimol2 vs official '
        f'(unimol_tools 0.1.6)\n\n```bash\n{command}\n```\n\n'
        f'{name}, torch {torch.__version__} (CUDA {torch.version.cuda}), '
        f'{autocast}; median of {args.steps} steps after {args.warmup} '
        f'warm-up step(s); peak {peak_text}. Speedup: paired median of '
        f'official / ours step time. MFU: analytic model FLOPs of the '
        f'padded batch / median step time / peak. Peak memory: above the '
        f'memory allocated before the step. See the docstring of '
        f'`benchmarks/gpu.py`.\n\n{md}\n\n{check_summary(check)}\n')
    if failed:
        total = len(args.presets) * len(args.batch_sizes)
        sys.exit(f'{len(failed)} of {total} cases failed: ' +
                 ', '.join(f['case'] for f in failed))
    return out


if __name__ == '__main__':
    run_cli(main, prog='benchmarks/gpu.py')
