"""``pip install`` of the package into a fresh virtualenv: the wheel builds
offline, installs with binary packages only (nothing is compiled, so no
torch_scatter), and the installed ``unimol2`` runs.

The fresh virtualenv gets the torch of this one (``pip install
torch==VERSION``: a local wheel where pip is set up with one, as the
Makefile's ``pip install torch==...``), then the wheel and its
dependencies from the package index. About a minute."""
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyg_unimol2.checkpoints import save_task_model
from pyg_unimol2.cli import main
from pyg_unimol2.models import UniMol2
from pyg_unimol2.models.multitask import UniMol2MultiTask
from pyg_unimol2.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ('pyg_unimol2', 'setup.cfg', 'pyproject.toml', 'README.md')


def _run(command, cwd: Path) -> subprocess.CompletedProcess:
    command = [str(c) for c in command]
    result = subprocess.run(command, cwd=cwd, text=True, capture_output=True,
                            timeout=900)
    assert result.returncode == 0, (command, result.stdout[-3000:],
                                    result.stderr[-3000:])
    return result


def _wheel(tmp: Path) -> Path:
    """The wheel built, without network, from a copy of the sources."""
    src = tmp / 'src'
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.
                            ignore_patterns('__pycache__'))
        else:
            shutil.copy(ROOT / name, src / name)
    _run([sys.executable, '-m', 'build', '--wheel', '--no-isolation',
          '--outdir', tmp / 'dist', src], tmp)
    wheel, = (tmp / 'dist').glob('pyg_unimol2-*.whl')
    return wheel


def _predictions(path: Path) -> list:
    with open(path) as f:
        return [(r['index'], r['smiles'], float(r['y']))
                for r in csv.DictReader(f)]


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    wheel = _wheel(tmp_path)
    venv = tmp_path / 'venv'
    _run([sys.executable, '-m', 'venv', venv], tmp_path)
    pip = [venv / 'bin' / 'python', '-m', 'pip', 'install', '--quiet',
           '--only-binary', ':all:']
    _run(pip + [f'torch=={torch.__version__}'], tmp_path)
    _run(pip + [wheel], tmp_path)

    check = _run([venv / 'bin' / 'python', '-c',
                  'import importlib.util as u, pyg_unimol2, huggingface_hub; '
                  'print(pyg_unimol2.__file__); '
                  "print(u.find_spec('torch_scatter'))"], tmp_path)
    location, scatter = check.stdout.split()
    assert Path(location).is_relative_to(venv) and scatter == 'None'
    help_text = _run([venv / 'bin' / 'unimol2', '--help'], tmp_path).stdout
    for command in ('finetune', 'predict', 'embed', 'pretrain', 'build-hdf5'):
        assert command in help_text

    torch.manual_seed(0)
    model = UniMol2MultiTask(UniMol2.from_preset('tiny', lm_head=False),
                             {'data': [Task('y')]})
    save_task_model(model, tmp_path / 'best.pt')
    (tmp_path / 'mols.smi').write_text('CCO\nc1ccccc1O\nCC(=O)Nc1ccc(O)cc1\n')
    predict = ['predict', '--checkpoint', tmp_path / 'best.pt', '--smiles',
               tmp_path / 'mols.smi', '--workers', '1', '--out']
    _run([venv / 'bin' / 'unimol2'] + predict + [tmp_path / 'installed.csv'],
         tmp_path)
    main([str(a) for a in predict + [tmp_path / 'here.csv']])
    installed = _predictions(tmp_path / 'installed.csv')
    here = _predictions(tmp_path / 'here.csv')
    assert [r[:2] for r in installed] == [('0', 'CCO'), ('1', 'c1ccccc1O'),
                                          ('2', 'CC(=O)Nc1ccc(O)cc1')]
    assert [r[:2] for r in here] == [r[:2] for r in installed]
    assert [r[2] for r in installed] == pytest.approx([r[2] for r in here],
                                                      rel=1e-4, abs=1e-6)
