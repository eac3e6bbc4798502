r"""Energy/force loss of one dataset's batch (JMP), on normalised values.

.. math::
    \mathcal{L} = \lambda_E\,\frac{1}{|O_E|}\sum_{m \in O_E}
    \ell_E\!\left(\hat{e}_m, e_m\right)
    + \lambda_F\,\frac{1}{|O_F|}\sum_{i \in O_F}
    \bigl\lVert\hat{\mathbf{f}}_i - \mathbf{f}_i\bigr\rVert_2

with :math:`e = (E - \sum_i r_{Z_i}) / \sigma_E` and
:math:`\mathbf{f} = \mathbf{F} / \sigma_F` (see
:mod:`pyg_unimol2.tasks.energy_stats` and
:meth:`pyg_unimol2.models.EnergyForceModel.normalize`), :math:`O_E` the
molecules with a finite energy label and :math:`O_F` the real atoms with
a finite force label in the batch: like the task losses
(:mod:`pyg_unimol2.tasks.losses`), missing labels contribute nothing, and
a term without any label is exactly zero (no gradient). The force term is
the mean per-atom error norm over all atoms of the batch (``'l2'``, JMP),
or the mean absolute error per component (``'mae'``). The joint loss over
datasets, :math:`\sum_d w_d\,\mathcal{L}_d`, is the trainer's.
"""
from typing import Dict, Optional

import torch
from torch import Tensor
from torch.nn import functional as F

from ..nn._utils import safe_norm

__all__ = ['ENERGY_LOSSES', 'FORCE_LOSSES', 'energy_force_loss']

#: Energy terms :math:`\ell_E`: absolute, squared or smooth-L1
#: (:math:`\beta = 1`) error.
ENERGY_LOSSES = ('mae', 'mse', 'smooth_l1')
#: Force terms: per-atom error norm (JMP) or per-component absolute error.
FORCE_LOSSES = ('l2', 'mae')


def energy_force_loss(energy: Tensor, forces: Tensor, target_energy: Tensor,
                      target_forces: Tensor, mask: Optional[Tensor] = None,
                      *, energy_weight: float = 1.0,
                      force_weight: float = 1.0, energy_loss: str = 'mae',
                      force_loss: str = 'l2') -> Dict[str, Tensor]:
    r"""The loss of a batch (module docstring).

    Args:
        energy (Tensor): normalised predicted energies ``[B]``.
        forces (Tensor): normalised predicted forces ``[B, L, 3]``.
        target_energy (Tensor): normalised energies ``[B]``, ``NaN`` =
            unknown.
        target_forces (Tensor): normalised forces ``[B, L, 3]``, ``NaN`` =
            unknown (an atom counts only if its three components are
            finite; padding may hold ``NaN``).
        mask (BoolTensor, optional): real atoms ``[B, L]``.
        energy_weight (float, optional): :math:`\lambda_E`.
            (default: :obj:`1.0`)
        force_weight (float, optional): :math:`\lambda_F`.
            (default: :obj:`1.0`)
        energy_loss (str, optional): one of :data:`ENERGY_LOSSES`.
            (default: :obj:`'mae'`)
        force_loss (str, optional): one of :data:`FORCE_LOSSES`.
            (default: :obj:`'l2'`)

    Returns:
        dict: ``'loss'`` (:math:`\lambda_E\mathcal{L}_E +
        \lambda_F\mathcal{L}_F`), the unweighted terms ``'energy'`` and
        ``'forces'``, and the label counts ``'num_energies'``
        (:math:`|O_E|`) and ``'num_atoms'`` (:math:`|O_F|`).
    """
    if energy_loss not in ENERGY_LOSSES:
        raise ValueError(f"energy_loss must be one of {ENERGY_LOSSES} "
                         f"(got {energy_loss!r})")
    if force_loss not in FORCE_LOSSES:
        raise ValueError(f"force_loss must be one of {FORCE_LOSSES} "
                         f"(got {force_loss!r})")
    observed = torch.isfinite(target_energy)
    if bool(observed.any()):
        pred, true = energy[observed], target_energy[observed].to(energy)
        if energy_loss == 'mae':
            e_term = F.l1_loss(pred, true)
        elif energy_loss == 'mse':
            e_term = F.mse_loss(pred, true)
        else:
            e_term = F.smooth_l1_loss(pred, true, beta=1.0)
    else:
        e_term = energy.sum() * 0.0
    atoms = torch.isfinite(target_forces).all(dim=-1)
    if mask is not None:
        atoms = atoms & mask.bool()
    if bool(atoms.any()):
        error = forces[atoms] - target_forces[atoms].to(forces)
        f_term = safe_norm(error).mean() if force_loss == 'l2' \
            else error.abs().mean()
    else:
        f_term = forces.sum() * 0.0
    return {'loss': energy_weight * e_term + force_weight * f_term,
            'energy': e_term, 'forces': f_term,
            'num_energies': observed.sum(), 'num_atoms': atoms.sum()}
