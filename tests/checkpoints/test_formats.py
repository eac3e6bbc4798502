"""Every checkpoint format loads as a backbone (architecture from the
checkpoint), task checkpoints as task models; bad files are clear errors."""
import pytest
import torch
from torch_geometric.data import Batch

from conftest import read_moses
from pyg_unimol2.checkpoints import (CheckpointError, checkpoint_format,
                                     init_from_checkpoint, load_backbone,
                                     load_task_model, pretrain_state,
                                     save_task_model)
from pyg_unimol2.data import featurize_smiles
from pyg_unimol2.models import UniMol2, save_official
from pyg_unimol2.models.multitask import UniMol2MultiTask
from pyg_unimol2.tasks import Task
from pyg_unimol2.train.finetune import FinetuneConfig, build_model


@pytest.fixture(scope='module')
def batch():
    return Batch.from_data_list(featurize_smiles(read_moses(6), workers=1,
                                                 progress=False).data)


def _same_backbone(a: UniMol2, b: UniMol2) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_every_format_gives_the_backbone(tmp_path, batch):
    torch.manual_seed(0)
    pretrained = UniMol2.from_preset('small')  # with lm_head
    torch.save(pretrain_state(pretrained, optimizer={}, step=3,
                              world_size=1), tmp_path / 'pre.pt')
    save_official(pretrained, tmp_path / 'unicore.pt')
    save_official(pretrained, tmp_path / 'ut.pt', layout='unimol_tools')
    tasks = UniMol2MultiTask(UniMol2.from_preset('tiny', lm_head=False),
                             {'d': [Task('a'), Task('b', 'classification')]})
    save_task_model(tasks, tmp_path / 'best.pt')
    expected = {'pre.pt': ('pretrain', pretrained), 'unicore.pt':
                ('official', pretrained), 'ut.pt': ('official', pretrained),
                'best.pt': ('tasks', tasks.backbone)}
    for name, (kind, source) in expected.items():
        checkpoint = torch.load(tmp_path / name, weights_only=False)
        assert checkpoint_format(checkpoint) == kind, name
        backbone = load_backbone(tmp_path / name)
        assert backbone.lm_head is None
        assert backbone.config.embed_dim == source.config.embed_dim
        reference = {k: v for k, v in source.state_dict().items()
                     if not k.startswith('lm_head')}
        got = backbone.state_dict()
        assert got.keys() == reference.keys(), name
        for key in reference:
            assert torch.equal(got[key], reference[key]), (name, key)
        with torch.no_grad():
            backbone.eval(), source.eval()
            torch.testing.assert_close(
                backbone(batch, compute_pos=False).cls,
                source(batch, compute_pos=False).cls)


def test_task_model_round_trip_and_legacy_regressor(tmp_path, batch):
    torch.manual_seed(0)
    model = UniMol2MultiTask(UniMol2.from_preset('tiny', lm_head=False),
                             {'b3db': [Task('BBB', 'classification'),
                                       Task('logBB')]}).eval()
    model.head('b3db', 'logBB').set_stats(torch.tensor([-0.5]),
                                         torch.tensor([0.8]))
    save_task_model(model, tmp_path / 'best.pt')
    loaded = load_task_model(tmp_path / 'best.pt').eval()
    for name, value in model.predict(batch, 'b3db').items():
        torch.testing.assert_close(loaded.predict(batch, 'b3db')[name], value)
    p = loaded.predict(batch, 'b3db')['BBB']
    assert ((p > 0) & (p < 1)).all()  # probabilities

    # A pyg-unimol2 0.1 regressor checkpoint: one head over all targets.
    head = model.head('b3db', 'logBB').head
    legacy = dict(model_config=model.backbone.config.to_dict(),
                  target_names=['x', 'y'], pooler_dropout=0.0, model=dict(
                      **{f'backbone.{k}': v for k, v in
                         model.backbone.state_dict().items()},
                      **{'head.dense.weight': head.dense.weight,
                         'head.dense.bias': head.dense.bias,
                         'head.out_proj.weight': head.out_proj.weight.repeat(
                             2, 1),
                         'head.out_proj.bias': head.out_proj.bias.repeat(2),
                         'mean': torch.tensor([1.0, 2.0]),
                         'std': torch.tensor([3.0, 4.0])}))
    old = load_task_model(legacy).eval()
    raw = model(batch, 'b3db')['logBB']
    out = old.predict(batch)
    torch.testing.assert_close(out['x'], raw * 3 + 1)
    torch.testing.assert_close(out['y'], raw * 4 + 2)


def test_predict_needs_task_heads(tmp_path):
    torch.save(pretrain_state(UniMol2.from_preset('tiny'), world_size=1),
               tmp_path / 'pre.pt')
    with pytest.raises(CheckpointError, match='without task heads'):
        load_task_model(tmp_path / 'pre.pt')


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        load_backbone(tmp_path / 'nope.pt')
    (tmp_path / 'bad.pt').write_bytes(b'\x00garbage' * 100)
    with pytest.raises(CheckpointError, match='bad.pt cannot be read'):
        load_backbone(tmp_path / 'bad.pt')
    torch.save({'model': {'fc.weight': torch.zeros(2, 2)}}, tmp_path / 'x.pt')
    with pytest.raises(KeyError, match='not a Uni-Mol2 state dict'):
        load_backbone(tmp_path / 'x.pt')


class _Items(list):
    def __getitem__(self, index):
        if isinstance(index, torch.Tensor):
            return _Items(list.__getitem__(self, i) for i in index.tolist())
        return list.__getitem__(self, index)


def test_pretrained_architecture_wins_and_matching_heads_are_kept(
        tmp_path, batch):
    """``--pretrained`` of another size than ``--preset`` takes the
    checkpoint's architecture; heads of same-named tasks keep their weights
    and statistics (predictions at step 0 are the pretrained model's)."""
    from pyg_unimol2.train.finetune import TaskData
    torch.manual_seed(0)
    source = UniMol2MultiTask(UniMol2.from_preset('small', lm_head=False),
                              {'old': [Task('logBB'), Task('other')]}).eval()
    source.head('old', 'logBB').set_stats(torch.tensor([2.0]),
                                          torch.tensor([5.0]))
    save_task_model(source, tmp_path / 'best.pt')
    items = _Items(batch.to_data_list())
    for i, d in enumerate(items):
        d.y = torch.tensor([[float(i), float(i % 2)]])
    data = TaskData('new', items, dict(train=torch.arange(6).numpy()),
                    [Task('logBB'), Task('BBB', 'classification')])
    config = FinetuneConfig(preset='tiny', pretrained=str(tmp_path / 'best.pt'))
    model = build_model([data], config).eval()
    assert model.backbone.config.name == 'small'
    torch.testing.assert_close(model.predict(batch, 'new')['logBB'],
                               source.predict(batch, 'old')['logBB'])
    fresh = build_model([data], FinetuneConfig(
        preset='tiny', pretrained=str(tmp_path / 'best.pt'),
        keep_heads=False))
    assert float(fresh.head('new', 'logBB').mean) == pytest.approx(2.5)
    with pytest.raises(CheckpointError, match='another architecture'):
        init_from_checkpoint(UniMol2MultiTask(
            UniMol2.from_preset('tiny', lm_head=False),
            {'new': [Task('logBB')]}), tmp_path / 'best.pt')
