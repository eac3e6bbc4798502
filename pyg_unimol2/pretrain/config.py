r"""Configuration of a pretraining run: :class:`PretrainConfig`.

Values are resolved in this order, later ones winning: the dataclass
defaults (the paper's recipe), a config file (``.json``, ``.toml``, or
``.yaml`` when PyYAML is installed) and command-line flags. The objective
settings (:class:`~pyg_unimol2.pretrain.objectives.ObjectiveConfig`) may be
given flat or under an ``objective`` table, e.g. in TOML:

.. code-block:: toml

    store = "runs/moses20k_store"
    preset = "small"
    max_steps = 300

    [objective]
    noise_type = "uniform"

Every field ``some_name`` has the flag ``--some-name``
(:func:`add_arguments`).
"""
import argparse
import os
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..config_file import read_config_file
from ..errors import ConfigError
from .objectives import ObjectiveConfig

__all__ = ['PretrainConfig', 'load_config_file', 'add_arguments',
           'config_from_args']


@dataclass
class PretrainConfig:
    r"""Hyper-parameters of a pretraining run (defaults: the paper).

    Args:
        store (str): molecule store directory (``unimol2 build-hdf5``).
        out (str): run directory: checkpoints, TensorBoard logs,
            ``metrics.jsonl``, ``config.json``.
        preset (str): model preset (:data:`~pyg_unimol2.models.PRESETS`).
        max_steps (int): optimizer steps in all.
        lr (float): peak learning rate.
        warmup_steps (int): linear warmup steps, then linear decay to zero
            at :obj:`max_steps`.
        weight_decay (float): AdamW weight decay.
        beta1 (float): AdamW :math:`\beta_1`.
        beta2 (float): AdamW :math:`\beta_2`.
        adam_eps (float): AdamW :math:`\epsilon`.
        clip_norm (float): gradient-norm clipping.
        max_tokens (int, optional): padded atoms ``B * L`` per micro-batch
            and rank (:obj:`None` or ``0``: no limit).
        max_pairs (int, optional): padded pairs ``B * L**2`` per
            micro-batch and rank (:obj:`None` or ``0``: no limit).
        max_batch_size (int, optional): molecules per micro-batch and rank
            (:obj:`None` or ``0``: no limit).
        accumulation (int): micro-batches per optimizer step and rank.
        bucket_size (int): molecules sorted together by the batch sampler.
        scaffold_tau (float, optional): scaffold temperature sampling
            (paper eq. 1); :obj:`None` or ``0``: uniform shuffling.
        valid_fraction (float): molecules held out for validation.
        valid_every (int): validation-loss interval in steps (and at the
            end).
        valid_max_tokens (int, optional): atom budget of validation
            batches (default: :obj:`max_tokens`).
        ckpt_every (int): checkpoint interval in steps (and at the end).
        keep_checkpoints (int): newest checkpoints kept.
        log_every (int): TensorBoard interval in steps.
        precision (str): ``'fp32'``, ``'bf16'`` or ``'fp16'`` (autocast;
            loss scaling for fp16).
        device (str, optional): ``'cpu'`` or ``'cuda'`` (default: CUDA if
            available); under ``torchrun`` each rank uses ``cuda:LOCAL_RANK``.
        seed (int): seed of initialisation, sampling and corruption.
        num_workers (int, optional): DataLoader worker processes per rank
            that collate batches ahead of the step, persistent over the run
            (:class:`~pyg_unimol2.data.prefetch.EpochLoader`); batch order
            and content do not depend on it. (default: :obj:`None`:
            ``min(2, cores per rank - 1)``,
            :func:`~pyg_unimol2.data.prefetch.default_workers`; ``0``: the
            main process collates)
        threads (int, optional): PyTorch CPU threads per rank.
        progress (bool): progress bar on rank 0.
        strict (bool): stop at the first molecule of the store that fails
            verification (checksum mismatch, truncated shard) instead of
            reporting and skipping it.
        objective (ObjectiveConfig): masking, noise and loss weights.
        domains (list of dict): energy/force datasets for joint
            multi-domain pretraining (JMP), one table each (the fields of
            :class:`~pyg_unimol2.pretrain.energy_force.Domain`: ``name``,
            ``store``, ``force``, ``energy_weight``, ``force_weight``,
            ``weight``, ``force_loss``); given (in a config file), they
            replace the self-supervised objectives and :obj:`store`.
        mix (str): how batches are drawn from the domains:
            ``'temperature'``, ``'proportional'`` or ``'uniform'``.
        temperature (float): :math:`T` of temperature sampling over
            domains, :math:`p_d \propto n_d^{1/T}` (JMP: ``2``).
        init_from (str, optional): a checkpoint (any format, ``hub:84M``
            too) whose backbone the run starts from: energy/force runs with
            fresh or kept heads, e.g. to fine-tune on a new domain;
            masked-atom runs with its masked-atom head where it has one, to
            go on pretraining.
        keep_heads (dict): ``{domain: pretrained domain}``: start the heads
            of a domain from those of a domain of :obj:`init_from`, weights
            and statistics, so that its first predictions are the
            pretrained model's; the other domains get fresh heads with
            statistics fitted on their training split.
        layer_decay (float): layer-wise learning-rate decay :math:`\gamma`
            (:func:`~pyg_unimol2.train.optim.layerwise_lr_groups`; ``1``:
            none).
        ema_decay (float): decay of an exponential moving average of the
            weights, used for validation and saved in checkpoints (``0``:
            none).
        fsdp (bool): shard parameters, gradients and optimizer state over
            the ranks (FSDP2, :mod:`~pyg_unimol2.pretrain.sharding`) instead
            of replicating them (DDP); sharded checkpoints.
    """
    store: str = ''
    out: str = 'runs/pretrain'
    preset: str = 'small'
    max_steps: int = 1_000_000
    lr: float = 1e-4
    warmup_steps: int = 100_000
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.99
    adam_eps: float = 1e-8
    clip_norm: float = 1.0
    max_tokens: Optional[int] = 2048
    max_pairs: Optional[int] = None
    max_batch_size: Optional[int] = None
    accumulation: int = 1
    bucket_size: int = 4096
    scaffold_tau: Optional[float] = 0.005
    valid_fraction: float = 0.01
    valid_every: int = 1000
    valid_max_tokens: Optional[int] = None
    ckpt_every: int = 1000
    keep_checkpoints: int = 10
    log_every: int = 10
    precision: str = 'fp32'
    device: Optional[str] = None
    seed: int = 0
    num_workers: Optional[int] = None
    threads: Optional[int] = None
    progress: bool = True
    strict: bool = False
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    domains: List[Dict[str, Any]] = field(default_factory=list)
    mix: str = 'temperature'
    temperature: float = 2.0
    init_from: Optional[str] = None
    keep_heads: Dict[str, str] = field(default_factory=dict)
    layer_decay: float = 1.0
    ema_decay: float = 0.0
    fsdp: bool = False

    def __post_init__(self):
        if isinstance(self.objective, dict):
            self.objective = ObjectiveConfig(**self.objective)
        if self.precision not in ('fp32', 'bf16', 'fp16'):
            raise ConfigError(f"precision must be 'fp32', 'bf16' or 'fp16', "
                              f"got {self.precision!r}")
        if self.accumulation < 1 or self.max_steps < 1:
            raise ConfigError('accumulation and max_steps must be positive')
        if not 0.0 <= self.valid_fraction <= 1.0:
            raise ConfigError(f'valid_fraction must be in [0, 1], got '
                              f'{self.valid_fraction}')
        from ..models.unimol2 import PRESETS
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset '{self.preset}' (use one of "
                              f"{', '.join(PRESETS)})")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


