"""Smoke runs of the benchmark scripts (``--smoke``: 64 molecules, one
epoch, every model), as CI runs them."""
import importlib.util
import json
from pathlib import Path

import pytest
from conftest import COMPAS_CSV

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(
        name, ROOT / 'benchmarks' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _smoke(tmp_path, name, *extra):
    args = ['--smoke', '--threads', '1', '--workers', '1',
            '--root', str(tmp_path / 'data'),
            '--results-dir', str(tmp_path / 'results'),
            '--runs-dir', str(tmp_path / 'runs'), *extra]
    _script(name).main(args)
    results = json.loads((tmp_path / 'results' /
                          f'{name}_smoke.json').read_text())
    md = (tmp_path / 'results' / f'{name}_smoke.md').read_text()
    return results, md


@pytest.mark.slow
def test_qm9_smoke(tmp_path):
    results, md = _smoke(tmp_path, 'qm9')
    assert results['columns'] == ['homo', 'lumo', 'gap', 'alpha']
    models = [r['model'] for r in results['rows']]
    assert len(models) == 4 and models[1:] == ['SchNet', 'DimeNet++',
                                              'Morgan FP + MLP']
    for row in results['rows']:
        assert all(len(row['mae'][c]) == 1 and row['mae'][c][0] > 0
                   for c in results['columns'])
    assert '| paper: Uni-Mol2 1.1B | 0.0035 (1e-05) | 0.0035 (1e-05) | ' \
        '0.0035 (1e-05) | 0.305 (0.003) |' in md and 'command: `' in md


@pytest.mark.slow
def test_compas1d_smoke_runs_both_feature_modes(tmp_path):
    results, md = _smoke(tmp_path, 'compas1d', '--csv', str(COMPAS_CSV))
    assert results['columns'] == ['aEA']
    labels = [r['model'] for r in results['rows']]
    assert any('with atom/bond features' in m for m in labels)
    assert any('elements + geometry' in m for m in labels)


@pytest.mark.slow
def test_qm9_limited_smoke(tmp_path):
    results, md = _smoke(tmp_path, 'qm9_limited', '--ema-decay', '0.9')
    assert results['columns'] == ['gap']
    assert all(r['model'].startswith('train50: ') for r in results['rows'])
    assert results['meta']['test_train_scaffold_tanimoto'] < 1
    assert '(Ha)' in md and '| paper: train50: Uni-Mol2 84M | 0.0062' in md
    assert results['meta']['train_sizes'] == [50]
    assert results['meta']['split'].startswith('scaffold_similarity (seed 0)'
                                               '; train: 50 molecules')


def test_qm9_limited_header_states_the_trained_sizes():
    split = dict(kind='scaffold_similarity', seed=0,
                 sizes=dict(train=16000, valid=2000, test=2000))
    describe = _script('qm9_limited').split_description
    assert describe(split, [50, 200], 200) == (
        'scaffold_similarity (seed 0); train: 50 / 200 molecules (per size '
        'and seed a stratified subset of its 16000 training molecules); '
        'valid: 200 random of its 2000; test: its 2000')
    assert describe(split, [100], 0).endswith('valid: its 2000; test: its '
                                              '2000')


def test_multitask_smoke_and_report(tmp_path):
    dirs = ['--root', str(tmp_path / 'data'), '--runs-dir',
            str(tmp_path / 'runs'), '--results-dir', str(tmp_path / 'res')]
    module = _script('multitask')
    module.main(['--smoke', '--workers', '1', *dirs])
    module.main(['--report', *dirs])
    md = (tmp_path / 'res' / 'multitask.md').read_text()
    row = next(line for line in md.splitlines()
               if line.startswith('| freesolv | expt | mae |'))
    assert row.count('n=1') == 3  # fingerprint, alone, joint
    runs = json.loads((tmp_path / 'res' / 'multitask.json').read_text())
    joint = next(r for r in runs['runs'] if r['mode'] == 'joint')
    assert joint['test']['expt']['count'] > 0
