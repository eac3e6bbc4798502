"""Checkpoints: every format read and written in one place
(:mod:`.formats`) and the atomic background writer of training runs
(:mod:`.writer`)."""
from .formats import (CheckpointError, atomic_save, checkpoint_format,
                      init_from_checkpoint, keep_matching_heads,
                      load_backbone, load_energy_force_model,
                      load_task_model,
                      pretrain_state, read_checkpoint, resume_checkpoint,
                      save_task_model,
                      task_model_state)
from .writer import (CheckpointWriter, cpu_snapshot, latest_checkpoint,
                     list_checkpoints)

__all__ = ['CheckpointError', 'read_checkpoint', 'resume_checkpoint', 'checkpoint_format',
           'load_backbone', 'load_energy_force_model', 'load_task_model', 'task_model_state',
           'save_task_model', 'pretrain_state', 'init_from_checkpoint',
           'keep_matching_heads',
           'atomic_save', 'CheckpointWriter', 'cpu_snapshot',
           'latest_checkpoint', 'list_checkpoints']
