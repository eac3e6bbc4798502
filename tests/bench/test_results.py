import json

from pyg_unimol2.bench.results import mean_std, merge_results, write_results


def _write(tmp_path, seed, mae):
    rows = [dict(model='SchNet', mae={'gap': [mae]},
                 runs=[dict(task=['gap'], seed=seed, epochs_run=3,
                            best_epoch=2, seconds=1.0)])]
    write_results(str(tmp_path / f's{seed}'), 'bench', 'QM9', rows, ['gap'],
                  {'gap': 'Ha'}, 'table6', f'cmd --first-seed {seed}',
                  dict(budget='1 min wall clock', train_sizes=[50]))
    return str(tmp_path / f's{seed}' / 'bench.json')


def test_mean_std_formats_seeds():
    assert mean_std([]) == 'n/a'
    assert mean_std([0.5]) == '0.5'
    assert mean_std([1.0, 3.0]) == '2 (1)'


def test_tables_print_paper_rows_and_merge_over_seeds(tmp_path):
    paths = [_write(tmp_path, 0, 1.0), _write(tmp_path, 1, 3.0)]
    md = merge_results(paths, str(tmp_path), 'merged').read_text()
    assert '| SchNet | 2 (1) |' in md
    assert '| paper: train50: Uni-Mol2 1.1B | 0.0056 (1.8e-05) |' in md
    assert '- paper rows: Uni-Mol2 paper Table 6' in md
    assert 'cmd --first-seed 0 ; cmd --first-seed 1' in md
    assert '1 min wall clock' in md
    merged = json.loads((tmp_path / 'merged.json').read_text())
    assert merged['meta']['seeds'] == [0, 1]


def test_merge_lists_settings_that_differ(tmp_path):
    paths = []
    for preset, pretrained in (('tiny', 'a.pt'), ('small', 'none')):
        rows = [dict(model=f'Uni-Mol2 {preset}', mae={'gap': [0.1]},
                     runs=[dict(task=['gap'], seed=0, epochs_run=3,
                               best_epoch=2, seconds=1.0)])]
        write_results(str(tmp_path / preset), 'bench', 'QM9', rows, ['gap'],
                      {'gap': 'Ha'}, 'table6', f'cmd {preset}',
                      dict(preset=preset, pretrained=pretrained, lr=4e-4))
        paths.append(str(tmp_path / preset / 'bench.json'))
    merge_results(paths, str(tmp_path), 'merged')
    meta = json.loads((tmp_path / 'merged.json').read_text())['meta']
    assert meta['preset'] == ['tiny', 'small']
    assert meta['pretrained'] == ['a.pt', 'none']
    assert meta['lr'] == 4e-4  # the same in both: one value
    md = (tmp_path / 'merged.md').read_text()
    assert '| Uni-Mol2 tiny | 0.1 |' in md and '| Uni-Mol2 small | 0.1 |' in md
