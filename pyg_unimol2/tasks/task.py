r"""What a learning task is: :class:`Task`, declared as data.

A task names the label column(s) it reads, its level (a property of the
molecule, or of each atom as Graphium's node-level tasks), its kind, loss,
loss weight, metrics and label normalisation. Everything downstream (label
encoding, heads, losses, metrics, normalisation statistics, prediction
columns) is derived from this declaration, so a new task needs no code.

**Label layout.** A dataset item holds its molecule-level labels in ``y``
``[1, C]`` and its atom-level labels in ``atom_y`` ``[num_atoms, C_atom]``
(float32, ``NaN`` where a label is missing), one column per entry of
:attr:`Task.columns`, tasks in declaration order
(:func:`label_slices`). Regression labels are numbers in their own units;
binary labels are ``0``/``1``; multi-class labels are class indices
``0..K-1``; a multi-label task has one ``0``/``1`` column per label.

On the command line a task is ``COLUMN:KIND`` (e.g.
``"BBB+/BBB-:classification,logBB:regression"``, :func:`parse_targets`);
a config file gives every field (:func:`task_from_dict`).
"""
import math
import re
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import UserError

__all__ = ['Task', 'KINDS', 'LEVELS', 'LOSSES', 'METRICS', 'parse_targets',
           'task_from_dict', 'label_slices', 'encode_label', 'TaskError']

KINDS = ('regression', 'classification', 'multiclass', 'multilabel')
LEVELS = ('molecule', 'atom')
#: Allowed losses per kind (the first is the default).
LOSSES = {
    'regression': ('smooth_l1', 'l1', 'mse'),
    'classification': ('bce',),
    'multiclass': ('cross_entropy',),
    'multilabel': ('bce',),
}
#: Metrics per kind (all are computed; the first is the model-selection
#: metric).
METRICS = {
    'regression': ('mae', 'rmse', 'r2', 'pearson', 'spearman'),
    'classification': ('auroc', 'average_precision', 'accuracy'),
    'multiclass': ('accuracy', 'auroc', 'average_precision'),
    'multilabel': ('auroc', 'average_precision', 'accuracy'),
}
_KIND_ALIASES = {'binary': 'classification', 'regress': 'regression',
                 'reg': 'regression', 'class': 'classification',
                 'cls': 'classification', 'multi-class': 'multiclass',
                 'multi-label': 'multilabel'}
#: Binary labels read as the positive class when no classes are declared.
_POSITIVE = re.compile(r'(\+|^(1|1\.0|true|yes|y|positive|pos|active|p)$)',
                       re.IGNORECASE)
_NEGATIVE = re.compile(r'(-$|^(0|0\.0|false|no|n|negative|neg|inactive)$)',
                       re.IGNORECASE)


class TaskError(UserError, ValueError):
    """A task declaration or a label that does not fit it."""


