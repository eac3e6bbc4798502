import pytest
import torch

from pyg_unimol2.models import EnergyForceModel, UniMol2
from pyg_unimol2.train.optim import layerwise_lr_groups


@pytest.mark.parametrize('wrapped', [False, True])
def test_layerwise_lr_groups(wrapped):
    backbone = UniMol2.from_preset('tiny')  # with its lm and position heads
    model = EnergyForceModel(backbone, {'a': 'direct', 'b': 'conservative'}) \
        if wrapped else backbone
    lr, decay, K = 1e-3, 0.8, backbone.config.num_layers
    groups = layerwise_lr_groups(model, lr, decay)
    ids = [id(p) for g in groups for p in g['params']]
    assert len(ids) == len(set(ids))  # exactly once
    assert set(ids) == {id(p) for p in model.parameters()}
    by_name = {g['name']: g for g in groups}
    assert [g['name'] for g in groups] == \
        ['embeddings'] + [f'layer.{k}' for k in range(K)] + ['heads']
    assert by_name['embeddings']['lr'] == pytest.approx(lr * decay**(K + 1))
    for k in range(K):
        assert by_name[f'layer.{k}']['lr'] == \
            pytest.approx(lr * decay**(K - k))
        assert {id(p) for p in by_name[f'layer.{k}']['params']} == \
            {id(p) for p in backbone.encoder.layers[k].parameters()}
    assert by_name['heads']['lr'] == lr
    heads = {id(p) for p in by_name['heads']['params']}
    assert {id(p) for p in backbone.movement_pred_head.parameters()} <= heads
    embeddings = {id(p) for p in by_name['embeddings']['params']}
    assert id(backbone.embed_tokens.weight) in embeddings
    assert id(backbone.encoder.pair_layer_norm.weight) in embeddings
    assert id(backbone.se3_invariant_kernel.gaussian.mul.weight) in embeddings
    if wrapped:
        assert {id(p) for p in model.heads.parameters()} <= heads
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    assert [g['lr'] for g in optimizer.param_groups] == \
        [g['lr'] for g in groups]
    with pytest.raises(ValueError, match='no UniMol2'):
        layerwise_lr_groups(torch.nn.Linear(2, 2), lr, decay)
