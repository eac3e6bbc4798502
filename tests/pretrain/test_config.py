import argparse
import json

import pytest

from pyg_unimol2.pretrain.cli import add_parser, build_parser
from pyg_unimol2.pretrain.config import (PretrainConfig, config_from_args,
                                         load_config_file)
from pyg_unimol2.pretrain.objectives import ObjectiveConfig


def test_defaults_are_the_paper():
    c = PretrainConfig(store='s')
    assert (c.beta1, c.beta2, c.weight_decay, c.clip_norm, c.lr) == \
        (0.9, 0.99, 1e-4, 1.0, 1e-4)
    assert c.warmup_steps == 100_000 and c.scaffold_tau == 0.005
    o = c.objective
    assert (o.mask_prob, o.noise_type, o.noise, o.noise_fraction,
            o.drop_feat_prob, o.use_2d_prob) == (0.15, 'normal', 0.2, 1.0,
                                                 0.5, 0.0)
    assert (o.atom_weight, o.coord_weight, o.dist_weight) == (1, 1, 1)


def test_toml_file_then_flags(tmp_path):
    path = tmp_path / 'run.toml'
    path.write_text('store = "a"\npreset = "tiny"\nmax_steps = 50\n'
                    'mask_prob = 0.2\n[objective]\nnoise_type = "uniform"\n')
    args = build_parser().parse_args(
        ['--config', str(path), '--max-steps', '7', '--noise', '1.0',
         '--no-progress', '--scaffold-tau', '0'])
    c = config_from_args(args)
    assert (c.store, c.preset, c.max_steps, c.progress, c.scaffold_tau) == \
        ('a', 'tiny', 7, False, 0.0)
    assert c.objective == ObjectiveConfig(mask_prob=0.2, noise_type='uniform',
                                          noise=1.0)


def test_json_file_and_errors(tmp_path):
    path = tmp_path / 'run.json'
    path.write_text(json.dumps({'store': 'b', 'objective':
                                {'drop_feat_prob': 0.0}}))
    assert load_config_file(path) == {'store': 'b', 'drop_feat_prob': 0.0}
    path.write_text(json.dumps({'store': 'b', 'lr_max': 1}))
    with pytest.raises(ValueError, match='lr_max'):
        load_config_file(path)
    with pytest.raises(ValueError, match='store'):
        config_from_args(build_parser().parse_args([]))
    with pytest.raises(ValueError, match='precision'):
        PretrainConfig(store='s', precision='fp8')


def test_subcommand_parser():
    parser = argparse.ArgumentParser(prog='unimol2')
    sub = parser.add_subparsers(dest='command', required=True)
    add_parser(sub)
    args = parser.parse_args(['pretrain', '--store', 's', '--lr', '3e-4'])
    assert args.command == 'pretrain' and args.lr == 3e-4
    assert args.func.__name__ == 'main'
