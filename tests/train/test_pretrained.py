import pytest
import torch

from pyg_unimol2.models import UniMol2, save_official
from pyg_unimol2.models.regressor import build_regressor, load_backbone_weights
from pyg_unimol2.train.finetune import save_checkpoint


def test_backbone_weights_load_from_a_finetuning_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = build_regressor('tiny', ['a', 'b'])
    save_checkpoint(source, None, tmp_path / 'ckpt.pt')
    target = build_regressor('tiny', ['c'])
    load_backbone_weights(target, str(tmp_path / 'ckpt.pt'))
    for (name, p), q in zip(source.backbone.state_dict().items(),
                            target.backbone.state_dict().values()):
        assert torch.equal(p, q), name
    # A bare backbone state dict (e.g. from pretraining) loads too.
    other = build_regressor('tiny', ['c'])
    load_backbone_weights(other, source.backbone.state_dict())
    assert torch.equal(other.backbone.state_dict()['embed_tokens.weight'],
                       source.backbone.state_dict()['embed_tokens.weight'])


def test_backbone_weights_of_another_preset_are_rejected():
    small = build_regressor('small', ['a'])
    with pytest.raises(ValueError, match='shape mismatch'):
        load_backbone_weights(build_regressor('tiny', ['a']),
                              {'model': small.state_dict()})
    with pytest.raises(ValueError, match='no backbone parameter'):
        load_backbone_weights(small, {'model': {'x': torch.zeros(1)}})


def test_backbone_weights_load_from_an_official_checkpoint(tmp_path):
    torch.manual_seed(0)
    official = UniMol2.from_preset('tiny')  # with lm_head, as pretrained
    save_official(official, tmp_path / 'checkpoint.pt')
    target = build_regressor('tiny', ['gap'])
    load_backbone_weights(target, str(tmp_path / 'checkpoint.pt'))
    for key, value in target.backbone.state_dict().items():
        assert torch.equal(value, official.state_dict()[key]), key
    partial = {k: v for k, v in official.state_dict().items()
               if not k.startswith('encoder.layers.3.')}
    with pytest.raises(ValueError, match='lacks backbone tensors'):
        load_backbone_weights(target, {'model': partial})
