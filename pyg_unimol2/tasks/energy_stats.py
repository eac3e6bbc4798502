r"""Normalisation statistics of energy/force labels (JMP).

Total energies are dominated by the atoms' own energies, so, as in JMP,
each dataset gets linear per-element reference energies
:math:`\mathbf{r} \in \mathbb{R}^{119}` (eV per atom of element
:math:`Z`, index 0 unused), fitted on its training set by ridge-regularised
least squares over the element counts :math:`c_{mZ}` of each molecule
:math:`m`:

.. math::
    \mathbf{r} = \arg\min_{\mathbf{r}} \sum_m \Bigl(E_m - \sum_Z c_{mZ}\,
    r_Z\Bigr)^2 + \lambda\,\lVert\mathbf{r}\rVert^2
    \quad (r_Z = 0 \text{ for elements absent from the data}).

The residual :math:`E_m - \sum_Z c_{mZ} r_Z` is what the model learns.
The scales are root mean squares (no shift: a constant per-molecule
offset would not be size-extensive):
:math:`\sigma_E` of the per-molecule residual energy and
:math:`\sigma_F` of the force components. Missing (``NaN``) labels are
left out of every fit. Units: eV, eV/Angstrom.
"""
from typing import Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..data.encoding import MAX_ATOMIC_NUM

__all__ = ['NUM_ELEMENTS', 'EnergyForceStats', 'element_counts',
           'fit_reference_energies', 'fit_energy_force_stats']

#: Length of a per-element table (atomic numbers ``0..118``, ``0`` unused).
NUM_ELEMENTS = MAX_ATOMIC_NUM + 1

#: Atomic numbers of each molecule (a sequence of ``[n_m]`` tensors, arrays
#: or lists, or the rows of an ``[N, n]`` array when all molecules have the
#: same atoms, e.g. the frames of a trajectory) or element counts
#: ``[N, 119]`` (told apart by their column 0, which counts no element and
#: is zero, while atomic numbers are at least 1).
Elements = Union[Tensor, np.ndarray, Sequence]


class EnergyForceStats(NamedTuple):
    """Reference energies ``[119]`` (float64, eV), :math:`\\sigma_E` (eV) and
    :math:`\\sigma_F` (eV/Angstrom)."""
    reference: Tensor
    energy_scale: float
    force_scale: float


def element_counts(z: Sequence) -> Tensor:
    r"""Element counts ``[N, 119]`` (float64) of :math:`N` molecules given
    by their atomic numbers.

    Raises:
        ValueError: if an atomic number is outside ``1..118``.
    """
    parts = [torch.as_tensor(zi).long().view(-1).cpu() for zi in z]
    lengths = torch.tensor([p.numel() for p in parts], dtype=torch.long)
    flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    if flat.numel() and not bool(((flat >= 1)
                                  & (flat <= MAX_ATOMIC_NUM)).all()):
        raise ValueError(f'atomic numbers must be in 1..{MAX_ATOMIC_NUM}')
    mol = torch.repeat_interleave(torch.arange(len(parts)), lengths)
    counts = torch.zeros(len(parts), NUM_ELEMENTS, dtype=torch.float64)
    return counts.index_put_((mol, flat), torch.ones(flat.numel(),
                                                     dtype=torch.float64),
                             accumulate=True)


def _is_counts(z: Elements) -> bool:
    return (isinstance(z, (Tensor, np.ndarray)) and z.ndim == 2
            and z.shape[1] == NUM_ELEMENTS and not bool((z[:, 0] != 0).any()))


def _count_chunks(z: Elements, chunk_size: int = 1 << 15
                  ) -> Iterator[Tensor]:
    """Element counts of :obj:`z` in chunks of molecules, so that no
    ``[N, 119]`` table of a large dataset is held at once."""
    if _is_counts(z):
        counts = torch.as_tensor(z).cpu()
        for i in range(0, counts.size(0), chunk_size):
            yield counts[i:i + chunk_size].to(torch.float64)
        return
    for i in range(0, len(z), chunk_size):
        yield element_counts(z[i:i + chunk_size])


def _as_energies(energies) -> Tensor:
    return torch.as_tensor(energies, dtype=torch.float64).view(-1).cpu()


