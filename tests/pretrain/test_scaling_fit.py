"""The scaling-law fit (pyg_unimol2/pretrain/scaling.py, ``unimol2
scaling-fit``): recovery of known coefficients from noisy trajectories of
eq. 10, the paper's units, Table 3's metrics, the command on run
directories in the trainer's format (JSON, PNG, table, reproducibility), a
real pretraining run, and bad input."""
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib.image
import numpy as np
import pytest

from pyg_unimol2.cli import main
from pyg_unimol2.models import UniMol2
from pyg_unimol2.plots import PANEL_PIXELS
from pyg_unimol2.pretrain import ObjectiveConfig, PretrainConfig
from pyg_unimol2.pretrain.scaling import read_run, scaling_fit
from pyg_unimol2.pretrain.scaling_law import (PAPER_LAW, ScalingLaw,
                                              fit_scaling_law,
                                              scaling_metrics)
from pyg_unimol2.pretrain.trainer import pretrain

REPO = Path(__file__).resolve().parents[2]
#: A CPU-scale law whose three terms all matter for M = 0.1-3 (millions)
#: and S = 100-5000: they are 0.008-0.13, 0.14-0.38 and 0.002-0.1.
CPU_LAW = ScalingLaw(0.02, -0.8, 1.2, -0.25, 0.3, -0.5)
CPU_SIZES = (0.1, 0.25, 0.6, 1.3, 3.0)
CPU_STEPS = np.arange(100, 5001, 100, dtype=float)
#: Relative noise of the synthetic validation losses (0.2%).
NOISE = 0.002
#: Run directories of the command's tests: their presets; the last held out.
PRESETS = ('tiny', 'small', '42M', '84M', '164M')
#: Their law (M = 0.8-165M, S = 100-3000): every term again matters.
RUN_LAW = ScalingLaw(0.2, -0.5, 1.5, -0.3, 0.5, -0.4)
#: Parameters of the presets (the README's table).
PARAMETERS = {'tiny': 799272, 'small': 3193456, '42M': 43788112,
              '84M': 84116080, '164M': 164772016}


def _trajectories(law: ScalingLaw, sizes: Sequence[float],
                  steps: np.ndarray, seed: int = 0):
    """``(m, s, loss)`` of every size at every step, with :data:`NOISE`."""
    m = np.repeat(np.asarray(sizes, dtype=float), len(steps))
    s = np.tile(steps, len(sizes))
    rng = np.random.default_rng(seed)
    return m, s, law(m, s) * (1 + NOISE * rng.standard_normal(len(m)))


def test_fit_recovers_known_coefficients():
    fit = fit_scaling_law(*_trajectories(CPU_LAW, CPU_SIZES[:4], CPU_STEPS))
    assert fit.points == 200
    # With 200 points at 0.2% noise the standard errors are 0.05-1.1% of
    # the coefficients: each estimate is within 4 of them (the errors are
    # calibrated), and so within 5% of the truth (they are small).
    for name, true in CPU_LAW.to_dict().items():
        value, err = getattr(fit.law, name), getattr(fit.stderr, name)
        assert 0 < err < 0.015 * abs(true), name
        assert abs(value - true) < 4 * err, name
        assert abs(value - true) < 0.05 * abs(true), name
    # The held-out 3M model, an extrapolation in M.
    m, s, loss = _trajectories(CPU_LAW, CPU_SIZES[4:], CPU_STEPS, seed=1)
    metrics = scaling_metrics(fit.law(m, s), loss)
    assert metrics['rmae'] < 0.01
    assert metrics['r_squared'] > 0.99 and metrics['pearson'] > 0.99


