"""Runs the official Uni-Mol2 implementation (unimol_tools) on molecules
given by the equivalence tests. Executed with the interpreter of the
isolated reference environment (``.venv-ref``, see the Makefile)::

    .venv-ref/bin/python tests/reference/unimol_tools_outputs.py REQUEST OUT

``REQUEST`` is a pickle with ``mols`` (RDKit binaries with one conformer),
``arch`` (a unimol_tools size such as ``'84m'``, or a dict of
``molecule_architecture`` fields), ``init`` (``'default'`` or
``'scrambled'``: every tensor redrawn so that no path is near zero),
``seed``, ``output_dim``, ``dense_head`` (use the dense + tanh
classification head instead of the linear one) and ``state_path`` (where the official random
weights are written). ``OUT`` receives, per molecule, the unimol_tools
input features and the model outputs for that molecule run alone (batch of
one, eval mode, fp32): CLS, atom and pair representations, predicted
coordinates and the classification-head output.

A request with ``shapes_for`` (``{name: arch}``) instead gets
``{name: {key: shape}}``, the official state dict layout of each
architecture, built on the meta device (no memory, no weights).
"""
import pickle
import sys
import tempfile

import numpy as np
import torch
from rdkit import Chem
from unimol_tools.data.conformer import mol2unimolv2
from unimol_tools.models import unimolv2

UT_UNREACHABLE_SPD = 511
TRAINING_UNREACHABLE_SPD = 510
OFFICIAL_ARCHITECTURE = unimolv2.molecule_architecture


def build_model(arch, init: str, seed: int, output_dim: int,
                dense_head: bool = False):
    size = arch if isinstance(arch, str) else '84m'
    unimolv2.molecule_architecture = OFFICIAL_ARCHITECTURE
    if not isinstance(arch, str):  # a custom size: the 84M args, updated
        def patched(model_size='84m'):
            args = OFFICIAL_ARCHITECTURE('84m')
            args.update(arch)
            return args
        unimolv2.molecule_architecture = patched
    torch.manual_seed(seed)
    with tempfile.NamedTemporaryFile(suffix='.pt') as empty:
        torch.save({}, empty.name)  # random weights: nothing to load
        model = unimolv2.UniMolV2Model(output_dim=output_dim, model_size=size,
                                       pretrained_model_path=empty.name)
    if dense_head:  # the older dense + tanh head unimol_tools falls back to
        dim = model.args.encoder_embed_dim
        model.classification_head = unimolv2.ClassificationHead(
            input_dim=dim, inner_dim=dim, num_classes=output_dim,
            activation_fn='tanh', pooler_dropout=0.0)
    if init == 'scrambled':
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                scale = p.shape[-1] ** -0.5 if p.dim() > 1 else 0.2
                offset = 1.0 if name.endswith('norm.weight') else 0.0
                p.copy_(offset + scale * torch.randn(p.shape,
                                                     generator=generator))
    return model.eval()


def run_alone(model, feat: dict) -> dict:
    """Official outputs of one molecule (batch of one, no padding)."""
    captured = {}
    hooks = [
        model.encoder.register_forward_hook(
            lambda m, i, o: captured.update(encoder=o)),
        model.movement_pred_head.register_forward_hook(
            lambda m, i, o: captured.update(movement=o)),
    ]
    batch, _ = model.batch_collate_fn([(feat, 0.0)])
    with torch.no_grad():
        logits = model(**batch)
    for hook in hooks:
        hook.remove()
    x, pair = captured['encoder']
    return {
        'cls': x[0, 0].numpy(),
        'atoms': x[0, 1:].numpy(),
        'pair': pair[0].numpy(),
        'pos_pred': (batch['src_coord'] + captured['movement'])[0].numpy(),
        'logits': logits[0].numpy(),
    }


def state_shapes(arch) -> dict:
    with torch.device('meta'):
        model = build_model(arch, 'default', 0, output_dim=1)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def main(request_path: str, out_path: str) -> None:
    torch.set_num_threads(1)
    with open(request_path, 'rb') as f:
        request = pickle.load(f)
    if 'shapes_for' in request:
        with open(out_path, 'wb') as f:
            pickle.dump({name: state_shapes(arch)
                         for name, arch in request['shapes_for'].items()}, f)
        return
    model = build_model(request['arch'], request['init'], request['seed'],
                        request['output_dim'], request['dense_head'])
    torch.save({'model': model.state_dict()}, request['state_path'])
    results = []
    for binary in request['mols']:
        feat = mol2unimolv2(Chem.Mol(binary), max_atoms=10**6)
        feat = {k: np.asarray(v) for k, v in feat.items()}
        # Pairs in different fragments: unimol_tools codes them 511, the
        # official training code (and pyg_unimol2) 510. The model is run
        # with the training code's value, so that both sides see the same
        # input; the tests check that this is the only feature difference.
        model_feat = dict(feat)
        spd = feat['shortest_path'].copy()
        spd[spd == UT_UNREACHABLE_SPD] = TRAINING_UNREACHABLE_SPD
        model_feat['shortest_path'] = spd
        results.append({'features': feat, **run_alone(model, model_feat)})
    with open(out_path, 'wb') as f:
        pickle.dump(results, f)


if __name__ == '__main__':
    main(*sys.argv[1:])
