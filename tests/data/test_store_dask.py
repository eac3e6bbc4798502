"""Store builds on a Dask cluster (``build_store(..., scheduler=ADDRESS)``,
``unimol2 build-hdf5 --scheduler``): every file byte for byte the one of a
local build, also with a worker killed mid-build, when resuming a local
build, for structure files, and when a shard's task kills its workers (the
shard is then computed locally); a bad address is a one-line user error."""
import os
import shutil
import signal
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import h5py
import pytest
from conftest import read_moses
from geometry_files import FILES_BY_FORMAT, write_all
from test_store import assert_same_store
from tqdm import tqdm

from pyg_unimol2.cli import main
from pyg_unimol2.data.store import (StoreError, StoreReader,
                                    build_geometry_store, build_store)
from pyg_unimol2.data.store.build_smiles import (Record, _featurize_record,
                                                 _iter_records, _write_shard)
from pyg_unimol2.data.store.dask_build import _shard_task, dask_client
from pyg_unimol2.data.store.write import (compute_shards, library_versions,
                                          pending_shards)
from pyg_unimol2.errors import ConfigError

dask = pytest.importorskip('dask')
distributed = pytest.importorskip('distributed')

SHARD = 10
NUM_SHARDS = 7  # 61 records: 60 MOSES molecules and a broken SMILES
CRASH = 'C1=CC=CC=C1CCCC#N'  # kills its worker in the crash test


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    path = tmp_path_factory.mktemp('inputs') / 'moses.smi'
    lines = [f'{s} moses_{i}' for i, s in enumerate(read_moses(60))]
    lines.insert(25, 'C1CC( broken_ring')
    path.write_text('\n'.join(lines) + '\n')
    return [path]


@pytest.fixture(scope='module')
def local(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp('local') / 'store'
    build_store(inputs, out, workers=2, shard_size=SHARD, progress=False,
                verbose=False)
    return out


@pytest.fixture(scope='module')
def cluster():
    # A task that kills 2 workers raises KilledWorker (the crash test).
    with dask.config.set({'distributed.scheduler.allowed-failures': 1}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True,
            dashboard_address=':0', silence_logs=50)
    with cluster:
        yield cluster


@pytest.fixture(scope='module')
def client(cluster):
    with distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        yield client


def shard_runs(cluster) -> Counter:
    """Transitions of the shard tasks in the scheduler's log, by the state
    they led to, and ``'tasks'``: the shard tasks that finished."""
    log = [entry for entry in list(cluster.scheduler.transition_log)
           if entry[0].startswith('_shard_task')]
    runs = Counter(finish for _, _, finish, *_ in log)
    runs['tasks'] = len({key for key, _, finish, *_ in log
                         if finish in ('memory', 'erred')})
    return runs


def build(inputs, out, cluster, **kwargs):
    return build_store(inputs, out, shard_size=SHARD, progress=False,
                       verbose=False, scheduler=cluster.scheduler_address,
                       **kwargs)


def test_dask_build_equals_local_build(inputs, local, cluster, tmp_path,
                                       capsys):
    before = shard_runs(cluster)
    out = tmp_path / 'dask'
    main(['build-hdf5', *map(str, inputs), str(out), '--shard-size',
          str(SHARD), '--no-progress', '--scheduler',
          cluster.scheduler_address])
    printed = capsys.readouterr().out
    assert f'60 molecules in {NUM_SHARDS} shards, 1 failures' in printed
    assert f'Dask cluster {cluster.scheduler_address}' in printed
    assert "moses.smi:26: unparsable SMILES: 'C1CC('" in printed
    runs = shard_runs(cluster) - before
    assert runs['tasks'] == runs['memory'] == NUM_SHARDS  # all on workers
    assert_same_store(local, out)  # every file, byte for byte
    assert len(StoreReader(out)) == 60


def test_dask_resumes_a_local_build(inputs, local, cluster, tmp_path):
    out = tmp_path / 'resumed'
    shutil.copytree(local, out)
    lost = ['shard_000002.h5', 'shard_000005.h5']
    for name in lost + ['manifest.json', 'index.h5', 'failures.csv']:
        (out / name).unlink()  # as a build killed before its end
    (out / 'shard_000005.h5.tmp').write_bytes(b'\x89HDF\r\n')
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob('shard_*.h5')}
    summary = build(inputs, out, cluster)
    assert summary.built_shards == len(lost)
    assert summary.built_records == 2 * SHARD
    assert kept == {name: (out / name).stat().st_mtime_ns for name in kept}
    assert_same_store(local, out)
    again = build(inputs, out, cluster)  # complete: nothing to do
    assert again.built_shards == 0


def test_structure_store_on_dask(cluster, tmp_path):
    folder = tmp_path / 'structures'
    folder.mkdir()
    paths = [folder / FILES_BY_FORMAT[f] for f in write_all(folder)]
    kwargs = dict(shard_size=8, progress=False, verbose=False)
    build_geometry_store(paths, tmp_path / 'local', workers=1, **kwargs)
    summary = build_geometry_store(paths, tmp_path / 'dask',
                                   scheduler=cluster.scheduler_address,
                                   **kwargs)
    assert summary.built_shards == summary.num_shards > 1
    assert_same_store(tmp_path / 'local', tmp_path / 'dask')


