r"""The scaling law of the pretraining validation loss (paper eq. 10),
fitted to the validation-loss trajectories of several ``unimol2 pretrain``
runs and tested on held-out ones (paper Table 3, Fig. 4).

.. math::
    \mathcal{L}(M, S, C) = \alpha_m M^{\beta_m} + \alpha_s S^{\beta_s}
    + \alpha_c C^{\beta_c}, \qquad C = M S

in the paper's units, so that fitted coefficients compare with its eq. 11
(:data:`PAPER_LAW`): :math:`M` in millions of parameters, :math:`S` in
optimizer steps and :math:`C` their product (the batch size, constant across
the paper's runs, is left out). :math:`M` counts every parameter of
``UniMol2.from_preset(preset)`` of the run's ``config.json``: embeddings,
encoder, Gaussian kernel, position head and masked-atom head, as the
paper's model sizes do (84.12M for ``'84M'``). With these units eq. 11
gives the paper's predictions at step 810,000: 0.0885 for 570M (paper:
0.088) and 0.0875 for 1.1B (paper: 0.0871).

The fit (:func:`fit_scaling_law`) minimises the squared error of the
predicted loss over every validation point after :obj:`skip_steps` (the
transient; the paper skips 200,000 steps) of the fitting runs, with
:math:`\alpha_k = e^{u_k} > 0` and
:math:`-\text{BETA\_BOUND} \le \beta_k \le 0` (every term a positive,
decreasing power law: the loss falls towards zero with size, steps and
compute, the limit consistency the paper asks of eq. 10; a growing term
could fit noise and explode in extrapolation) and log inputs centred. It is
deterministic: :data:`START_EVALUATIONS` trust-region steps from each of a
fixed grid of starts (:data:`BETA_STARTS`, amplitudes by non-negative least
squares), then the best of them to convergence (tolerances
:data:`TOLERANCE`); the same points give the same coefficients, bit for bit
on one software stack. Standard errors come from the Jacobian in
:math:`(\alpha, \beta)` at the optimum, :math:`\sigma^2 (J^\top J)^{-1}`
with :math:`\sigma^2 = \mathrm{RSS} / (n - 6)`. A coefficient that the
data barely determine (a term that is negligible at every point, as the
paper's compute term, 1e-13 of its loss) gets a large one, and such a
coefficient may move on another software stack; one they do not determine
at all (a singular Jacobian, e.g. every point at one step) an infinite one.
"""
import itertools
import math
import warnings
from dataclasses import dataclass, fields
from typing import Dict, Tuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares, nnls

from ..errors import InputError

__all__ = ['ScalingLaw', 'ScalingFit', 'PAPER_LAW', 'fit_scaling_law',
           'scaling_metrics', 'PARAMETER_UNIT', 'BETA_STARTS']

#: Parameters per unit of :math:`M` (the paper's: millions).
PARAMETER_UNIT = 1e6
#: Starting exponents of the fit: every combination for the three terms.
BETA_STARTS = (-0.1, -0.5, -1.5)
#: Evaluations from every start; the best is then run to convergence, for
#: at most :data:`MAX_EVALUATIONS`.
START_EVALUATIONS = 100
MAX_EVALUATIONS = 20000
#: The exponents are fitted within ``[-BETA_BOUND, 0]``.
BETA_BOUND = 10.0
#: Free parameters of eq. 10.
NUM_COEFFICIENTS = 6
#: Termination tolerances of :func:`scipy.optimize.least_squares`.
TOLERANCE = 1e-15


