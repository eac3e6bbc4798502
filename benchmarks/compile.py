r"""``torch.compile`` vs eager for the two cases of
``benchmarks/throughput.py`` (same batches, same weights), on this machine.

For each case: a model and a copy of it under :func:`torch.compile`
(inductor, default mode); the compile time (the first call), then eager
and compiled steps alternating (median of ``--steps``), for inference
(``eval``, :func:`torch.inference_mode`) and a training step (``train``,
forward, CLS loss, backward). Writes ``--out`` (JSON) and a markdown table
beside it (keeping its hand-written ``## Notes``)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compile.py --threads 1 \
        --out benchmarks/results/compile.json
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch_geometric.data import Batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import CASES, moses_data, qm9_data  # noqa: E402

from pyg_unimol2.bench.results import write_keeping_notes  # noqa: E402
from pyg_unimol2.data import to_dense  # noqa: E402
from pyg_unimol2.models import UniMol2  # noqa: E402


def step(model: torch.nn.Module, dense, train: bool) -> None:
    if train:
        model.train()
        model(dense).cls.pow(2).mean().backward()
    else:
        model.eval()
        with torch.inference_mode():
            model(dense)


def run_case(case: str, steps: int) -> dict:
    size, dataset, batch_size = CASES[case]
    data = (moses_data if dataset == 'moses' else qm9_data)(batch_size)
    dense = to_dense(Batch.from_data_list(data))
    torch.manual_seed(0)
    eager = UniMol2.from_preset(size)
    copy = UniMol2.from_preset(size)
    copy.load_state_dict(eager.state_dict())
    compiled = torch.compile(copy)
    result = dict(case=case)
    for mode in ('infer', 'train'):
        train = mode == 'train'
        start = time.perf_counter()
        step(compiled, dense, train)
        first = time.perf_counter() - start
        step(eager, dense, train)
        times = {'eager': [], 'compiled': []}
        for _ in range(steps):
            for name, model in (('eager', eager), ('compiled', compiled)):
                start = time.perf_counter()
                step(model, dense, train)
                times[name].append(time.perf_counter() - start)
        e, c = (statistics.median(times[k]) for k in ('eager', 'compiled'))
        result[mode] = dict(first_call_s=first, eager_s=e, compiled_s=c,
                            speedup=e / c, step_s=times)
        print(f'{case} {mode}: first compiled call {first:.1f} s, eager '
              f'{e * 1e3:.1f} ms, compiled {c * 1e3:.1f} ms, speedup '
              f'{e / c:.2f}x', flush=True)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cases', nargs='+', choices=sorted(CASES),
                        default=['small-qm9-64', '84M-moses-16'])
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--out', type=Path,
                        default=Path('benchmarks/results/compile.json'))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [run_case(case, args.steps) for case in args.cases]
    command = 'OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compile.py ' + \
        ' '.join(sys.argv[1:] if argv is None else argv)
    args.out.write_text(json.dumps(dict(command=command,
                                        torch=torch.__version__,
                                        threads=args.threads,
                                        results=results), indent=1) + '\n')
    lines = ['# torch.compile vs eager (CPU)', '', '```bash', command, '```',
             '', f'torch {torch.__version__}, {args.threads} thread(s), '
             f'median of {args.steps} alternating steps.', '',
             '| case | mode | first compiled call (s) | eager ms | compiled '
             'ms | speedup |', '|---|---|---|---|---|---|']
    for r in results:
        for mode in ('infer', 'train'):
            m = r[mode]
            lines.append(f'| {r["case"]} | {mode} | {m["first_call_s"]:.1f} '
                         f'| {m["eager_s"] * 1e3:.1f} | '
                         f'{m["compiled_s"] * 1e3:.1f} | '
                         f'{m["speedup"]:.2f}x |')
    write_keeping_notes(args.out.with_suffix('.md'),
                        '\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