_TOP = {f.name for f in fields(PretrainConfig)} - {'objective'}
#: Settings of a config file only (tables, not flags).
_FILE_ONLY = {'domains', 'keep_heads'}
_OBJECTIVE = {f.name for f in fields(ObjectiveConfig)}


def load_config_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Reads a ``.json``, ``.toml`` or ``.yaml`` config file into a flat
    dict of :class:`PretrainConfig` and objective fields."""
    path = Path(path)
    raw = read_config_file(path)
    flat = dict(raw)
    flat.update(flat.pop('objective', None) or {})
    unknown = set(flat) - _TOP - _OBJECTIVE
    if unknown:
        raise ConfigError(f'config {path}: unknown keys '
                          f'{", ".join(sorted(unknown))} (known: '
                          f'{", ".join(sorted(_TOP | _OBJECTIVE))}; the '
                          f'objective ones also under [objective])')
    return flat


def _flag_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config`` and a flag per field (default: not given, so that
    only given flags override the config file)."""
    parser.add_argument('--config', default=None,
                        help='.json/.toml/.yaml file of settings (flags '
                        'override it)')
    hints = {**typing.get_type_hints(ObjectiveConfig),
             **typing.get_type_hints(PretrainConfig)}
    for name in sorted((_TOP | _OBJECTIVE) - _FILE_ONLY):
        kind = _flag_type(hints[name])
        flag = '--' + name.replace('_', '-')
        if kind is bool:
            parser.add_argument(flag, dest=name, default=None,
                                action=argparse.BooleanOptionalAction)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None)


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """Defaults, then :obj:`args.config`, then the given flags."""
    values = load_config_file(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items()
                   if k in _TOP | _OBJECTIVE and v is not None})
    objective = {k: values.pop(k) for k in list(values) if k in _OBJECTIVE}
    config = PretrainConfig(**values, objective=ObjectiveConfig(**objective))
    if not config.store and not config.domains:
        raise ConfigError('no store given: pass --store DIR (a store built '
                          'by unimol2 build-hdf5) or set "store" (or '
                          'energy/force "domains") in --config')
    return config
