from .unimol2 import (MASK_IDX, PADDING_IDX, PRESETS, UniMol2, UniMol2Config,
                      UniMol2Output)

__all__ = [
    'UniMol2', 'UniMol2Config', 'UniMol2Output', 'PRESETS', 'PADDING_IDX',
    'MASK_IDX'
]
