"""``benchmarks/scaling_study.py`` end to end on 120 real MOSES molecules:
three CPU presets pretrained with one recipe, their metrics copied, the fit
written and reproducible by the printed command, the largest shipped as
named weights that load, and a killed study resuming without re-training
finished runs."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pyg_unimol2.checkpoints import load_backbone
from pyg_unimol2.checkpoints.bundled import bundled_file, bundled_weights
from pyg_unimol2.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ('80K', '180K', '420K')


def _study():
    spec = importlib.util.spec_from_file_location(
        'scaling_study', ROOT / 'benchmarks' / 'scaling_study.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_study_fits_ships_and_resumes(store, tmp_path, capsys):
    results, weights = tmp_path / 'results', tmp_path / 'weights'
    args = ['--store', str(store), '--work', str(tmp_path / 'work'),
            '--results', str(results), '--presets', ','.join(PRESETS),
            '--held-out', '1', '--steps', '24', '--valid-every', '4',
            '--valid-fraction', '0.2', '--warmup', '4', '--skip-steps', '4',
            '--parallel', '2', '--ship', '420K:study-420k',
            '--weights-dir', str(weights)]
    study = _study()
    study.main(args)
    printed = capsys.readouterr().out
    for preset in PRESETS:
        run = results / 'runs' / preset
        config = json.loads((run / 'config.json').read_text())
        assert config['preset'] == preset and config['max_steps'] == 24
        assert config['max_batch_size'] == 32 and config['seed'] == 0
        steps = [json.loads(line)['step'] for line in
                 (run / 'metrics.jsonl').read_text().splitlines()
                 if 'valid_loss' in line]
        assert steps == list(range(4, 25, 4))
    fit = json.loads((results / 'scaling_fit.json').read_text())
    assert {r['preset']: r['role'] for r in fit['runs']} == {
        '80K': 'fit', '180K': 'fit', '420K': 'predict'}
    assert fit['points'] == 2 * 5  # steps 8-24 of the fitted runs
    assert (results / 'scaling_fit.png').is_file()
    md = (results.with_suffix('.md')).read_text()
    assert '| 420K | 422,910 | 4 | 96 | 32 | 8 | held out |' in md
    assert f'| {results / "runs" / "420K"} (420K) | 0.42M | 5 |' in printed

    # the documented re-fit gives the same coefficients
    refit = md.split('unimol2 scaling-fit ')[1].split('\n')[0].split()
    refit[refit.index('--out') + 1] = str(tmp_path / 'refit')
    cli(['scaling-fit'] + refit)
    again = json.loads((tmp_path / 'refit' / 'scaling_fit.json').read_text())
    for name, value in fit['coefficients'].items():
        assert again['coefficients'][name] == pytest.approx(value, rel=1e-6)

    # the shipped weights: the last checkpoint of 420K, with its recipe
    entry = bundled_weights(weights)['study-420k']
    assert entry['preset'] == '420K' and entry['steps'] == 24
    assert entry['valid_loss'] == pytest.approx(
        json.loads((results / 'study.json').read_text())
        ['presets']['420K']['final_valid_loss'])
    assert 'scaling_study.py' in entry['recipe']
    shipped = load_backbone(bundled_file('study-420k', weights))
    trained = load_backbone(tmp_path / 'work' / '420K' / 'checkpoints' /
                            'step_00000024.pt')
    for (name, a), b in zip(shipped.state_dict().items(),
                            trained.state_dict().values()):
        torch.testing.assert_close(a, b.half().float(), msg=name)

    # a second call trains nothing (every run is finished) and refits
    mtime = (tmp_path / 'work' / '80K' / 'metrics.jsonl').stat().st_mtime
    study.main(args)
    assert 'pretraining' not in capsys.readouterr().out
    assert (tmp_path / 'work' / '80K' / 'metrics.jsonl').stat().st_mtime \
        == mtime
