import pytest
import torch

from pyg_unimol2.train.ema import ExponentialMovingAverage


def test_ema_matches_the_closed_form_and_restores_weights():
    model = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in model.named_parameters()}
    ema = ExponentialMovingAverage(model, decay=0.9)
    values = []
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step))
        values.append(float(step))
        ema.update()
    # avg = 0.9^3 * start + sum_k 0.1 * 0.9^(3-k) * k
    expected_shift = sum(0.1 * 0.9 ** (3 - k) * k for k in (1, 2, 3))
    with ema.average_parameters():
        for name, p in model.named_parameters():
            torch.testing.assert_close(p, 0.9 ** 3 * start[name] +
                                       expected_shift)
    for p in model.parameters():  # training weights are back
        assert torch.all(p == 3.0)


def test_ema_rejects_bad_decay():
    with pytest.raises(ValueError, match='decay'):
        ExponentialMovingAverage(torch.nn.Linear(1, 1), decay=1.0)