@dataclass
class Task:
    r"""One supervised task.

    Args:
        name (str): task name (metrics, heads and prediction columns use
            it).
        kind (str): ``'regression'``, ``'classification'`` (binary),
            ``'multiclass'`` or ``'multilabel'``.
        columns (List[str], optional): label columns in the data file
            (default: ``[name]``); a multi-label task has one per label.
        level (str): ``'molecule'`` or ``'atom'``. (default:
            ``'molecule'``)
        loss (str, optional): ``'smooth_l1'``, ``'l1'``, ``'mse'``
            (regression); ``'bce'`` (binary / multi-label, with logits);
            ``'cross_entropy'`` (multi-class). (default: the first of
            :data:`LOSSES` for the kind)
        weight (float): weight of this task's loss. (default: :obj:`1.0`)
        normalize (str, optional): ``'zscore'`` (regression: from the
            observed training labels) or ``'none'``. (default: ``'zscore'``
            for regression, ``'none'`` otherwise)
        classes (List[str], optional): class labels as written in the file,
            in index order; for binary tasks the second is the positive
            class. (default: inferred from the training file)
        metrics (List[str], optional): metrics to report (default: all of
            :data:`METRICS` for the kind); the first selects the best
            epoch.
        unit (str): unit of regression labels, for reports.
    """
    name: str
    kind: str = 'regression'
    columns: Optional[List[str]] = None
    level: str = 'molecule'
    loss: Optional[str] = None
    weight: float = 1.0
    normalize: Optional[str] = None
    classes: Optional[List[str]] = None
    metrics: Optional[List[str]] = None
    unit: str = ''

    def __post_init__(self) -> None:
        self.kind = _KIND_ALIASES.get(self.kind.lower(), self.kind.lower())
        if self.kind not in KINDS:
            raise TaskError(f"task '{self.name}': unknown kind "
                            f"'{self.kind}' (use one of {', '.join(KINDS)})")
        if self.level not in LEVELS:
            raise TaskError(f"task '{self.name}': unknown level "
                            f"'{self.level}' (use one of {', '.join(LEVELS)})")
        self.columns = list(self.columns or [self.name])
        if self.kind != 'multilabel' and len(self.columns) != 1:
            raise TaskError(f"task '{self.name}': a {self.kind} task reads "
                            f"one column, got {self.columns}")
        self.loss = self.loss or LOSSES[self.kind][0]
        if self.loss not in LOSSES[self.kind]:
            raise TaskError(f"task '{self.name}': loss '{self.loss}' does "
                            f"not fit a {self.kind} task (use one of "
                            f"{', '.join(LOSSES[self.kind])})")
        self.normalize = self.normalize or (
            'zscore' if self.kind == 'regression' else 'none')
        if self.normalize not in ('zscore', 'none') or (
                self.normalize == 'zscore' and self.kind != 'regression'):
            raise TaskError(f"task '{self.name}': normalize must be "
                            f"'zscore' (regression) or 'none'")
        if not math.isfinite(self.weight) or self.weight < 0:
            raise TaskError(f"task '{self.name}': weight must be a "
                            f"non-negative number, got {self.weight}")
        self.metrics = list(self.metrics or METRICS[self.kind])
        unknown = set(self.metrics) - set(METRICS[self.kind])
        if unknown:
            raise TaskError(f"task '{self.name}': metrics {sorted(unknown)} "
                            f"do not apply to a {self.kind} task (available: "
                            f"{', '.join(METRICS[self.kind])})")
        if self.classes is not None:
            self.classes = [str(c) for c in self.classes]
            if len(set(self.classes)) != len(self.classes) or \
                    len(self.classes) < 2:
                raise TaskError(f"task '{self.name}': classes must be at "
                                f"least two distinct labels, got "
                                f"{self.classes}")
            if self.kind == 'classification' and len(self.classes) != 2:
                raise TaskError(f"task '{self.name}': a binary task has two "
                                f"classes, got {self.classes}")

    @property
    def width(self) -> int:
        """Label columns of this task in ``y`` / ``atom_y``."""
        return len(self.columns)

    @property
    def num_outputs(self) -> int:
        """Outputs of this task's head (logits for classification)."""
        if self.kind == 'multiclass':
            if not self.classes:
                raise TaskError(f"task '{self.name}': the classes of a "
                                f"multi-class task are not known yet")
            return len(self.classes)
        return self.width

    def to_dict(self) -> Dict:
        return asdict(self)


def task_from_dict(entry: Dict) -> Task:
    """A :class:`Task` from a config-file table; unknown keys are an
    error naming them."""
    known = set(Task.__dataclass_fields__)
    unknown = set(entry) - known
    if unknown:
        raise TaskError(f"task {entry.get('name', '?')!r}: unknown keys "
                        f"{sorted(unknown)} (known: {', '.join(sorted(known))})")
    if 'name' not in entry:
        raise TaskError(f'a task needs a name: {entry}')
    return Task(**entry)