def test_paper_scale_fit_predicts_the_larger_models():
    # The paper's setting: eq. 11 on 42M-310M, validations every 10,000
    # steps after the 200,000-step transient, 570M and 1.1B held out and
    # scored over their last 100,000 steps.
    sizes = (43.788112, 84.11608, 164.772016, 310.08288)
    steps = np.arange(10_000, 1_000_001, 10_000, dtype=float)
    points = [[v[steps > 200_000] for v in
               _trajectories(PAPER_LAW, [size], steps, seed=k)]
              for k, size in enumerate(sizes)]
    fit = fit_scaling_law(*map(np.concatenate, zip(*points)))
    for name in ('alpha_m', 'beta_m', 'alpha_s', 'beta_s'):
        assert getattr(fit.law, name) == pytest.approx(
            getattr(PAPER_LAW, name), rel=0.05), name
    # The compute term is 1e-13 of the loss here: not determined, and kept
    # decreasing (a growing one would fit the noise and explode beyond).
    assert fit.stderr.alpha_c > fit.law.alpha_c
    assert fit.law.beta_c <= 0
    last = steps[-10:]
    for k, size in enumerate((570.233696, 1129.209696), start=4):
        m, s, loss = _trajectories(PAPER_LAW, [size], last, seed=k)
        assert scaling_metrics(fit.law(m, s), loss)['rmae'] < 0.01


def test_fit_without_noise_is_exact():
    m = np.repeat(CPU_SIZES, len(CPU_STEPS))
    s = np.tile(CPU_STEPS, len(CPU_SIZES))
    fit = fit_scaling_law(m, s, CPU_LAW(m, s))
    for name, true in CPU_LAW.to_dict().items():
        assert getattr(fit.law, name) == pytest.approx(true, rel=1e-6), name
    assert fit.rss < 1e-20


def test_coefficients_the_data_do_not_determine():
    # One step for every size: the step term is a constant, so alpha_s and
    # beta_s cannot be told apart; the size terms still can.
    sizes = np.geomspace(0.1, 30.0, 12)
    m, s = sizes, np.full(len(sizes), 1000.0)
    fit = fit_scaling_law(m, s, CPU_LAW(m, s))
    assert math.isinf(fit.stderr.alpha_s) and math.isinf(fit.stderr.beta_s)
    assert np.allclose(fit.law(m, s), CPU_LAW(m, s), rtol=1e-6)


def test_paper_law_units():
    # M in millions of parameters, S in steps: eq. 11 gives the paper's
    # predictions at step 810,000 (570M: 0.088, 1.1B: 0.0871) to within
    # the rounding of its printed coefficients (M: our presets' counts).
    assert PAPER_LAW(570.233696, 810_000) == pytest.approx(0.088, rel=0.01)
    assert PAPER_LAW(1129.209696, 810_000) == pytest.approx(0.0871, rel=0.01)
    assert PAPER_LAW(570.233696, 810_000) > PAPER_LAW(1129.209696, 810_000)


def test_scaling_metrics_definitions():
    metrics = scaling_metrics([1.1, 1.8, 3.3], [1.0, 2.0, 3.0])
    assert metrics['rmae'] == pytest.approx(0.1)  # eq. 13: |err| / |y|
    assert metrics['mse'] == pytest.approx(0.14 / 3)
    assert metrics['r_squared'] == pytest.approx(1 - 0.14 / 2)
    assert metrics['pearson'] == pytest.approx(
        np.corrcoef([1.1, 1.8, 3.3], [1.0, 2.0, 3.0])[0, 1])
    assert metrics['points'] == 3


