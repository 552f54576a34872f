"""Speaker verification: equal error rate of cosine-scored trials between speaker embeddings.

The EER is where the false-acceptance rate (non-target trials scored at or above the threshold) equals
the false-rejection rate (target trials below it). It is read off the ROC, interpolating linearly
between the two operating points where FPR crosses FNR, so it is exact for small trial lists too.
"""

from __future__ import annotations

import numpy as np


def equal_error_rate(scores, labels) -> tuple[float, float]:
    """(eer, threshold) for trials with `labels` 1 (target, same speaker) or 0 (non-target).

    A trial is accepted when its score >= threshold. Tied scores move together, as one ROC point.
    The threshold is interpolated like the rate (the nearest real score when the crossing is at
    the first one). Raises ValueError unless there are both target and non-target trials.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 (non-target) or 1 (target)")
    labels = labels.astype(bool)
    n_target, n_nontarget = int(labels.sum()), int((~labels).sum())
    if n_target == 0 or n_nontarget == 0:
        raise ValueError(f"need target and non-target trials, got {n_target} and {n_nontarget}")

    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    # One ROC point after each distinct score (descending), plus the "accept nothing" point.
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    accepted_targets = np.cumsum(labels)[last_of_tie]
    accepted_nontargets = np.cumsum(~labels)[last_of_tie]
    thresholds = np.r_[np.inf, scores[last_of_tie]]
    fpr = np.r_[0.0, accepted_nontargets / n_nontarget]
    fnr = np.r_[1.0, 1.0 - accepted_targets / n_target]

    gap = fnr - fpr  # 1 at the start, <= 0 at the end (fnr 0, fpr 1)
    i = int(np.argmax(gap <= 0))  # first point at or past the crossing; i >= 1
    alpha = gap[i - 1] / (gap[i - 1] - gap[i])
    eer = fpr[i - 1] + alpha * (fpr[i] - fpr[i - 1])
    if np.isinf(thresholds[i - 1]):
        threshold = thresholds[i]
    else:
        threshold = thresholds[i - 1] + alpha * (thresholds[i] - thresholds[i - 1])
    return float(eer), float(threshold)


def cosine_trials(embeddings, speakers) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and same-speaker labels (1/0) of every unordered pair i < j of `embeddings [N, E]`."""
    emb = np.asarray(embeddings, dtype=np.float64)
    speakers = np.asarray(speakers)
    if emb.ndim != 2 or speakers.shape != (emb.shape[0],):
        raise ValueError(f"need embeddings [N, E] and speakers [N], got {emb.shape} and {speakers.shape}")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(emb)):
        raise ValueError("embeddings must be finite and non-zero")
    unit = emb / norms
    i, j = np.triu_indices(emb.shape[0], k=1)
    scores = (unit @ unit.T)[i, j]
    labels = (speakers[i] == speakers[j]).astype(np.int32)
    return scores, labels


def speaker_eer(embeddings, speakers) -> float:
    """EER of all cosine trials between utterance embeddings; needs >= 2 speakers and a repeated one."""
    return equal_error_rate(*cosine_trials(embeddings, speakers))[0]
