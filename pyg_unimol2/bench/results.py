"""Benchmark result tables: aggregation over seeds, JSON and markdown, and
beside each table the parity (regression) and ROC/PR (classification)
plots of its runs' test predictions
(:func:`~pyg_unimol2.plots.prediction_plots`)."""
import json
import platform
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..plots import prediction_plots
from .paper import TABLES, paper_cells


def mean_std(values: Sequence[float]) -> str:
    """``mean (std)`` with 4 significant digits; std over seeds (ddof 0)."""
    if not values:
        return 'n/a'
    if len(values) == 1:
        return f'{values[0]:.4g}'
    return f'{np.mean(values):.4g} ({np.std(values):.2g})'


def markdown_table(title: str, rows: List[Dict], columns: List[str],
                   units: Dict[str, str], table: str,
                   notes: Sequence[str],
                   subsets: Sequence[Optional[str]] = (None,)) -> str:
    """A markdown table: one line per model row, one column per target
    (test MAE, ``mean (std)`` over seeds), then the rows of the paper's
    :obj:`table` that report any of :obj:`columns` (for Table 6 one block
    per training set of :obj:`subsets`, ``'train50'``, ...), then the
    paper table's note and :obj:`notes`."""
    head = ['model'] + [f'{c} ({units.get(c.split(" ")[0], "")})'
                        for c in columns]
    lines = [f'## {title}', '', '| ' + ' | '.join(head) + ' |',
             '|' + '---|' * len(head)]
    for row in rows:
        lines.append('| ' + ' | '.join(
            [row['model']] + [mean_std(row['mae'].get(c, [])) for c in columns])
            + ' |')
    for subset in subsets:
        for paper_row in TABLES[table].rows:
            cells = paper_cells(table, paper_row, columns, subset)
            if any(c is not None for c in cells):
                label = ': '.join(filter(None, ('paper', subset, paper_row)))
                lines.append('| ' + ' | '.join(
                    [label] + ['n/a' if v is None else str(v)
                               for v in cells]) + ' |')
    notes = [TABLES[table].note, *notes]
    return '\n'.join(lines + [''] + [f'- {n}' for n in notes]) + '\n'


#: Heading of the hand-written part of a generated markdown file.
NOTES_HEADING = '\n## Notes'


def write_keeping_notes(path: Path, text: str) -> None:
    """Writes the generated markdown :obj:`text` to :obj:`path`, keeping the
    hand-written section of the file there (from its ``## Notes`` heading
    to the end), if any."""
    path = Path(path)
    old = path.read_text() if path.is_file() else ''
    notes = ''.join(old.partition(NOTES_HEADING)[1:])
    path.write_text(text.rstrip('\n') + '\n' + notes if notes else text)


def write_results(results_dir: str, stem: str, title: str, rows: List[Dict],
                  columns: List[str], units: Dict[str, str], table: str,
                  command: str, meta: Dict,
                  notes: Optional[Sequence[str]] = None) -> Path:
    """Writes ``<stem>.json`` (every run), ``<stem>.md`` (the table, the
    command and the budget) and the plots of :func:`plot_predictions` into
    :obj:`results_dir`; returns the markdown path."""
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta, command=command, date=time.strftime(
        '%Y-%m-%d %H:%M UTC', time.gmtime()), machine=platform.machine(),
        python=platform.python_version())
    record = dict(title=title, table=table, units=units, columns=columns,
                  rows=rows, meta=meta, notes=list(notes or []))
    (out / f'{stem}.json').write_text(json.dumps(record, indent=2,
                                                 default=str))
    md = render_markdown(record)
    (out / f'{stem}.md').write_text(md)
    plot_predictions(record, out / stem)
    print(md)
    return out / f'{stem}.md'


def plot_predictions(record: Dict, stem: Path) -> List[Path]:
    """``<stem>_parity.png`` / ``<stem>_roc_pr.png``: the test predictions
    of the runs of a results record (their ``out`` directories), pooled
    over seeds per model row."""
    return prediction_plots({row['model']: [run['out'] for run in row['runs']
                                            if 'out' in run]
                             for row in record['rows']}, stem)


def render_markdown(record: Dict) -> str:
    """The markdown of a results JSON record: the table, then the command,
    the budget, the other settings and every run's epochs and time."""
    meta = record['meta']
    notes = [f'command: `{meta["command"]}`',
             f'budget per training run: {meta.get("budget", "n/a")} '
             '(training + per-epoch validation; data preparation and the '
             'final test pass are outside it)'] + \
        [f'{k}: {v}' for k, v in meta.items()
         if k not in ('command', 'budget')] + record.get('notes', [])
    notes += [f'run {row["model"]} / {"+".join(run["task"])} / seed '
              f'{run["seed"]}: {run["epochs_run"]} epochs (best '
              f'{run["best_epoch"]}), {run["seconds"]} s'
              for row in record['rows'] for run in row['runs']]
    subsets = [f'train{n}' for n in meta.get('train_sizes', [])] or [None]
    return markdown_table(record['title'], record['rows'], record['columns'],
                          record['units'], record['table'], notes, subsets)


def rewrite_markdown(json_path: str) -> Path:
    """Re-renders ``<stem>.md`` beside a results JSON file."""
    path = Path(json_path)
    md = path.with_suffix('.md')
    md.write_text(render_markdown(json.loads(path.read_text())))
    return md


def merge_results(json_paths: Sequence[str], results_dir: str,
                  stem: str) -> Path:
    """Merges results files of the same benchmark run with different seeds
    (``--first-seed``) or models into ``<stem>.{json,md}``: per model and
    target the seeds' MAEs are pooled; every source command is listed, and
    every setting that differs between the sources with all its values."""
    records = [json.loads(Path(p).read_text()) for p in json_paths]
    merged = dict(records[0], rows=[], notes=list(records[0].get('notes',
                                                                 [])))
    rows: Dict[str, Dict] = {}
    for record in records:
        for row in record['rows']:
            into = rows.setdefault(row['model'], dict(model=row['model'],
                                                      mae={}, runs=[]))
            for target, values in row['mae'].items():
                into['mae'].setdefault(target, []).extend(values)
            into['runs'] += row['runs']
    merged['rows'] = list(rows.values())
    merged['units'] = {}
    for record in records:  # a unit any source knows
        for target, unit in record.get('units', {}).items():
            merged['units'].setdefault(target, unit)
    meta = dict(records[0]['meta'])
    for key in meta:  # settings that differ between the sources: all values
        values = [r['meta'].get(key) for r in records]
        distinct = [v for k, v in enumerate(values) if v not in values[:k]]
        if len(distinct) > 1 and key not in ('command', 'date'):
            meta[key] = distinct
    merged['meta'] = dict(meta, seeds=sorted(
        {run['seed'] for row in merged['rows'] for run in row['runs']}),
        command=' ; '.join(r['meta']['command'] for r in records))
    out = Path(results_dir) / f'{stem}.json'
    out.write_text(json.dumps(merged, indent=2, default=str))
    plot_predictions(merged, out.with_suffix(''))
    return rewrite_markdown(str(out))
