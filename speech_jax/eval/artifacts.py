"""Evaluation artefacts written next to a run: mel-spectrogram comparisons, wavs, loss curves.

Figures use matplotlib's object API (`Figure` rendered by the Agg canvas), never pyplot, so nothing
needs a display, no global backend is switched, and no figure outlives the call.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re

import librosa
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from speech_jax.audio.io import save_audio

log = logging.getLogger(__name__)

TOP_DB = 80.0  # dynamic range shown in mel plots


def _parent(path) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def _save(fig: Figure, path) -> str:
    path = _parent(path)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)
    return path


def plot_log_mel(wav, sample_rate: int, n_mels: int = 80) -> np.ndarray:
    """Power mel spectrogram `[n_mels, frames]` for display: 10 ms hop, window about 40 ms."""
    wav = np.asarray(wav, dtype=np.float32)
    n_fft = 2 ** math.ceil(math.log2(0.04 * sample_rate))
    return librosa.feature.melspectrogram(
        y=wav, sr=sample_rate, n_fft=n_fft, hop_length=max(1, sample_rate // 100), n_mels=n_mels,
        power=2.0)


def save_mel_comparison(path, wav_ref, wav_est, sample_rate: int, title: str | None = None,
                        reference_label: str = "reference") -> str:
    """PNG of log-mel panels stacked: the reference on top, then the estimate(s), on one dB scale.

    `wav_est` is a waveform (panel "estimate") or a dict {label: waveform} for several panels.
    Colours share one scale (the loudest panel's peak down `TOP_DB`), so panels compare by eye.
    """
    panels = {reference_label: wav_ref}
    panels.update(wav_est if isinstance(wav_est, dict) else {"estimate": wav_est})
    mels = {label: plot_log_mel(wav, sample_rate) for label, wav in panels.items()}
    peak = max(float(m.max()) for m in mels.values())
    peak = peak if peak > 0 else 1.0
    hop_s = max(1, sample_rate // 100) / sample_rate

    fig = Figure(figsize=(10, 2.4 * len(mels) + 0.4), layout="constrained")
    axes = fig.subplots(len(mels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, mel) in zip(axes, mels.items()):
        db = librosa.power_to_db(mel, ref=peak, top_db=None)
        image = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-TOP_DB, vmax=0.0,
                          extent=(0.0, mel.shape[1] * hop_s, 0, mel.shape[0]), interpolation="nearest")
        ax.set_title(label)
        ax.set_ylabel("mel bin")
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=list(axes), label="dB")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _file_name(name: str) -> str:
    name = re.sub(r"[^\w.\-]+", "_", str(name)).strip("._") or "audio"
    return name if name.endswith(".wav") else name + ".wav"


def save_wavs(directory, items: dict, sample_rate: int) -> list[str]:
    """Writes each {name: waveform} as `directory/name.wav` (16-bit PCM, clipped); returns the paths.

    Names are made file-system safe (anything but letters, digits, `.`, `-`, `_` becomes `_`).
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, wav in items.items():
        path = os.path.join(directory, _file_name(name))
        save_audio(path, np.asarray(wav), sample_rate)
        paths.append(path)
    return paths


def read_jsonl(path) -> list[dict]:
    """Rows of a `metrics.jsonl`; a line that does not parse (a run still writing it) is skipped."""
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s:%d is not JSON; skipped", path, number)
    return rows


def save_loss_curves(path, metrics_jsonl_path, keys, *, with_eval: bool = False) -> str:
    """PNG of each key against `step`, one panel per metric: `loss`, `eval/loss` and `eval_<split>/loss`
    share a panel. `with_eval` adds every evaluation series of each key (`eval/k`, `eval_<split>/k`).

    Eval rows are sparse, so they are drawn with markers. Keys with no rows are skipped with a warning;
    raises ValueError when none of `keys` has any data.
    """
    rows = read_jsonl(metrics_jsonl_path)
    logged = {k for row in rows for k in row}
    groups = {key: [key, *sorted(k for k in logged if k.startswith("eval") and k.split("/", 1)[-1] == key)]
              if with_eval else [key] for key in keys}
    series = {}
    for key, names in groups.items():
        for name in names:
            points = [(row["step"], row[name]) for row in rows
                      if "step" in row and isinstance(row.get(name), (int, float))]
            if points:
                series[name] = np.array(sorted(points), dtype=np.float64).T
        if not any(name in series for name in names):
            log.warning("%s: no rows with %r", metrics_jsonl_path, key)
    if not series:
        available = sorted(logged - {"step"})
        raise ValueError(f"none of {list(keys)} in {metrics_jsonl_path}; it has {available}")

    panels = {}
    for key in series:
        panels.setdefault(key.split("/", 1)[-1], []).append(key)
    fig = Figure(figsize=(8, 2.6 * len(panels) + 0.4), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (metric, members) in zip(axes, panels.items()):
        for key in members:
            steps, values = series[key]
            style = dict(marker="o", markersize=3) if key.startswith("eval") else dict(linewidth=1)
            ax.plot(steps, values, label=key, **style)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("step")
    return _save(fig, path)
