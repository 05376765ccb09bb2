"""Safe persistence: safetensors weights + JSON config, atomic writes, no pickle."""

from mmguard.io.checkpoint import (
    atomic_write,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
    write_json,
)

__all__ = ["atomic_write", "atomic_write_text", "load_checkpoint", "save_checkpoint", "write_json"]
