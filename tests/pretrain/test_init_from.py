"""Masked-atom pretraining that starts from a checkpoint (``init_from``):
a pretraining checkpoint goes on with its weights and masked-atom head, a
backbone without that head gets a fresh one, and the run trains from
there."""
import torch

from pyg_unimol2.checkpoints import (atomic_save, list_checkpoints,
                                     pretrain_state, read_checkpoint)
from pyg_unimol2.models import UniMol2
from pyg_unimol2.pretrain import PretrainConfig
from pyg_unimol2.pretrain.denoising import continued_model
from pyg_unimol2.pretrain.trainer import pretrain



def test_continued_model_keeps_weights_and_lm_head(tmp_path):
    torch.manual_seed(1)
    source = UniMol2.from_preset('tiny')
    atomic_save(pretrain_state(source), tmp_path / 'pre.pt')
    model = continued_model(str(tmp_path / 'pre.pt'))
    for (k, v), (k2, v2) in zip(source.state_dict().items(),
                                model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_continued_model_adds_a_fresh_lm_head(tmp_path):
    source = UniMol2.from_preset('tiny', lm_head=False)
    atomic_save(pretrain_state(source), tmp_path / 'bare.pt')
    model = continued_model(str(tmp_path / 'bare.pt'))
    assert model.lm_head is not None
    for k, v in source.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_pretraining_goes_on_from_a_checkpoint(store, tmp_path):
    first = PretrainConfig(store=str(store), out=str(tmp_path / 'a'),
                           preset='tiny', max_steps=2, warmup_steps=1,
                           lr=5e-4, max_tokens=160, valid_fraction=0.1,
                           valid_every=2, ckpt_every=2, progress=False,
                           threads=1)
    pretrain(first)
    ckpt = list_checkpoints(tmp_path / 'a' / 'checkpoints')[-1]
    start = read_checkpoint(ckpt)['model']
    # a different seed and preset: the checkpoint's architecture and
    # weights win over both
    second = PretrainConfig(**dict(vars(first), out=str(tmp_path / 'b'),
                                   seed=7, preset='small', max_steps=1,
                                   init_from=str(ckpt)))
    result = pretrain(second)
    assert torch.isfinite(torch.tensor(result['loss']))
    after = read_checkpoint(list_checkpoints(tmp_path / 'b' /
                                             'checkpoints')[-1])
    assert after['model_config']['name'] == 'tiny'
    assert after['model'].keys() == start.keys()
    # one step of training from the checkpoint: close to it, not equal
    moved = [k for k in start if not torch.equal(start[k], after['model'][k])]
    assert moved
    delta = max(float((start[k] - after['model'][k]).abs().max())
                for k in moved)
    assert delta < 1e-2
