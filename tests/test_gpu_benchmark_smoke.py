"""``benchmarks/gpu.py``: the ``--smoke`` run (CPU, toy model, both
implementations) in the reference environment, the analytic FLOP count of
``benchmarks/flops.py`` against ``FlopCounterMode``, the peak table, and
the one-line error without a CUDA device."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch

from pyg_unimol2.data import from_smiles, to_dense

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'benchmarks' / 'gpu.py'
REFERENCE_PYTHON = os.environ.get('UNIMOL2_REFERENCE_PYTHON')


@pytest.fixture
def benchmarks(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / 'benchmarks'))


@pytest.mark.skipif(
    not REFERENCE_PYTHON, reason='UNIMOL2_REFERENCE_PYTHON (the interpreter '
    'of .venv-ref with unimol_tools) is not set; `make test` sets it')
def test_gpu_benchmark_smoke(tmp_path):
    out = tmp_path / 'gpu.json'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    subprocess.run([REFERENCE_PYTHON, str(SCRIPT), '--smoke', '--threads',
                    '1', '--out', str(out)], check=True, env=env, cwd=ROOT,
                   capture_output=True, timeout=120)
    run = json.loads(out.read_text())
    assert run['smoke'] and run['failed'] == [] and run['peak_tflops'] == 1.0
    result, = run['results']
    assert result['case'] == 'toy-moses-4' and result['precision'] == 'bf16'
    flops = result['model_flops']
    assert flops['train'] > 2 * flops['infer'] > 0
    assert sum(flops['forward_components'].values()) == flops['infer']
    assert set(result['implementations']) == {'ours', 'official'}
    for mode in ('train', 'infer'):
        assert math.isfinite(result[f'{mode}_speedup_paired_median'])
        assert len(result[f'{mode}_speedup_per_step']) == 2
        for impl in result['implementations'].values():
            entry = impl[mode]
            assert entry['molecules_per_s'] > 0 and entry['peak_mib'] > 0
            assert len(entry['step_s']) == 2
            # MFU = model FLOPs / median step time / (fake) peak
            assert math.isfinite(entry['mfu']) and entry['mfu'] > 0
            assert entry['mfu'] == pytest.approx(
                flops[mode] / entry['median_s'] / 1e12)
    assert result['cls_max_rel_diff'] < 1e-4
    for path in ('packed', 'padded'):
        check = run['flop_check'][path]
        assert check['forward']['rel_diff'] < 1e-3
        assert check['train']['rel_diff'] < 1e-3
    assert '| toy-moses-4 | train |' in out.with_suffix('.md').read_text()


def _batch() -> Batch:
    # different sizes, so the batch has padding
    smiles = ['CCO', 'c1ccccc1O', 'CC(=O)Nc1ccc(O)cc1']
    return to_dense(Batch.from_data_list([from_smiles(s, seed=0)
                                          for s in smiles]))


def test_flop_count_equals_flop_counter(benchmarks):
    from flops import CHECK_CONFIG, flop_check, step_flops
    dense = _batch()
    check = flop_check(dense)
    B, L = dense.atom_mask.shape
    assert check['padded']['pair_rows'] == B * (L + 1)**2
    assert check['packed']['pair_rows'] == (3 + 1)**2 + (7 + 1)**2 + 12**2
    for path in ('packed', 'padded'):
        res = check[path]
        assert res['forward']['analytic'] == res['forward']['counted']
        assert res['train']['analytic'] == res['train']['counted']
        for name, module in res['modules'].items():
            assert module['analytic'] == module['counted'] > 0, name
        # model FLOPs leave out the recomputed outer-product projection
        assert 0 < res['train']['model_rel_diff'] < 0.05
    # the MFU count is the padded one; on CPU attention pads the keys to 16
    assert (step_flops(CHECK_CONFIG, B, L, key_block=16).train ==
            check['padded']['train']['model'])
    model = step_flops(CHECK_CONFIG, B, L).components  # GPU: no key padding
    cpu = step_flops(CHECK_CONFIG, B, L, key_block=16).components
    assert model['attention'] < cpu['attention']
    assert {k: v for k, v in model.items() if k != 'attention'} == \
        {k: v for k, v in cpu.items() if k != 'attention'}


def test_peak_table(benchmarks):
    from gpu import device_peak
    assert device_peak('NVIDIA H100 80GB HBM3', 'bf16', None)[0] == 989.0
    assert device_peak('NVIDIA H100 PCIe', 'bf16', None)[0] == 756.0
    assert device_peak('NVIDIA H200', 'bf16', None)[0] == 989.0
    assert device_peak('NVIDIA A100-SXM4-80GB', 'bf16', None)[0] == 312.0
    assert device_peak('NVIDIA L40S', 'bf16', None)[0] == 362.0
    assert device_peak('NVIDIA L4', 'bf16', None)[0] == 121.0
    peak, source = device_peak('Tesla T4', 'bf16', None)
    assert peak is None and '--peak-tflops' in source
    assert device_peak('NVIDIA H200', 'fp32', None)[0] is None
    assert device_peak('Tesla T4', 'bf16', 65.0) == (65.0, '--peak-tflops')


@pytest.mark.skipif(torch.cuda.is_available(), reason='has a CUDA device')
def test_without_cuda_one_line_error(tmp_path):
    out = tmp_path / 'gpu.json'
    proc = subprocess.run([sys.executable, str(SCRIPT), '--out', str(out)],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith('benchmarks/gpu.py: error: no CUDA device')
    assert '--smoke' in proc.stderr and 'Traceback' not in proc.stderr
    assert not out.exists()