def _write_run(run: Path, preset: str, law: ScalingLaw, last: int,
               valid_every: int = 100, seed: int = 0,
               transient: float = 0.0) -> Dict[int, float]:
    """A run directory as ``unimol2 pretrain`` writes it: ``config.json``
    and ``metrics.jsonl`` with a training line per step and a validation
    line every :obj:`valid_every` steps, whose ``valid_loss`` follows
    :obj:`law` with :data:`NOISE` (times ``1 + transient * exp(-s / 300)``,
    a transient); returns the validation losses by step."""
    run.mkdir(parents=True)
    config = PretrainConfig(store='store', out=str(run), preset=preset,
                            max_steps=last, valid_every=valid_every)
    (run / 'config.json').write_text(json.dumps(config.to_dict(), indent=2))
    m = PARAMETERS[preset] / 1e6
    rng = np.random.default_rng(seed)
    valid = {}
    with open(run / 'metrics.jsonl', 'w') as f:
        for step in range(1, last + 1):
            loss = float(law(m, step)) * (1 + transient * np.exp(-step / 300))
            f.write(json.dumps(dict(
                step=step, loss=loss * 1.1, atom=0.5 * loss, coord=0.3 * loss,
                dist=0.2 * loss, acc=0.9, grad_norm=1.0, molecules=64.0,
                padding=0.1, skipped=0.0, lr=1e-4, skipped_steps=0.0,
                molecules_per_s=100.0)) + '\n')
            if step % valid_every == 0:
                value = loss * (1 + NOISE * rng.standard_normal())
                valid[step] = value
                f.write(json.dumps(dict(
                    step=step, valid_loss=value, valid_atom=0.5 * value,
                    valid_coord=0.3 * value, valid_dist=0.2 * value,
                    valid_acc=0.9, valid_molecules=512.0)) + '\n')
    return valid


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> List[Path]:
    """Run directories of :data:`PRESETS`, 3000 steps, a transient."""
    root = tmp_path_factory.mktemp('scaling_runs')
    for k, preset in enumerate(PRESETS):
        _write_run(root / preset, preset, RUN_LAW, 3000, seed=k,
                   transient=0.5)
    return [root / p for p in PRESETS]


def _command(runs: List[Path], out: Path, *extra: str) -> List[str]:
    return ['scaling-fit', *map(str, runs[:-1]), '--predict', str(runs[-1]),
            '--out', str(out), *extra]


def test_command_writes_json_png_and_table(runs, tmp_path, capsys):
    main(_command(runs, tmp_path / 'a', '--skip-steps', '1000'))
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / 'a' / 'scaling_fit.json').read_text())
    assert record['settings'] == dict(skip_steps=1000, eval_last_steps=0,
                                      metric='valid_loss')
    assert record['points'] == 4 * 20  # steps 1100-3000 of the 4 fitted runs
    by_path = {r['path']: r for r in record['runs']}
    held = by_path[str(runs[-1])]
    assert held['role'] == 'predict' and held['preset'] == '164M'
    assert held['num_parameters'] == PARAMETERS['164M']
    assert held['steps'] == list(range(1100, 3001, 100))
    assert held['metrics']['points'] == 20
    assert held['metrics']['rmae'] < 0.01
    predicted = ScalingLaw(**record['coefficients'])(held['m'],
                                                     held['steps'])
    assert np.allclose(predicted, held['predicted'], rtol=1e-12)
    assert np.asarray(record['covariance']).shape == (6, 6)
    assert all(record['stderr'][k] > 0 for k in record['order'])
    # The table: the law, every coefficient, the held-out run and the
    # paper's Table 3 rows.
    assert 'eq. 10 fitted on 4 runs, 80 validation points' in printed
    for name, value in record['coefficients'].items():
        assert f'| {name} | {value:.4g} |' in printed
    assert (f'| {runs[-1]} (164M) | 164.77M | 20 | '
            f'{held["metrics"]["rmae"]:.4g} | ') in printed
    assert '| paper: Uni-Mol2 570M | | | 0.0169 | 2.450e-6 | 0.92 | 0.85 |' \
        in printed
    # Fig. 4: one panel per run, held-out first.
    image = matplotlib.image.imread(tmp_path / 'a' / 'scaling_fit.png')
    assert image.shape[:2] == (2 * PANEL_PIXELS[1], 4 * PANEL_PIXELS[0])
    # Reproducible: a second run gives the same coefficients.
    main(_command(runs, tmp_path / 'b', '--skip-steps', '1000'))
    again = json.loads((tmp_path / 'b' / 'scaling_fit.json').read_text())
    for name, value in record['coefficients'].items():
        assert again['coefficients'][name] == pytest.approx(value, rel=1e-6)


