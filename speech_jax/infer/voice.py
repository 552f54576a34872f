"""A voice: a speaker condition vector v [spk_dim] saved without the recording it came from.

PVC (a vector fine-tuned on one speaker) and T2V (a vector predicted from a description) both
produce a v; synthesis puts spk_proj(v) in the AR's speaker slot and v into flow matching, or `v_fm`
there when the voice has one: PVC fits the AR's vector only, because flow matching renders a vector away
from the speaker encoder's outputs unvoiced (README, "Professional voice cloning").
A voice file is an .npz holding `v` (float32 [spk_dim]), optionally `v_fm` (the same shape) and `metadata`
(a JSON string: how it was made, the AR workdir/step it belongs to, spk_dim).
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
    v_fm: np.ndarray | None = None                  # flow matching's vector when it is not v

    @property
    def flow_matching_vector(self) -> np.ndarray:
        return self.v if self.v_fm is None else self.v_fm

    @property
    def spk_dim(self) -> int:
        return int(self.v.shape[0])


def _checked(v, name: str = "v") -> np.ndarray:
    v = np.asarray(v, np.float32)
    if v.ndim != 1 or not np.all(np.isfinite(v)):
        raise ValueError(f"a voice's {name} is a finite vector [spk_dim], got shape {v.shape}")
    return v


def save_voice(path: str, v, v_fm=None, **metadata) -> str:
    v = _checked(v)
    arrays = {} if v_fm is None else {"v_fm": _checked(v_fm, "v_fm")}
    if v_fm is not None and arrays["v_fm"].shape != v.shape:
        raise ValueError(f"v_fm has shape {arrays['v_fm'].shape}, v {v.shape}")
    metadata = dict(metadata, spk_dim=int(v.shape[0]))
    if not path.endswith(".npz"):
        path += ".npz"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, v=v, metadata=np.array(json.dumps(metadata)), **arrays)
    return path


def load_voice(path: str, spk_dim: int | None = None) -> Voice:
    """Loads a voice file; with `spk_dim`, checks it against the model that will use it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            v = np.asarray(f["v"], np.float32)
            v_fm = np.asarray(f["v_fm"], np.float32) if "v_fm" in f.files else None
            metadata = json.loads(str(f["metadata"]))
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path} is not a voice file (an .npz with `v` and `metadata`): {e}") from e
    if v.ndim != 1 or metadata.get("spk_dim") != v.shape[0] or (v_fm is not None and v_fm.shape != v.shape):
        raise ValueError(f"{path}: v has shape {v.shape}" + ("" if v_fm is None else f", v_fm {v_fm.shape}")
                         + f", metadata says spk_dim={metadata.get('spk_dim')}")
    if spk_dim is not None and v.shape[0] != spk_dim:
        raise ValueError(f"{path}: the voice has spk_dim={v.shape[0]} but the model's speaker encoder gives {spk_dim}; "
                         f"it was made for {metadata.get('ar_workdir', 'another model')}")
    return Voice(v, metadata, v_fm)
