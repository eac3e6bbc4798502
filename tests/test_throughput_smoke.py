"""Smoke test of ``benchmarks/throughput.py --smoke`` (a two-layer toy model,
4 MOSES molecules, 2 steps) in the reference environment, which holds both
our package and the official implementation."""
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_PYTHON = os.environ.get('UNIMOL2_REFERENCE_PYTHON')


@pytest.mark.skipif(
    not REFERENCE_PYTHON, reason='UNIMOL2_REFERENCE_PYTHON (the interpreter '
    'of .venv-ref with unimol_tools) is not set; `make test` sets it')
def test_throughput_smoke(tmp_path):
    out = tmp_path / 'throughput.json'
    # a previous table with hand-written notes: the notes survive the run
    out.with_suffix('.md').write_text('old table\n\n## Notes\n\n- by hand\n')
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    subprocess.run([REFERENCE_PYTHON, str(ROOT / 'benchmarks' /
                                          'throughput.py'), '--smoke',
                    '--threads', '1', '--out', str(out)],
                   check=True, env=env, cwd=ROOT, capture_output=True,
                   timeout=60)
    result = json.loads(out.read_text())['results'][0]
    assert set(result['implementations']) == {'ours', 'official'}
    for mode in ('train', 'infer'):
        assert math.isfinite(result[f'{mode}_speedup'])
        assert result[f'{mode}_speedup'] > 0
        for impl in result['implementations'].values():
            assert impl[mode]['molecules_per_s'] > 0
    assert result['cls_max_rel_diff'] < 1e-4
    md = out.with_suffix('.md').read_text()
    assert 'old table' not in md and md.endswith('\n\n## Notes\n\n- by hand\n')
    for what in ('one training step', 'one inference pass'):
        assert f'toy-moses-4: {what}, self CPU ms per op' in md
    for mode in ('train', 'infer'):
        for impl in ('ours', 'official'):
            rows = result['profile'][mode][impl]
            assert rows[0][0] == 'total' and rows[0][2] > 0 and len(rows) > 1