def test_skipping_the_transient_matters(runs):
    skipped = scaling_fit(runs[:-1], runs[-1:], skip_steps=1000)
    kept = scaling_fit(runs[:-1], runs[-1:], skip_steps=0)
    assert skipped.metrics(skipped.predict_runs[0])['rmae'] < 0.01
    assert kept.metrics(kept.predict_runs[0])['rmae'] > \
        2 * skipped.metrics(skipped.predict_runs[0])['rmae']
    # The metrics of the last 500 steps: 5 validations.
    last = scaling_fit(runs[:-1], runs[-1:], skip_steps=1000,
                       eval_last_steps=500)
    assert last.metrics(last.predict_runs[0])['points'] == 5
    assert last.fit.law == skipped.fit.law


def test_fit_of_an_objective_term(runs):
    total = scaling_fit(runs[:-1], skip_steps=1000)
    atom = scaling_fit(runs[:-1], skip_steps=1000, metric='atom')
    # valid_atom is half of valid_loss: so are the amplitudes.
    assert atom.fit.law.alpha_s == pytest.approx(
        0.5 * total.fit.law.alpha_s, rel=1e-4)
    assert atom.fit.law.beta_s == pytest.approx(total.fit.law.beta_s,
                                                rel=1e-4)


def _bad_runs(root: Path, case: str) -> List[str]:
    """Command-line arguments of a bad input and the message part that
    names it."""
    good = [root / p for p in ('tiny', 'small', '42M')]
    for k, run in enumerate(good):
        _write_run(run, run.name, RUN_LAW, 1000, seed=k)
    if case == 'no metrics.jsonl':
        (good[1] / 'metrics.jsonl').unlink()
        return [*map(str, good)], f'{good[1]}: no metrics.jsonl'
    if case == 'no config.json':
        (good[2] / 'config.json').unlink()
        return [*map(str, good)], f'{good[2]}: no config.json'
    if case == 'no validation':
        lines = (good[0] / 'metrics.jsonl').read_text().splitlines()
        (good[0] / 'metrics.jsonl').write_text(''.join(
            line + '\n' for line in lines if 'valid_' not in line))
        return [*map(str, good)], (f'{good[0] / "metrics.jsonl"}: no '
                                   f'validation point (valid_loss)')
    if case == 'too few points':
        # Two validations after step 800 per run: 6 points, 6 coefficients.
        return [*map(str, good), '--skip-steps', '800'], \
            'too few validation points after step 800'
    if case == 'no point after the transient':
        _write_run(root / '84M', '84M', RUN_LAW, 500, seed=3)
        return [*map(str, good), str(root / '84M'), '--skip-steps', '600'], \
            f'{root / "84M"}: no validation point after step 600'
    if case == 'held-out run too short':
        _write_run(root / '84M', '84M', RUN_LAW, 300, seed=3)
        return [*map(str, good), '--predict', str(root / '84M'),
                '--skip-steps', '400'], \
            f'{root / "84M"}: no validation point after step 400'
    if case == 'one model size':
        _write_run(root / 'tiny2', 'tiny', RUN_LAW, 1000, seed=5)
        return [str(good[0]), str(root / 'tiny2')], 'all of one model size'
    if case == 'not JSON':
        with open(good[1] / 'metrics.jsonl', 'a') as f:
            f.write('{"step": 1001, "valid_loss": \n')
        return [*map(str, good)], \
            f'{good[1] / "metrics.jsonl"}, line 1011: not JSON'
    raise AssertionError(case)


@pytest.mark.parametrize('case', [
    'no metrics.jsonl', 'no config.json', 'no validation', 'too few points',
    'no point after the transient', 'held-out run too short',
    'one model size', 'not JSON'])
def test_bad_input_is_a_user_error(case, tmp_path, capsys):
    args, message = _bad_runs(tmp_path, case)
    with pytest.raises(SystemExit) as exit_info:
        main(['scaling-fit', *args, '--out', str(tmp_path / 'out')])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('unimol2: error: ') and message in err, err
    assert 'Traceback' not in err
    assert not (tmp_path / 'out').exists()