@dataclass(frozen=True)
class ScalingLaw:
    r"""The coefficients of eq. 10; calling it predicts the loss.

    Args:
        alpha_m, beta_m: the model-size term :math:`\alpha_m M^{\beta_m}`.
        alpha_s, beta_s: the step term :math:`\alpha_s S^{\beta_s}`.
        alpha_c, beta_c: the compute term :math:`\alpha_c C^{\beta_c}`.
    """
    alpha_m: float
    beta_m: float
    alpha_s: float
    beta_s: float
    alpha_c: float
    beta_c: float

    def __call__(self, m: ArrayLike, steps: ArrayLike) -> np.ndarray:
        r"""The predicted loss at model size :obj:`m` (millions of
        parameters) and step :obj:`steps` (broadcast together)."""
        m, s = np.asarray(m, dtype=float), np.asarray(steps, dtype=float)
        return (self.alpha_m * m ** self.beta_m +
                self.alpha_s * s ** self.beta_s +
                self.alpha_c * (m * s) ** self.beta_c)

    def to_dict(self) -> Dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __str__(self) -> str:
        return (f'L = {self.alpha_m:.4g} M^{self.beta_m:.4g} + '
                f'{self.alpha_s:.4g} S^{self.beta_s:.4g} + '
                f'{self.alpha_c:.4g} C^{self.beta_c:.4g}')


#: The paper's fit on its 42M-310M runs (eq. 11).
PAPER_LAW = ScalingLaw(2.660, -1.137, 1.848, -0.225, 0.588, -1.479)
COEFFICIENTS = tuple(f.name for f in fields(ScalingLaw))


@dataclass(frozen=True, eq=False)
class ScalingFit:
    r"""A least-squares fit of eq. 10 (:func:`fit_scaling_law`).

    Args:
        law (ScalingLaw): the coefficients at the optimum.
        stderr (ScalingLaw): their standard errors (``inf``: not
            determined by the data).
        covariance (np.ndarray): their covariance ``[6, 6]``, in the
            order of :class:`ScalingLaw`'s fields.
        points (int): points fitted.
        rss (float): residual sum of squares.
    """
    law: ScalingLaw
    stderr: ScalingLaw
    covariance: np.ndarray
    points: int
    rss: float


def _residuals(theta: np.ndarray, x: np.ndarray, loss: np.ndarray
               ) -> np.ndarray:
    u, beta = theta[0::2], theta[1::2]
    return np.exp(u + beta * x).sum(axis=1) - loss


def _jacobian(theta: np.ndarray, x: np.ndarray, loss: np.ndarray
              ) -> np.ndarray:
    terms = np.exp(theta[0::2] + theta[1::2] * x)
    jac = np.empty((len(x), NUM_COEFFICIENTS))
    jac[:, 0::2], jac[:, 1::2] = terms, terms * x
    return jac


