r"""Checksums that travel inside a checkpoint.

``torch.load`` reads a checkpoint whose tensor bytes were damaged on disk
without complaint (only the zip directory is checked). :func:`seal` adds a
``checksum`` entry, a BLAKE2b digest of the content (every tensor's dtype,
shape and bytes, every key and plain value, in a fixed order), and
:func:`verify` recomputes it after loading. Checkpoints without the entry
(official ones, those of older versions) are read unverified.
"""
import hashlib
from typing import Any, Dict, Optional

import numpy as np
import torch

__all__ = ['seal', 'verify', 'content_digest', 'CHECKSUM_KEY']

CHECKSUM_KEY = 'checksum'
_PLAIN = (str, int, float, bool, type(None), complex)


def _update(h: 'hashlib._Hash', obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f'T{t.dtype}{tuple(t.shape)}'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, np.ndarray):
        h.update(f'A{obj.dtype}{obj.shape}'.encode())
        h.update(np.ascontiguousarray(obj).data)
    elif isinstance(obj, dict):
        h.update(f'D{len(obj)}'.encode())
        for key in sorted(obj, key=repr):
            _update(h, key)
            _update(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f'L{len(obj)}'.encode())
        for item in obj:
            _update(h, item)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(b'B' + bytes(obj))
    elif isinstance(obj, _PLAIN + (np.generic, )):
        h.update(repr(obj).encode())
    else:  # objects whose repr may hold a memory address: their type only
        h.update(f'O{type(obj).__qualname__}'.encode())


def content_digest(obj: Any) -> str:
    """Hex BLAKE2b digest of the content of :obj:`obj`."""
    h = hashlib.blake2b(digest_size=32)
    _update(h, obj)
    return h.hexdigest()


def seal(state: Dict[str, Any]) -> Dict[str, Any]:
    """:obj:`state` plus its ``checksum`` entry (a new dict)."""
    body = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    return dict(body, **{CHECKSUM_KEY: dict(algorithm='blake2b-256',
                                            digest=content_digest(body))})


def verify(state: Dict[str, Any]) -> Optional[bool]:
    """:obj:`True` if the ``checksum`` entry of :obj:`state` matches its
    content, :obj:`False` if not, :obj:`None` if it has none."""
    entry = state.get(CHECKSUM_KEY)
    if not isinstance(entry, dict) or 'digest' not in entry:
        return None
    body = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    return content_digest(body) == entry['digest']
