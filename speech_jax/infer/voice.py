"""A voice: a speaker condition vector v [spk_dim] saved without the recording it came from.

PVC (a vector fine-tuned on one speaker) and T2V (a vector predicted from a description) both
produce a v; synthesis puts spk_proj(v) in the AR's speaker slot and v into flow matching.
A voice file is an .npz holding `v` (float32 [spk_dim]) and `metadata` (a JSON string: how it was
made, the AR workdir/step it belongs to, spk_dim).
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np


@dataclasses.dataclass
class Voice:
    v: np.ndarray                                   # float32 [spk_dim]
    metadata: dict = dataclasses.field(default_factory=dict)

    @property
    def spk_dim(self) -> int:
        return int(self.v.shape[0])


def save_voice(path: str, v, **metadata) -> str:
    v = np.asarray(v, np.float32)
    if v.ndim != 1 or not np.all(np.isfinite(v)):
        raise ValueError(f"a voice is a finite vector [spk_dim], got shape {v.shape}")
    metadata = dict(metadata, spk_dim=int(v.shape[0]))
    if not path.endswith(".npz"):
        path += ".npz"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, v=v, metadata=np.array(json.dumps(metadata)))
    return path


def load_voice(path: str, spk_dim: int | None = None) -> Voice:
    """Loads a voice file; with `spk_dim`, checks it against the model that will use it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            v = np.asarray(f["v"], np.float32)
            metadata = json.loads(str(f["metadata"]))
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path} is not a voice file (an .npz with `v` and `metadata`): {e}") from e
    if v.ndim != 1 or metadata.get("spk_dim") != v.shape[0]:
        raise ValueError(f"{path}: v has shape {v.shape}, metadata says spk_dim={metadata.get('spk_dim')}")
    if spk_dim is not None and v.shape[0] != spk_dim:
        raise ValueError(f"{path}: the voice has spk_dim={v.shape[0]} but the model's speaker encoder gives {spk_dim}; "
                         f"it was made for {metadata.get('ar_workdir', 'another model')}")
    return Voice(v, metadata)
