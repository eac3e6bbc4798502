from pathlib import Path

from conftest import MOSES_TEST, SHARED

from pyg_unimol2.bench.shared import moses_test, shared_datasets


def test_shared_datasets_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv('UNIMOL2_SHARED', raising=False)
    repo = Path(__file__).resolve().parents[2]
    assert shared_datasets() == repo.parent / 'shared' / 'datasets'
    monkeypatch.setenv('UNIMOL2_SHARED', str(tmp_path))
    assert shared_datasets() == tmp_path / 'datasets'
    assert moses_test() == tmp_path / 'datasets' / 'moses' / 'test.csv.gz'
    # the benchmarks and the tests read the same file
    monkeypatch.setenv('UNIMOL2_SHARED', str(SHARED))
    assert moses_test() == MOSES_TEST and moses_test().is_file()
