"""``unimol2 embed``: representations of real molecules written to HDF5."""
import csv

import h5py
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from conftest import read_moses
from pyg_unimol2.cli import main
from pyg_unimol2.data import from_smiles, to_dense
from pyg_unimol2.models import UniMol2, save_official
from pyg_unimol2.checkpoints import pretrain_state, save_task_model
from pyg_unimol2.models.multitask import build_multitask
from pyg_unimol2.tasks import Task
from pyg_unimol2.train.embed import load_encoder

BAD = {3: 'C1CC', 11: 'not_a_smiles'}  # line index -> SMILES


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return UniMol2.from_preset('tiny').eval()


def test_embed_cli(model, tmp_path):
    smiles = read_moses(20)
    for index, bad in BAD.items():
        smiles.insert(index, bad)
    (tmp_path / 'mols.smi').write_text('\n'.join(smiles) + '\n')
    save_official(model, tmp_path / 'official.pt')
    out = tmp_path / 'emb.h5'
    main(['embed', '--checkpoint', str(tmp_path / 'official.pt'), '--smiles',
          str(tmp_path / 'mols.smi'), '--out', str(out), '--workers', '1',
          '--batch-size', '7'])

    good = [i for i in range(len(smiles)) if i not in BAD]
    with h5py.File(out) as f:
        assert f['index'][:].tolist() == good
        assert [s.decode() for s in f['smiles'][:]] == [smiles[i]
                                                        for i in good]
        offsets = f['atom_offsets'][:]
        assert len(offsets) == len(good) + 1 and offsets[-1] == len(f['z'])
        assert f.attrs['num_failures'] == 2
        for row in (0, 9, len(good) - 1):  # spot checks against the model
            data = from_smiles(smiles[good[row]], seed=0)
            with torch.no_grad():
                ref = model(to_dense(Batch.from_data_list([data])),
                            compute_pos=False)
            atoms = slice(offsets[row], offsets[row + 1])
            np.testing.assert_allclose(f['cls'][row], ref.cls[0].numpy(),
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(f['atoms'][atoms], ref.atoms[0].numpy(),
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(f['z'][atoms], data.z.numpy())
            np.testing.assert_array_equal(f['pos'][atoms], data.pos.numpy())
    with open(out.with_suffix('.failures.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [(int(r['index']), r['smiles']) for r in rows] == sorted(
        BAD.items())


def test_load_encoder_from_finetuning_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_multitask('tiny', {'d': [Task('gap')]})
    save_task_model(model, tmp_path / 'best.pt')
    encoder = load_encoder(tmp_path / 'best.pt')
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value), key


def test_embed_cli_on_a_pretraining_checkpoint(tmp_path):
    """``unimol2 embed --checkpoint <pretraining step_*.pt>`` (it crashed
    with KeyError: 'target_names')."""
    torch.manual_seed(1)
    model = UniMol2.from_preset('tiny').eval()
    torch.save(pretrain_state(model, optimizer={}, step=5, epoch=0,
                              position=0, skipped=0, world_size=1),
               tmp_path / 'step_00000005.pt')
    smiles = read_moses(5)
    (tmp_path / 'mols.smi').write_text('\n'.join(smiles) + '\n')
    out = tmp_path / 'emb.h5'
    main(['embed', '--checkpoint', str(tmp_path / 'step_00000005.pt'),
          '--smiles', str(tmp_path / 'mols.smi'), '--out', str(out),
          '--workers', '1'])
    with h5py.File(out) as f:
        data = from_smiles(smiles[2], seed=0)
        with torch.no_grad():
            ref = model(to_dense(Batch.from_data_list([data])),
                        compute_pos=False)
        np.testing.assert_allclose(f['cls'][2], ref.cls[0].numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_load_encoder_rejects_foreign_checkpoint(tmp_path):
    torch.save({'model': {'fc.weight': torch.zeros(2, 2)}}, tmp_path / 'x.pt')
    with pytest.raises(KeyError, match='not a Uni-Mol2 state dict'):
        load_encoder(tmp_path / 'x.pt')
