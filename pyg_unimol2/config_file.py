"""Reading run configuration files: ``.json``, ``.toml`` or (with PyYAML
installed) ``.yaml``."""
import json
import os
from pathlib import Path
from typing import Any, Dict, Union

from .errors import ConfigError, MissingFileError

__all__ = ['read_config_file']


def read_config_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The table of a config file.

    Raises:
        MissingFileError: no such file (a ``FileNotFoundError``).
        ConfigError: an unknown format or a file that does not parse, naming
            the file (a ``ValueError``).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f'config file {path} is a directory (give a '
                          f'.toml, .json or .yaml file)')
    if not path.is_file():
        raise MissingFileError(f'config file {path}: no such file (check '
                               f'the path given to --config)')
    suffix = path.suffix.lower()
    if suffix not in ('.json', '.toml', '.yaml', '.yml'):
        raise ConfigError(f'config file {path}: unknown config format '
                          f'{suffix!r} (use .json, .toml or .yaml)')
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f'config file {path} cannot be read ({e})') \
            from None
    try:
        if suffix == '.json':
            raw = json.loads(text)
        elif suffix == '.toml':
            import tomllib
            raw = tomllib.loads(text)
        else:
            try:
                import yaml
            except ImportError:
                raise ConfigError(f'reading {path} needs PyYAML; use a .json '
                                  f'or .toml file instead') from None
            try:
                raw = yaml.safe_load(text) or {}
            except yaml.YAMLError as e:
                raise ValueError(str(e)) from None
    except ConfigError:
        raise
    except ValueError as e:  # json.JSONDecodeError, tomllib.TOMLDecodeError
        raise ConfigError(f'config file {path} does not parse: {e}') \
            from None
    if not isinstance(raw, dict):
        raise ConfigError(f'config file {path}: expected a table at the top '
                          f'level')
    return raw
