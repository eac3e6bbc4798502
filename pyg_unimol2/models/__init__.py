from .energy_force import FORCE_MODES, EnergyForceHeads, EnergyForceModel
from .multitask import (TaskHead, TaskModel, UniMol2MultiTask,
                        build_multitask)
from .official import (UNIMOL_TOOLS_HEAD, OfficialLoadReport, load_official,
                       official_config, read_official_state_dict,
                       save_official, to_official_state_dict)
from .unimol2 import (MASK_IDX, PADDING_IDX, PRESETS, UniMol2, UniMol2Config,
                      UniMol2Output)

__all__ = [
    'UniMol2', 'UniMol2Config', 'UniMol2Output', 'PRESETS', 'PADDING_IDX',
    'MASK_IDX', 'load_official', 'official_config', 'read_official_state_dict',
    'save_official', 'to_official_state_dict', 'OfficialLoadReport',
    'UNIMOL_TOOLS_HEAD', 'TaskModel', 'TaskHead', 'UniMol2MultiTask',
    'build_multitask', 'EnergyForceModel', 'EnergyForceHeads', 'FORCE_MODES'
]
