import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from hypothesis import HealthCheck, settings
from rdkit import Chem

from pyg_unimol2.bench.shared import shared_datasets

# pytest-xdist runs one worker per core: one thread each avoids
# oversubscribing the cores (OpenMP threads then wait on each other).
torch.set_num_threads(1)

# Property-based (hypothesis) tests: deterministic and small by default, so
# that a run is reproducible and each fuzz test stays within seconds on two
# cores; no example database is written. HYPOTHESIS_PROFILE=fuzz explores
# more (random, more examples) when hunting bugs by hand.
_FUZZ_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile('ci', derandomize=True, database=None,
                          max_examples=40, deadline=None, print_blob=True,
                          suppress_health_check=_FUZZ_CHECKS)
settings.register_profile('fuzz', derandomize=False, database=None,
                          max_examples=1000, deadline=None, print_blob=True,
                          suppress_health_check=_FUZZ_CHECKS)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))

#: ``shared/`` beside the repository (override with UNIMOL2_SHARED), as for
#: the benchmarks.
SHARED = shared_datasets().parent
MOSES_TEST = SHARED / 'datasets' / 'moses' / 'test.csv.gz'
COMPAS_CSV = SHARED / 'datasets' / 'compas-1d' / 'compas-1D_b3lyp-d3bj_def2-svp.csv'


def read_moses(count: int, path: Path = MOSES_TEST) -> List[str]:
    """The first :obj:`count` SMILES of a MOSES split."""
    with gzip.open(path, 'rt') as f:
        next(f)
        return [next(f).strip() for _ in range(count)]


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f'shared data folder not found at {SHARED}')
    return SHARED


def mol_from_data(data) -> Chem.Mol:
    """RDKit molecule rebuilt from the OGB features of a Data object."""
    mol = Chem.RWMol()
    for z, row in zip(data.z.tolist(), data.x.tolist()):
        atom = Chem.Atom(z)
        atom.SetFormalCharge(row[3] - 5)
        atom.SetNumExplicitHs(row[4])
        atom.SetNoImplicit(True)
        mol.AddAtom(atom)
    types = [Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE,
             Chem.BondType.AROMATIC]
    for (i, j), attr in zip(data.edge_index.t().tolist(),
                            data.edge_attr.tolist()):
        if i < j:
            mol.AddBond(i, j, types[attr[0]])
            if attr[0] == 3:
                mol.GetBondBetweenAtoms(i, j).SetIsAromatic(True)
                mol.GetAtomWithIdx(i).SetIsAromatic(True)
                mol.GetAtomWithIdx(j).SetIsAromatic(True)
    Chem.SanitizeMol(mol)
    return mol


def fuzz_examples(n: int) -> int:
    """``max_examples`` of a fuzz test that runs :obj:`n` examples under the
    ``ci`` profile, scaled with the loaded profile (``fuzz``: 25 times)."""
    return max(1, n * settings.default.max_examples // 40)


#: Shape (``n`` atoms) and dtype of the tensors of a featurized molecule,
#: see pyg_unimol2/data/dense.py.
_DENSE_CONTRACT = {
    'z': (('n',), torch.int64), 'x': (('n', 9), torch.int64),
    'atom_feat': (('n', 8), torch.int64), 'degree': (('n',), torch.int64),
    'pos': (('n', 3), torch.float32), 'spd': (('nn',), torch.int16),
    'pair_feat': (('nn', 3), torch.uint8),
    'pair_type': (('nn', 2), torch.uint8), 'has_graph': ((1,), torch.bool)}


def check_dense_contract(data, max_atoms: int) -> None:
    """:obj:`data` is one featurized molecule as pyg_unimol2/data/dense.py
    describes it, with ``1..max_atoms`` atoms, and ``to_dense`` pads it."""
    from torch_geometric.data import Batch

    from pyg_unimol2.data.dense import to_dense
    n = data.z.shape[0]
    assert 1 <= n <= max_atoms
    sizes = {'n': n, 'nn': n * n}
    for key, (shape, dtype) in _DENSE_CONTRACT.items():
        value = getattr(data, key)
        expected = tuple(sizes.get(d, d) for d in shape)
        assert tuple(value.shape) == expected and value.dtype == dtype, \
            (key, tuple(value.shape), value.dtype)
    assert torch.isfinite(data.pos).all()
    assert ((data.z >= 1) & (data.z <= 118)).all()
    num_edges = data.edge_index.shape[1]
    assert data.edge_index.shape == (2, num_edges)
    assert data.edge_index.dtype == torch.int64
    assert data.edge_attr.shape == (num_edges, 3)
    if num_edges:
        assert 0 <= int(data.edge_index.min())
        assert int(data.edge_index.max()) < n
    assert isinstance(data.smiles, str) and isinstance(data.name, str)
    dense = to_dense(Batch.from_data_list([data]))
    assert dense.token.shape == (1, n) and bool(dense.atom_mask.all())
    assert dense.spd.shape == (1, n, n)


def child_pids(pid: int) -> List[int]:
    """Process ids whose parent is :obj:`pid` (e.g. torchrun's workers)."""
    found = []
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / 'stat').read_text()
            except OSError:
                continue
            if int(stat.rsplit(')', 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def kill_torchrun_at(proc, path: Path, timeout: float = 300) -> None:
    """Waits until :obj:`path` exists (e.g. a checkpoint of the run), then
    SIGKILLs torchrun :obj:`proc` and its two workers, as a crash would."""
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    workers = child_pids(proc.pid)
    assert len(workers) == 2
    for pid in workers + [proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.communicate()


@pytest.fixture(scope='session')
def store(tmp_path_factory) -> Path:
    """120 real MOSES molecules in 2 shards (ETKDG, no MMFF): the
    pretraining tests' store."""
    return build_moses_store(tmp_path_factory.mktemp('pretrain'), 120,
                             shard_size=60)


def build_moses_store(root: Path, count: int, shard_size: int = 10_000,
                      name: str = 'store') -> Path:
    """A store of the first :obj:`count` MOSES test SMILES (ETKDG, no MMFF,
    one worker) in ``root / name``."""
    from pyg_unimol2.data.store import build_store
    (root / f'{name}.smi').write_text('\n'.join(read_moses(count)) + '\n')
    build_store(root / f'{name}.smi', root / name, workers=1,
                shard_size=shard_size, optimize=False, progress=False,
                verbose=False)
    return root / name


def finish_torchrun(proc: subprocess.Popen) -> None:
    """Waits for torchrun :obj:`proc` to succeed; if it hangs, fails with the
    stacks of its ranks (faulthandler on SIGUSR1)."""
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        # Every rank prints where it waits (faulthandler on SIGUSR1).
        workers = child_pids(proc.pid)
        for pid in workers:
            os.kill(pid, signal.SIGUSR1)
        time.sleep(2)
        for pid in workers + [proc.pid]:
            os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f'torchrun did not exit within 300 s:\n{output}')
    assert proc.returncode == 0, output


def read_metrics(out: Path) -> List[Dict[str, float]]:
    """The records of a run's ``metrics.jsonl``."""
    return [json.loads(line) for line in
            (out / 'metrics.jsonl').read_text().splitlines()]