def _bounds(loss: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Bounds of ``(u, beta)``: a term at the centre of the data between
    the rounding error of the loss and ten times its largest value, an
    exponent in ``[-BETA_BOUND, 0]``."""
    low, high = np.empty(NUM_COEFFICIENTS), np.empty(NUM_COEFFICIENTS)
    low[0::2] = math.log(np.finfo(float).eps * loss.mean())
    high[0::2] = math.log(10.0 * loss.max())
    low[1::2], high[1::2] = -BETA_BOUND, 0.0
    return low, high


def _start(beta: Tuple[float, ...], x: np.ndarray, loss: np.ndarray,
           bounds: Tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``(u, beta)`` with the non-negative least-squares amplitudes of the
    three terms at exponents :obj:`beta` (a vanishing one kept at a
    millionth of the loss), inside :obj:`bounds`."""
    basis = np.exp(np.asarray(beta) * x)
    amplitude, _ = nnls(basis, loss)
    floor = 1e-6 * loss.mean() / basis.max(axis=0)
    theta = np.empty(NUM_COEFFICIENTS)
    theta[0::2], theta[1::2] = np.log(np.maximum(amplitude, floor)), beta
    low, high = bounds
    margin = 1e-3 * (high - low)
    return np.clip(theta, low + margin, high - margin)


def _covariance(jac: np.ndarray, variance: float
                ) -> Tuple[np.ndarray, np.ndarray]:
    r""":math:`\sigma^2 (J^\top J)^{-1}` on the directions the data
    determine, and a mask of the coefficients that also move along one they
    do not (singular values below :math:`10^{-10}` of the largest, columns
    scaled to unit norm)."""
    scale = np.linalg.norm(jac, axis=0)
    scale[scale == 0] = 1.0
    _, sv, vt = np.linalg.svd(jac / scale, full_matrices=False)
    kept = sv > 1e-10 * sv[0]
    inverse = (vt[kept].T / sv[kept] ** 2) @ vt[kept]
    free = (np.abs(vt[~kept]) > 1e-8).any(axis=0)
    return variance * inverse / np.outer(scale, scale), free


def fit_scaling_law(m: ArrayLike, steps: ArrayLike, loss: ArrayLike
                    ) -> ScalingFit:
    r"""Fits eq. 10 to validation losses by least squares, the best of a
    fixed grid of starts (see the module docstring).

    Args:
        m (array-like): model size of every point, millions of parameters,
            shape ``[n]``.
        steps (array-like): its optimizer step ``[n]``.
        loss (array-like): its validation loss ``[n]``, positive.

    Returns:
        ScalingFit: the coefficients, their standard errors and covariance.
    """
    m, s, y = (np.asarray(v, dtype=float) for v in (m, steps, loss))
    if len(y) <= NUM_COEFFICIENTS:
        raise InputError(f'{len(y)} points cannot determine the '
                         f'{NUM_COEFFICIENTS} coefficients of eq. 10 and '
                         f'their errors: give at least '
                         f'{NUM_COEFFICIENTS + 1}')
    logs = np.stack([np.log(m), np.log(s), np.log(m * s)], axis=1)
    centre = logs.mean(axis=0)
    x = logs - centre
    bounds = _bounds(y)
    options = dict(jac=_jacobian, bounds=bounds, args=(x, y), method='trf',
                   x_scale='jac', ftol=TOLERANCE, xtol=TOLERANCE,
                   gtol=TOLERANCE)
    best = None
    with np.errstate(over='ignore', invalid='ignore'):
        for beta in itertools.product(BETA_STARTS, repeat=3):
            result = least_squares(_residuals, _start(beta, x, y, bounds),
                                   max_nfev=START_EVALUATIONS, **options)
            if best is None or result.cost < best.cost:
                best = result
        best = least_squares(_residuals, best.x, max_nfev=MAX_EVALUATIONS,
                             **options)
    if best.status == 0:
        warnings.warn(f'the scaling-law fit stopped after {best.nfev} '
                      f'evaluations before converging; a coefficient is '
                      f'probably not determined by the data (see its '
                      f'standard error)')
    u, beta = best.x[0::2], best.x[1::2]
    alpha = np.exp(u - beta * centre)
    # Jacobian in (alpha, beta) at the optimum, on the uncentred logs.
    power = np.exp(beta * logs)
    jac = np.empty((len(y), NUM_COEFFICIENTS))
    jac[:, 0::2], jac[:, 1::2] = power, alpha * power * logs
    rss = float(np.sum(best.fun ** 2))
    covariance, free = _covariance(jac, rss / (len(y) - NUM_COEFFICIENTS))
    stderr = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    stderr[free] = math.inf
    coefficients = np.empty(NUM_COEFFICIENTS)
    coefficients[0::2], coefficients[1::2] = alpha, beta
    return ScalingFit(ScalingLaw(*map(float, coefficients)),
                      ScalingLaw(*map(float, stderr)), covariance, len(y),
                      rss)


def scaling_metrics(pred: ArrayLike, actual: ArrayLike) -> Dict[str, float]:
    r"""Table 3's metrics of predicted against actual losses: ``rmae``
    (eq. 13, :math:`\frac{1}{n}\sum_i |\hat y_i - y_i| / |y_i|`), ``mse``
    (eq. 14), ``r_squared`` (eq. 15) and ``pearson`` (eq. 16, both from
    :func:`~pyg_unimol2.tasks.metrics.regression_metrics`); and ``points``.
    """
    from ..tasks.metrics import regression_metrics
    pred, actual = np.asarray(pred, float), np.asarray(actual, float)
    common = regression_metrics(pred, actual)
    err = pred - actual
    return dict(rmae=float(np.mean(np.abs(err) / np.abs(actual))),
                mse=float(np.mean(err ** 2)), r_squared=common['r2'],
                pearson=common['pearson'], points=len(actual))


