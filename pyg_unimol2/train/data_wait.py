r"""How long a training loop waits for its data: :class:`DataWait`.

A step's *data wait* is the time from the start of the step until its
micro-batches are ready on the device: the main process blocked in
``next()`` on the batch stream (waiting for a worker, receiving and
unpacking the batch, or collating it itself without workers), plus the
host-to-device copy and, in pretraining, the corruption of the batch.
The *data-wait fraction* is the data wait over the wall time of the steps
(data wait, forward, backward, optimizer step; validation and checkpoints
are outside the steps): near 0 when the workers keep ahead of the model.
"""
import time

__all__ = ['DataWait']


class DataWait:
    r"""Data-wait fraction of the steps of a training loop (see the module
    docstring), over each log interval (:meth:`interval`) and over the run
    (:attr:`fraction`).

    Each step calls :meth:`begin_step` before fetching its micro-batches,
    :meth:`data_ready` once they are on the device and :meth:`end_step`
    after the optimizer step.
    """
    def __init__(self) -> None:
        self._begin = self._ready = 0.0
        self._wait = self._wall = 0.0  # since the last interval()
        self.total_wait = self.total_wall = 0.0  #: seconds over the run

    def begin_step(self) -> None:
        self._begin = self._ready = time.perf_counter()

    def data_ready(self) -> None:
        self._ready = time.perf_counter()

    def end_step(self) -> None:
        wait = self._ready - self._begin
        wall = time.perf_counter() - self._begin
        self._wait += wait
        self._wall += wall
        self.total_wait += wait
        self.total_wall += wall

    def interval(self) -> float:
        """The fraction over the steps ended since the last call (or the
        start); starts a new interval."""
        fraction = self._wait / self._wall if self._wall > 0 else 0.0
        self._wait = self._wall = 0.0
        return fraction

    @property
    def fraction(self) -> float:
        """The fraction over all steps ended so far."""
        return self.total_wait / self.total_wall if self.total_wall > 0 \
            else 0.0

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.fraction:.3f})'
