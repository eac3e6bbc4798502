"""The README's code examples run and do what they say."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / 'README.md'


def example(name: str) -> str:
    text = README.read_text()
    match = re.search(rf'<!-- example: {name} -->\s*```python\n(.*?)```',
                      text, re.S)
    assert match, f'example {name!r} not found in README.md'
    return match.group(1)


def test_gnn_example_runs_and_trains():
    scope = {}
    exec(compile(example('gnn'), 'README.md:gnn', 'exec'), scope)
    prediction = scope['prediction']
    assert prediction.shape == (3, 1) and torch.isfinite(prediction).all()

    # The pair features really reach the output: gradients flow into the
    # pair embeddings, the 3D kernel and the attention bias.
    model, batch = scope['GINEWithPairAttention'](), scope['batch']
    model(batch).sum().backward()
    for module in (model.pair.shorest_path_encoder, model.kernel.out_proj.layer2,
                   model.attn.linear_bias):
        assert module.weight.grad is not None
        assert module.weight.grad.abs().sum() > 0
