"""A user mistake ends the command line with one line, ``unimol2: error:
...`` naming the thing, exit status 2 and no traceback; ``--debug`` shows
the traceback; a bug keeps its traceback.

Every case runs the real entry point (``python -m pyg_unimol2.cli`` or
``python -m pyg_unimol2.pretrain``, the torchrun one) in a subprocess. The
cases are started together, three at a time, by a module fixture (one for
the fast ones, one for the ``slow`` ones), since each spends seconds
importing torch."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import pytest

from conftest import read_moses
from pyg_unimol2.checkpoints import save_task_model
from pyg_unimol2.data.store import build_store
from pyg_unimol2.errors import (EXIT_USER_ERROR, ConfigError, UserError,
                                run_cli)
from pyg_unimol2.models import UniMol2
from pyg_unimol2.models.multitask import UniMol2MultiTask
from pyg_unimol2.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, '-m', 'pyg_unimol2.cli']
PRETRAIN = [sys.executable, '-m', 'pyg_unimol2.pretrain']
PRETRAIN_ARGS = ['--preset', 'tiny', '--max-steps', '1', '--device', 'cpu',
                 '--no-progress', '--valid-fraction', '0', '--threads', '1']


def _store(tmp: Path, name: str) -> Path:
    """A one-shard store of 12 MOSES molecules."""
    smi = tmp / 'store.smi'
    if not smi.exists():
        smi.write_text('\n'.join(read_moses(12)) + '\n')
    build_store([smi], tmp / name, workers=1, progress=False, verbose=False)
    return tmp / name


def _cases(tmp: Path) -> dict:
    """``name: (command, the words its error line must hold)``."""
    model = UniMol2MultiTask(UniMol2.from_preset('tiny', lm_head=False),
                             {'data': [Task('y')]})
    save_task_model(model, tmp / 'best.pt')
    raw = (tmp / 'best.pt').read_bytes()
    (tmp / 'truncated.pt').write_bytes(raw[:len(raw) // 2])
    (tmp / 'garbage.pt').write_bytes(b'\x00garbage' * 100)
    (tmp / 'mols.smi').write_text('CCO\nc1ccccc1\n')
    (tmp / 'labels.csv').write_text('smiles,y\nCCO,1.0\nCCC,2.0\nCCN,3.0\n')
    (tmp / 'finetune.toml').write_text(
        '[train]\npreset = "tiny"\nlearning_rate = 1e-3\n\n[[datasets]]\n'
        'name = "x"\npath = "labels.csv"\ntargets = "y:regression"\n')
    (tmp / 'pretrain.toml').write_text('store = "s"\nlr_max = 1\n')

    shard = _store(tmp, 'shard_cut') / 'shard_000000.h5'
    with h5py.File(shard.parent / 'index.h5', 'r') as f:
        ptr_offset = int(f['layout'][0, 0])
    with open(shard, 'r+b') as f:  # cut inside the molecule table
        f.truncate(ptr_offset + 16)
    index = _store(tmp, 'index_cut') / 'index.h5'
    with open(index, 'r+b') as f:
        f.truncate(index.stat().st_size // 2)

    predict = ['predict', '--smiles', str(tmp / 'mols.smi'), '--out',
               str(tmp / 'out.csv'), '--checkpoint']
    finetune = ['finetune', '--root', str(tmp / 'root'), '--out',
                str(tmp / 'run'), '--preset', 'tiny']
    pretrain = ['pretrain', *PRETRAIN_ARGS, '--strict', '--store']
    return {
        'missing_checkpoint': (CLI + predict + [str(tmp / 'nope.pt')],
                               ['checkpoint', 'nope.pt', 'not found']),
        'garbage_checkpoint': (CLI + predict + [str(tmp / 'garbage.pt')],
                               ['checkpoint', 'garbage.pt', 'cannot be read']),
        'truncated_checkpoint': (CLI + predict + [str(tmp / 'truncated.pt')],
                                 ['checkpoint', 'truncated.pt',
                                  'cannot be read']),
        'missing_data': (CLI + finetune + ['--data', str(tmp / 'nope.csv'),
                                           '--targets', 'y:regression'],
                         ['data file', 'nope.csv', 'no such file', '--data']),
        'missing_smiles_column': (
            CLI + finetune + ['--data', str(tmp / 'labels.csv'), '--targets',
                              'y:regression', '--smiles-col', 'SMI'],
            ['labels.csv', "SMILES column 'SMI'", "['smiles', 'y']"]),
        'finetune_unknown_key': (
            CLI + ['finetune', '--config', str(tmp / 'finetune.toml')],
            ['finetune.toml', 'unknown [train] keys', 'learning_rate']),
        'pretrain_unknown_key': (
            PRETRAIN + ['--config', str(tmp / 'pretrain.toml')],
            ['pretrain.toml', 'unknown keys lr_max']),
        'data_without_targets': (
            CLI + finetune + ['--data', str(tmp / 'labels.csv')],
            ['--data needs --targets']),
        'unknown_preset': (CLI + ['finetune', '--preset', 'huge'],
                           ['--preset', "'huge'"]),  # argparse's choices
        'truncated_shard': (
            CLI + pretrain + [str(shard.parent), '--out', str(tmp / 'p1')],
            [str(shard), 'truncated']),
        'truncated_index': (
            CLI + pretrain + [str(index.parent), '--out', str(tmp / 'p2')],
            [str(index), 'truncated']),
        'missing_store': (
            CLI + pretrain + [str(tmp / 'nostore'), '--out', str(tmp / 'p3')],
            ['store', 'nostore', 'no such directory', 'build-hdf5']),
        'debug': (CLI + ['--debug'] + predict + [str(tmp / 'nope.pt')], []),
        'debug_pretrain': (PRETRAIN + ['--config', str(tmp / 'pretrain.toml'),
                                       '--debug'], []),
    }


@pytest.fixture(scope='module')
def cases(tmp_path_factory):
    return _cases(tmp_path_factory.mktemp('cli_errors'))


def _run_all(cases: dict, names: list) -> dict:
    """The ``CompletedProcess`` of each case of :obj:`names`, run three at
    a time, and the words its error line must hold."""
    def run(name):
        return subprocess.run(cases[name][0], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)

    with ThreadPoolExecutor(3) as pool:
        return {name: (result, cases[name][1])
                for name, result in zip(names, pool.map(run, names))}


FAST = ['missing_checkpoint', 'garbage_checkpoint', 'missing_data',
        'missing_smiles_column', 'finetune_unknown_key',
        'pretrain_unknown_key', 'data_without_targets', 'unknown_preset',
        'truncated_shard', 'missing_store', 'debug']
#: The same code paths as fast cases, through other files or entry points.
SLOW = ['truncated_checkpoint', 'truncated_index', 'debug_pretrain']


@pytest.fixture(scope='module')
def fast_runs(cases):
    return _run_all(cases, FAST)


@pytest.fixture(scope='module')
def slow_runs(cases):
    return _run_all(cases, SLOW)


def _check_user_error(name, result, words):
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_USER_ERROR, output
    assert 'Traceback' not in output, output
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    prefix = 'unimol2 finetune: error:' if name == 'unknown_preset' else \
        'unimol2: error:'
    assert last.startswith(prefix), output
    for word in words:
        assert word in last, (word, last)


def _check_traceback(name, result):
    assert result.returncode not in (0, EXIT_USER_ERROR), result.stderr
    assert 'Traceback' in result.stderr
    error = 'CheckpointError' if name == 'debug' else 'ConfigError'
    assert error in result.stderr.splitlines()[-1]


@pytest.mark.parametrize('name', [n for n in FAST if n != 'debug'])
def test_user_error_is_one_named_line(fast_runs, name):
    _check_user_error(name, *fast_runs[name])


def test_debug_shows_the_traceback(fast_runs):
    _check_traceback('debug', fast_runs['debug'][0])


@pytest.mark.slow
@pytest.mark.parametrize('name', SLOW)
def test_more_user_errors(slow_runs, name):
    result, words = slow_runs[name]
    if name.startswith('debug'):
        _check_traceback(name, result)
    else:
        _check_user_error(name, result, words)


def test_run_cli_prints_user_errors_and_keeps_bugs(capsys):
    def mistake():
        raise ConfigError('config x.toml: unknown keys y (known: z)')

    with pytest.raises(SystemExit) as exit:
        run_cli(mistake)
    assert exit.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == \
        'unimol2: error: config x.toml: unknown keys y (known: z)\n'

    def missing():
        open('/nonexistent/dir/file.csv')

    with pytest.raises(SystemExit):
        run_cli(missing)
    assert capsys.readouterr().err == ('unimol2: error: /nonexistent/dir/'
                                       'file.csv: no such file or directory '
                                       '(check the path)\n')
    with pytest.raises(ConfigError):
        run_cli(mistake, debug=True)
    with pytest.raises(ZeroDivisionError):  # a bug: its traceback
        run_cli(lambda: 1 / 0)
    with pytest.raises(KeyError):
        run_cli(lambda: {}['key'])
    assert issubclass(ConfigError, (UserError, ValueError))
