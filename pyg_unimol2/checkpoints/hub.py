r"""The official Uni-Mol2 weights by name, from the Hugging Face Hub.

The official checkpoints lie in the Hub repository :data:`REPO_ID` as
``modelzoo/{size}/checkpoint.pt`` for each of :data:`SIZES` (the files
that ``unimol_tools`` downloads). A *weights name* is one of those sizes
(``'84M'``, case-insensitive) or ``OWNER/REPO/PATH`` of any file of a Hub
model repository (``'dptech/Uni-Mol2/modelzoo/84M/checkpoint.pt'``).
Wherever a checkpoint path is accepted, ``hub:NAME`` stands for the
weights of that name (:func:`~pyg_unimol2.checkpoints.read_checkpoint`).

The names of the small pretrained backbones shipped with the package
(:mod:`.bundled`, e.g. ``'small-moses'``) resolve to their files, offline.

Where an official file comes from:

* ``UNIMOL2_WEIGHT_DIR`` set: a local mirror of :data:`REPO_ID`, the file
  at the same path as in the repository (``DIR/modelzoo/84M/checkpoint.pt``,
  what ``hf download dptech/Uni-Mol2 modelzoo/84M/checkpoint.pt
  --local-dir DIR`` writes, and what ``unimol_tools``' weight directory
  holds). A file there is used as it is, with no network access; a missing
  one is downloaded into the directory. Names of other repositories ignore
  it.
* otherwise the Hugging Face cache (``$HF_HOME/hub``, or ``HF_HUB_CACHE``),
  through :func:`huggingface_hub.hf_hub_download`: downloaded once, then
  read from the cache; with ``HF_HUB_OFFLINE=1`` only the cache is used.
"""
import os
from pathlib import Path
from typing import Tuple

from ..errors import ConfigError, MissingFileError
from .bundled import bundled_file, bundled_weights

__all__ = ['REPO_ID', 'SIZES', 'HUB_PREFIX', 'WEIGHT_DIR_ENV', 'hub_file',
           'download_weights']

#: The Hub repository of the official Uni-Mol2 checkpoints.
REPO_ID = 'dptech/Uni-Mol2'
#: The sizes of the official checkpoints, ``modelzoo/{size}/checkpoint.pt``.
SIZES = ('84M', '164M', '310M', '570M', '1.1B')
#: Prefix of a checkpoint source that names Hub weights: ``hub:84M``.
HUB_PREFIX = 'hub:'
#: Environment variable of a local mirror of :data:`REPO_ID`.
WEIGHT_DIR_ENV = 'UNIMOL2_WEIGHT_DIR'


def hub_file(name: str) -> Tuple[str, str]:
    r"""``(repo_id, filename)`` of the weights name :obj:`name`: a size of
    :data:`SIZES` or ``OWNER/REPO/PATH``.

    Raises:
        ConfigError: neither, listing the known sizes.
    """
    sizes = {size.lower(): size for size in SIZES}
    if name.lower() in sizes:
        return REPO_ID, f'modelzoo/{sizes[name.lower()]}/checkpoint.pt'
    parts = name.split('/', 2)
    if len(parts) == 3 and all(parts):
        return f'{parts[0]}/{parts[1]}', parts[2]
    shipped = ', '.join(bundled_weights()) or 'none'
    raise ConfigError(f"unknown official Uni-Mol2 weights '{name}' (known "
                      f"sizes: {', '.join(SIZES)}; shipped with the package: "
                      f"{shipped}; or OWNER/REPO/FILE of a "
                      f"Hugging Face repository, e.g. "
                      f"{REPO_ID}/modelzoo/84M/checkpoint.pt)")


def download_weights(name: str) -> Path:
    r"""The local path of the weights :obj:`name` (see :func:`hub_file`):
    from ``UNIMOL2_WEIGHT_DIR`` or the Hugging Face cache, downloaded
    there if missing (see the module docstring).

    Raises:
        ConfigError: an unknown name.
        MissingFileError: the file is not on disk and cannot be downloaded
            (offline, no network, or no such file in the repository); the
            message names repository and file and how to get it.
    """
    shipped = bundled_file(name)
    if shipped is not None:
        if not shipped.is_file():
            raise MissingFileError(f'the shipped weights {name} ({shipped}) '
                                   f'are missing: reinstall pyg_unimol2')
        return shipped
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import (HfHubHTTPError, HFValidationError,
                                       LocalEntryNotFoundError)

    repo_id, filename = hub_file(name)
    local_dir = os.environ.get(WEIGHT_DIR_ENV) if repo_id == REPO_ID else None
    if local_dir and (Path(local_dir) / filename).is_file():
        return Path(local_dir) / filename
    where = (f'{WEIGHT_DIR_ENV}={local_dir}' if local_dir else
             f'the Hugging Face cache {constants.HF_HUB_CACHE}')
    try:
        return Path(hf_hub_download(repo_id, filename, local_dir=local_dir))
    except LocalEntryNotFoundError:
        why = ('HF_HUB_OFFLINE is set' if constants.HF_HUB_OFFLINE else
               'the Hub cannot be reached')
        raise MissingFileError(
            f"official weights {filename} of the Hugging Face repository "
            f"{repo_id} are not in {where} and cannot be downloaded "
            f"({why}): on a machine with network run 'hf download "
            f"{repo_id} {filename} --local-dir DIR', copy DIR here and set "
            f"{WEIGHT_DIR_ENV}=DIR (or give the path of the .pt file)"
        ) from None
    except (HfHubHTTPError, HFValidationError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MissingFileError(
            f'cannot download {filename} from the Hugging Face repository '
            f'{repo_id} ({reason}); check the name (official sizes: '
            f"{', '.join(SIZES)}) or give the path of a .pt file") from None
