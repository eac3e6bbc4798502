"""Reading run configuration files: ``.json``, ``.toml`` or (with PyYAML
installed) ``.yaml``."""
import json
import os
from pathlib import Path
from typing import Any, Dict, Union

__all__ = ['read_config_file']


def read_config_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The table of a config file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown format or a file that does not parse, naming
            the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'config file {path} not found')
    suffix = path.suffix.lower()
    text = path.read_text()
    try:
        if suffix == '.json':
            raw = json.loads(text)
        elif suffix == '.toml':
            import tomllib
            raw = tomllib.loads(text)
        elif suffix in ('.yaml', '.yml'):
            try:
                import yaml
            except ImportError:
                raise ImportError(f'reading {path} needs PyYAML; use a .json '
                                  f'or .toml file instead') from None
            raw = yaml.safe_load(text) or {}
        else:
            raise ValueError(f'{path}: unknown config format {suffix!r} (use '
                             f'.json, .toml or .yaml)')
    except (json.JSONDecodeError, ValueError) as e:
        if 'unknown config format' in str(e):
            raise
        raise ValueError(f'{path} does not parse: {e}') from None
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: expected a table at the top level')
    return raw
