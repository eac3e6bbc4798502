r"""Collated batches as one buffer, to leave DataLoader workers cheaply.

A DataLoader worker hands every tensor of its batch to the main process
through its own shared-memory segment, one file-descriptor round trip per
tensor. A PyG :class:`~torch_geometric.data.Batch` of molecules holds about
45 tensors (its attributes plus the slice and increment tensors), so that
receiving it costs the main process as much as collating it there (about
4.6 ms of main-process CPU per 32 QM9 molecules on a busy 2-core machine,
1.4 ms packed). :class:`Packed` copies every tensor of a batch into one
``uint8`` buffer and pickles the rest of the batch (any picklable object:
PyG batches, dataclasses such as
:class:`~pyg_unimol2.data.dense.DenseBatch`, tuples, strings) with
references into it: the main process receives one shared tensor and a few
bytes, and rebuilds the batch as views of the buffer, on the host
(:meth:`Packed.unpack`) or after one copy on a device (:meth:`Packed.to`).
The DataLoader's pin-memory thread pins that buffer
(:meth:`Packed.pin_memory`), so that the copy to a GPU is asynchronous.
"""
import io
import pickle
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ['Packed']

#: Byte alignment of every tensor in the buffer (the largest element size).
ALIGN = 16

#: Where a tensor lies in the buffer: byte offset, dtype, shape.
_Slot = Tuple[int, torch.dtype, Tuple[int, ...]]


class _Pickler(pickle.Pickler):
    """Pickles an object with every tensor replaced by its slot index."""
    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors: List[Tensor] = []

    def persistent_id(self, obj: Any) -> Optional[int]:
        if isinstance(obj, Tensor):
            self.tensors.append(obj)
            return len(self.tensors) - 1
        return None


class _Unpickler(pickle.Unpickler):
    """Rebuilds a :class:`_Pickler` output with views of a buffer."""
    def __init__(self, file: io.BytesIO, buffer: Tensor,
                 slots: Sequence[_Slot]) -> None:
        super().__init__(file)
        self.buffer, self.slots = buffer, slots

    def persistent_load(self, pid: int) -> Tensor:
        offset, dtype, shape = self.slots[pid]
        size = torch.Size(shape).numel() * dtype.itemsize
        return self.buffer[offset:offset + size].view(dtype).view(shape)


class Packed:
    r"""An object whose tensors lie in one ``uint8`` buffer (see the module
    docstring); :meth:`pack` makes one, :meth:`unpack` / :meth:`to` give
    the object back (equal values, dtypes and shapes; the tensors are
    contiguous views of the buffer).

    Args:
        buffer (Tensor): the tensors' bytes, ``[num_bytes]``.
        slots (list): offset, dtype and shape of every tensor.
        structure (bytes): the object, pickled with references to
            :obj:`slots`.
    """
    def __init__(self, buffer: Tensor, slots: List[_Slot],
                 structure: bytes) -> None:
        self.buffer, self.slots, self.structure = buffer, slots, structure

    @classmethod
    def pack(cls, obj: Any) -> 'Packed':
        """Packs the tensors of :obj:`obj` (host tensors) into one
        buffer."""
        file = io.BytesIO()
        pickler = _Pickler(file)
        pickler.dump(obj)
        slots, offset = [], 0
        for t in pickler.tensors:
            slots.append((offset, t.dtype, tuple(t.shape)))
            offset += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
        buffer = torch.empty(offset, dtype=torch.uint8)
        for (start, _, _), t in zip(slots, pickler.tensors):
            flat = t.detach().contiguous().view(-1).view(torch.uint8)
            buffer[start:start + flat.numel()] = flat
        return cls(buffer, slots, file.getvalue())

    def unpack(self) -> Any:
        """The object, its tensors views of :attr:`buffer`."""
        return _Unpickler(io.BytesIO(self.structure), self.buffer,
                          self.slots).load()

    def to(self, device: torch.device) -> Any:
        """The object on :obj:`device`: one copy of the buffer,
        asynchronous from pinned memory."""
        return Packed(self.buffer.to(device, non_blocking=True), self.slots,
                      self.structure).unpack()

    def pin_memory(self) -> 'Packed':
        """The same, its buffer in page-locked memory (called by the
        DataLoader's pin-memory thread)."""
        return Packed(self.buffer.pin_memory(), self.slots, self.structure)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({len(self.slots)} tensors, '
                f'{self.buffer.numel()} bytes)')
