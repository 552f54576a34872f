"""The example schema every speech_jax corpus shares (DESIGN.md, Data).

Every feature decodes with NumPy, so `tfds.data_source` reads it without TensorFlow.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

FILE_FORMAT = "array_record"


def features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        # Raw bytes, not an int64 list: 2 bytes a sample instead of up to 10.
        "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding="bytes"),
        "sample_rate": tfds.features.Scalar(dtype=np.int32),
        "text": tfds.features.Text(),
        "speaker": tfds.features.Text(),
        "language": tfds.features.Text(),
        "utt_id": tfds.features.Text(),
    })


def to_int16(audio: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] as the stored int16 (rounded, clipped)."""
    return np.clip(np.round(np.asarray(audio, np.float32) * 32768.0), -32768, 32767).astype(np.int16)