def fit_reference_energies(z: Elements, energies, ridge: float = 0.0
                           ) -> Tensor:
    r"""Per-element reference energies by ridge least squares (module
    docstring), over the elements present in molecules with a finite
    energy.

    Args:
        z (list or Tensor): atomic numbers of each molecule, or element
            counts ``[N, 119]`` (see :data:`Elements`).
        energies (Tensor or array): total energies ``[N]`` (eV); ``NaN``
            = unknown.
        ridge (float, optional): :math:`\lambda \ge 0`; it biases the
            reference of rare elements by about :math:`\lambda r_Z /
            c_Z^2`, and without it a rank-deficient system (elements always
            in a fixed ratio) gets the minimum-norm solution.
            (default: :obj:`0.0`)

    Returns:
        Tensor: reference energies ``[119]`` (float64, eV per atom; zero
        for absent elements).
    """
    energies = _as_energies(energies)
    gram = torch.zeros(NUM_ELEMENTS, NUM_ELEMENTS, dtype=torch.float64)
    rhs = torch.zeros(NUM_ELEMENTS, dtype=torch.float64)
    start = 0
    for counts in _count_chunks(z):
        e = energies[start:start + counts.size(0)]
        if e.numel() != counts.size(0):
            raise ValueError('fewer energies than molecules')
        start += counts.size(0)
        keep = torch.isfinite(e)
        counts, e = counts[keep], e[keep]
        gram += counts.t() @ counts
        rhs += counts.t() @ e
    if start != energies.numel():
        raise ValueError(f'{energies.numel()} energies for {start} '
                         f'molecules')
    present = gram.diagonal() > 0
    reference = torch.zeros(NUM_ELEMENTS, dtype=torch.float64)
    if bool(present.any()):
        a = gram[present][:, present]
        a = a + ridge * torch.eye(a.size(0), dtype=torch.float64)
        # Least squares on the normal equations: also rank-deficient ones.
        reference[present] = torch.linalg.lstsq(
            a, rhs[present].unsqueeze(-1), driver='gelsd').solution[:, 0]
    return reference


def _rms(sum_sq: float, count: int) -> float:
    return float(np.sqrt(sum_sq / count)) if count and sum_sq > 0 else 1.0


def fit_energy_force_stats(z: Elements, energies,
                           forces: Optional[Union[Tensor,
                                                  Sequence]] = None,
                           ridge: float = 0.0) -> EnergyForceStats:
    r"""Reference energies (:func:`fit_reference_energies`), the RMS
    :math:`\sigma_E` of the residual energy per molecule and the RMS
    :math:`\sigma_F` of the force components (``1`` without labels).

    Args:
        z (list or Tensor): atomic numbers of each molecule, or element
            counts ``[N, 119]`` (see :data:`Elements`).
        energies (Tensor or array): total energies ``[N]`` (eV), ``NaN`` =
            unknown.
        forces (Tensor or list, optional): force components of the
            training set, one tensor of any shape (e.g. the concatenated
            ``[num_atoms, 3]``) or one per molecule (eV/Angstrom), ``NaN``
            = unknown. (default: :obj:`None`)
        ridge (float, optional): see :func:`fit_reference_energies`.
    """
    reference = fit_reference_energies(z, energies, ridge)
    energies = _as_energies(energies)
    sum_sq, count, start = 0.0, 0, 0
    for counts in _count_chunks(z):
        e = energies[start:start + counts.size(0)]
        start += counts.size(0)
        residual = (e - counts @ reference)[torch.isfinite(e)]
        sum_sq += float((residual * residual).sum())
        count += residual.numel()
    energy_scale = _rms(sum_sq, count)
    force_scale = 1.0
    if forces is not None:
        parts = [forces] if isinstance(forces, Tensor) else forces
        sum_sq, count = 0.0, 0
        for f in parts:
            f = torch.as_tensor(f, dtype=torch.float64)
            f = f[torch.isfinite(f)]
            sum_sq += float((f * f).sum())
            count += f.numel()
        force_scale = _rms(sum_sq, count)
    return EnergyForceStats(reference, energy_scale, force_scale)