def test_bad_scheduler_address(inputs, tmp_path, capsys):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(('127.0.0.1', 0))
        address = f'tcp://127.0.0.1:{s.getsockname()[1]}'
    with dask.config.set({'distributed.comm.timeouts.connect': '1s'}):
        with pytest.raises(ConfigError, match=f"no Dask scheduler at "
                           f"'{address}' .*tcp://HOST:8786"):
            build_store(inputs, tmp_path / 'a', shard_size=SHARD,
                        scheduler=address, progress=False)
        with pytest.raises(SystemExit) as exit:
            main(['build-hdf5', *map(str, inputs), str(tmp_path / 'b'),
                  '--scheduler', 'no-such-host.invalid:8786'])
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("unimol2: error: no Dask scheduler at "
                            "'no-such-host.invalid:8786'")
    assert '\n' not in error.rstrip('\n')
    assert not list((tmp_path / 'a').glob('shard_*'))


def test_workers_check_versions_and_directory(client, tmp_path):
    versions = library_versions()
    records = [Record(0, 0, 1, 'CCO', '')]
    job = partial(_featurize_record, seed=0, remove_hs=True, max_atoms=256,
                  optimize=True, time_limit=None)
    other = dict(versions, rdkit='2001.01.1')
    with pytest.raises(StoreError, match=r'runs rdkit \S+ \(client: '
                       r'2001\.01\.1\); install the versions'):
        client.submit(_shard_task, tmp_path, 0, records, job, _write_shard,
                      other, pure=False).result()
    missing = tmp_path / 'elsewhere'
    with pytest.raises(StoreError, match='elsewhere: no such directory on '
                       r'the Dask worker on .*\(a shared filesystem\)'):
        client.submit(_shard_task, missing, 0, records, job, _write_shard,
                      versions, pure=False).result()
    host = client.submit(_shard_task, tmp_path, 0, records, job,
                         _write_shard, versions, pure=False).result()
    assert host == socket.gethostname()
    assert [p.name for p in tmp_path.iterdir()] == ['shard_000000.h5']


def executing(dask_worker) -> int:
    return len(dask_worker.state.executing)


@pytest.mark.slow  # a worker restarts (imports RDKit, torch)
def test_killed_worker_costs_only_its_task(inputs, local, cluster, client,
                                           tmp_path):
    before = shard_runs(cluster)
    out = tmp_path / 'dask'
    with ThreadPoolExecutor(1) as pool:
        building = pool.submit(build, inputs, out, cluster)
        deadline = time.monotonic() + 120
        while True:  # A shard is done, another one running: kill its worker.
            assert not building.done(), 'the build ended before the kill'
            assert time.monotonic() < deadline, 'no shard after 120 s'
            if list(out.glob('shard_*.h5')):
                busy = [w for w, n in client.run(executing).items() if n]
                if busy:
                    break
            time.sleep(0.02)
        pid = client.run(os.getpid)[busy[0]]
        os.kill(pid, signal.SIGKILL)
        assert not (out / 'manifest.json').exists(), 'the kill came late'
        summary = building.result(timeout=300)
    assert summary.built_shards == NUM_SHARDS
    assert pid not in client.run(os.getpid).values()  # restarted by its Nanny
    runs = shard_runs(cluster) - before
    assert runs['tasks'] == NUM_SHARDS
    assert runs['processing'] > NUM_SHARDS  # the killed task ran again
    assert_same_store(local, out)


def crash_on(record: Record, job) -> object:
    """A job that kills its process on the :data:`CRASH` molecule."""
    if record.smiles == CRASH:
        os._exit(3)
    return job(record)


@pytest.mark.slow  # a worker restarts (imports RDKit, torch)
def test_task_that_kills_its_workers_is_computed_locally(cluster, tmp_path):
    path = tmp_path / 'in.smi'
    smiles = read_moses(20)
    smiles[13] = CRASH
    path.write_text('\n'.join(smiles) + '\n')
    job = partial(crash_on, job=partial(
        _featurize_record, seed=0, remove_hs=True, max_atoms=256,
        optimize=True, time_limit=None))
    before = shard_runs(cluster)
    for name, address in (('local', None),
                          ('dask', cluster.scheduler_address)):
        (tmp_path / name).mkdir()
        shards = pending_shards(_iter_records([path], None), SHARD,
                                lambda k: True)
        with dask_client(address) as client, tqdm(disable=True) as bar:
            done = compute_shards(
                tmp_path / name, shards, job, _write_shard,
                lambda record: repr(record.smiles), bar, workers=2,
                chunksize=4, time_limit=None, lookahead=SHARD, client=client)
        assert done == (2, 20)
    runs = shard_runs(cluster) - before
    assert runs['erred'] >= 1  # KilledWorker: computed locally instead
    for name in ('shard_000000.h5', 'shard_000001.h5'):
        assert (tmp_path / 'local' / name).read_bytes() == \
            (tmp_path / 'dask' / name).read_bytes(), name
    with h5py.File(tmp_path / 'dask' / 'shard_000001.h5', 'r') as f:
        assert f['failure_reason'].asstr()[:].tolist() == [
            f'worker crashed (exit code 3) ({CRASH!r})']
        assert f['failure_line'][:].tolist() == [14]