def parse_targets(spec: str, default_kind: str = 'regression') -> List[Task]:
    r"""Tasks from the command-line form ``COLUMN[:KIND],...``.

    ``KIND`` is one of :data:`KINDS` (aliases: ``binary``, ``class``);
    without it :obj:`default_kind`. A multi-label task is
    ``NAME=COL1;COL2;...:multilabel``. The kind is taken after the last
    ``:``, so column names may contain ``:`` and ``/`` (``BBB+/BBB-``).
    """
    tasks = []
    for item in (s.strip() for s in spec.split(',')):
        if not item:
            continue
        name, kind = item, default_kind
        head, sep, tail = item.rpartition(':')
        if sep and _KIND_ALIASES.get(tail.lower(), tail.lower()) in KINDS:
            name, kind = head, tail
        elif sep:
            raise TaskError(f"target '{item}': unknown kind '{tail}' (use "
                            f"one of {', '.join(KINDS)})")
        columns = None
        if '=' in name:
            name, cols = name.split('=', 1)
            columns = [c for c in cols.split(';') if c]
        tasks.append(Task(name=name, kind=kind, columns=columns))
    if not tasks:
        raise TaskError(f'no targets in {spec!r}')
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise TaskError(f'duplicate target names in {spec!r}')
    return tasks


def label_slices(tasks: Sequence[Task]) -> Dict[str, Tuple[str, slice]]:
    """``{task name: (attribute, columns)}``: where each task's labels sit,
    ``'y'`` for molecule-level and ``'atom_y'`` for atom-level tasks."""
    offsets = {'molecule': 0, 'atom': 0}
    out = {}
    for task in tasks:
        start = offsets[task.level]
        offsets[task.level] += task.width
        out[task.name] = ('y' if task.level == 'molecule' else 'atom_y',
                          slice(start, start + task.width))
    return out


def infer_classes(task: Task, values: Sequence[str]) -> List[str]:
    """The classes of :obj:`task` seen in :obj:`values` (empty cells
    ignored), when the task declares none. Binary labels written as
    ``0/1``, ``false/true``, ``BBB-/BBB+``, ``inactive/active`` ... put the
    positive class second; otherwise classes are sorted (numerically if
    they are numbers)."""
    seen = sorted({v.strip() for v in values if v is not None and
                   v.strip() != ''}, key=_class_key)
    if task.kind != 'classification':
        return seen
    if len(seen) > 2:
        raise TaskError(f"task '{task.name}': a binary task has two classes, "
                        f"found {len(seen)}: {seen[:10]}")
    if len(seen) == 2:
        pos = [bool(_POSITIVE.search(v)) and not _NEGATIVE.search(v)
               for v in seen]
        if pos == [True, False]:
            seen = seen[::-1]
    return seen


def _class_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


#: Largest magnitude of a regression label: labels are stored as float32.
FLOAT32_MAX = 3.4028234663852886e38


def encode_label(task: Task, value: Optional[str]) -> float:
    """One cell of a task's column as a float label: the number
    (regression), the class index (classification), or ``NaN`` for an
    empty cell.

    Raises:
        TaskError: the value is not a number, not one of the task's
            classes, or (regression) not finite or too large for the
            float32 labels (:data:`FLOAT32_MAX`).
    """
    if value is None:
        return math.nan
    value = str(value).strip()
    if value == '' or value.lower() in ('nan', 'na', 'n/a', 'none', 'null'):
        return math.nan
    if task.kind == 'regression':
        try:
            number = float(value)
        except ValueError:
            raise TaskError(f"'{value}' is not a number") from None
        if not math.isfinite(number):
            raise TaskError(f"'{value}' is not a finite number")
        if abs(number) > FLOAT32_MAX:  # Labels are stored as float32.
            raise TaskError(f"'{value}' is out of the float32 range "
                            f"(|value| <= {FLOAT32_MAX:.4g})")
        return number
    classes = task.classes or []
    if value in classes:
        return float(classes.index(value))
    for i, c in enumerate(classes):  # '1' vs '1.0'
        try:
            if float(c) == float(value):
                return float(i)
        except ValueError:
            pass
    raise TaskError(f"'{value}' is not one of the classes {classes}")