def test_a_line_cut_by_a_kill_is_left_out(tmp_path):
    valid = _write_run(tmp_path / 'run', 'tiny', RUN_LAW, 1000)
    with open(tmp_path / 'run' / 'metrics.jsonl', 'a') as f:
        f.write('{"step": 1001, "valid_lo')
    curve = read_run(tmp_path / 'run')
    assert curve.steps.tolist() == sorted(valid)
    assert curve.loss.tolist() == [valid[s] for s in sorted(valid)]


def test_without_matplotlib(runs, tmp_path):
    args = _command(runs, tmp_path, '--skip-steps', '1000')
    code = ('import sys; sys.modules["matplotlib"] = None\n'
            'from pyg_unimol2.cli import main\n'
            f'main({args!r})\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / 'scaling_fit.json').is_file()
    assert not (tmp_path / 'scaling_fit.png').exists()
    assert proc.stderr.count('UserWarning: matplotlib is not installed') == 1
    assert f'wrote {tmp_path / "scaling_fit.json"}\n' in proc.stdout


def test_parameters_count_the_whole_model(runs):
    # read_run counts on the meta device what a real model has: every
    # parameter, masked-atom head included.
    for preset in ('tiny', 'small'):
        model = UniMol2.from_preset(preset)
        assert model.lm_head is not None
        assert read_run(runs[PRESETS.index(preset)]).num_parameters == \
            model.num_parameters() == PARAMETERS[preset]


def test_reads_a_real_pretraining_run(store, tmp_path):
    config = PretrainConfig(
        store=str(store), out=str(tmp_path / 'run'),
        preset='tiny', max_steps=4, warmup_steps=2, lr=5e-4, max_tokens=160,
        valid_fraction=0.1, valid_every=1, ckpt_every=4, progress=False,
        objective=ObjectiveConfig.official())
    result = pretrain(config)
    curve = read_run(tmp_path / 'run')
    assert curve.preset == 'tiny' and curve.num_parameters == 799272
    assert curve.steps.tolist() == [1, 2, 3, 4]
    assert curve.loss[-1] == result['valid_loss']
    atom = read_run(tmp_path / 'run', metric='atom')
    assert atom.loss[-1] == result['valid_atom']


def test_committed_study_reproduces_its_fit(tmp_path, capsys):
    """``unimol2 scaling-fit`` on the committed runs of
    ``benchmarks/results/scaling/`` gives the committed coefficients (1e-6
    relative) and held-out metrics, and prints the Table 3-style table."""
    results = REPO / 'benchmarks' / 'results' / 'scaling'
    committed = json.loads((results / 'scaling_fit.json').read_text())
    roles = {r['preset']: r['role'] for r in committed['runs']}
    fit = [str(results / 'runs' / p) for p, r in roles.items() if r == 'fit']
    held = [str(results / 'runs' / p) for p, r in roles.items()
            if r == 'predict']
    assert len(roles) >= 5 and len(held) == 2
    sizes = [read_run(results / 'runs' / p).num_parameters for p in roles]
    assert max(sizes) / min(sizes) >= 20
    skip = committed['settings']['skip_steps']
    main(['scaling-fit'] + fit + ['--predict'] + held + [
        '--skip-steps', str(skip), '--out', str(tmp_path)])
    again = json.loads((tmp_path / 'scaling_fit.json').read_text())
    for name, value in committed['coefficients'].items():
        assert again['coefficients'][name] == pytest.approx(value, rel=1e-6)
    for a, b in zip(again['runs'], committed['runs']):
        assert a['preset'] == b['preset']
        assert a['metrics']['rmae'] == pytest.approx(b['metrics']['rmae'],
                                                     rel=1e-6)
    out = capsys.readouterr().out
    assert '| RMAE | MSE | R-Squared | Pearson |' in out
    for path in held:
        assert f'{path} (' in out
