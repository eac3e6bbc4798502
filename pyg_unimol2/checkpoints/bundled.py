r"""Pretrained weights shipped with the package (``pyg_unimol2/weights/``).

Each entry of :data:`MANIFEST` (``weights.json``) names a small pretrained
backbone, its file, how it was made and its validation loss; the name
works wherever official weights by name do (``UniMol2.from_pretrained``,
``hub:NAME`` for ``finetune --pretrained``, ``embed`` and ``predict``),
offline. :func:`ship_weights` writes such an entry from a pretraining
checkpoint (``benchmarks/scaling_study.py --ship``).
"""
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

__all__ = ['WEIGHTS_DIR', 'MANIFEST', 'bundled_weights', 'bundled_file',
           'ship_weights']

#: Directory of the shipped weights.
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / 'weights'
#: Their manifest: ``{name: {file, preset, parameters, recipe, ...}}``.
MANIFEST = WEIGHTS_DIR / 'weights.json'


def bundled_weights(directory: Path = WEIGHTS_DIR) -> Dict[str, Dict]:
    """The manifest of the shipped weights (empty if there is none)."""
    manifest = directory / MANIFEST.name
    return json.loads(manifest.read_text()) if manifest.is_file() else {}


def bundled_file(name: str, directory: Path = WEIGHTS_DIR) -> Optional[Path]:
    """The file of the shipped weights :obj:`name` (case-insensitive), or
    :obj:`None` if no shipped weights have that name."""
    entries = {k.lower(): v for k, v in bundled_weights(directory).items()}
    entry = entries.get(name.lower())
    return None if entry is None else directory / entry['file']


def ship_weights(source: Union[str, os.PathLike], name: str,
                 info: Dict[str, Any], directory: Path = WEIGHTS_DIR,
                 dtype: torch.dtype = torch.float16) -> Path:
    r"""Writes the backbone of the checkpoint :obj:`source` (masked-atom
    head dropped, tensors rounded to :obj:`dtype`, half the size of
    float32) as ``<name>.pt`` into :obj:`directory` and records it in the
    manifest with :obj:`info` (recipe, validation loss, ...); loading
    rounds back to float32.

    Returns:
        Path: the written file.
    """
    from .formats import atomic_save, load_backbone, pretrain_state
    model = load_backbone(source)
    state = pretrain_state(model)
    state['model'] = {k: v.to(dtype) if v.is_floating_point() else v
                      for k, v in state['model'].items()}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f'{name}.pt'
    atomic_save(state, path)
    manifest = bundled_weights(directory)
    manifest[name] = dict(file=path.name, preset=model.config.name,
                          parameters=model.num_parameters(),
                          dtype=str(dtype).replace('torch.', ''),
                          bytes=path.stat().st_size, **info)
    (directory / MANIFEST.name).write_text(
        json.dumps(manifest, indent=2) + '\n')
    return path
