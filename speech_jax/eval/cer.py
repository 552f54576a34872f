"""Greedy CTC decoding and edit-distance error rates, shared by the CTC-trained stages (tokenizer, judge)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ctc_collapse(ids, blank: int = 0) -> list[int]:
    """Greedy CTC read-out of per-frame argmax ids: merge repeats, then drop blanks."""
    out, prev = [], None
    for t in ids:
        if t != prev and t != blank:
            out.append(int(t))
        prev = t
    return out


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (unit-cost substitutions, insertions, deletions)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev_diag, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev_diag + (x != y))
    return row[-1]


def error_rate(hyp: Sequence, ref: Sequence) -> float:
    """Edits turning `ref` into `hyp` per reference symbol (characters of strings); may exceed 1."""
    if not len(ref):
        raise ValueError("the reference is empty")
    return edit_distance(hyp, ref) / len(ref)


def ctc_token_error_rate(pred, pred_len, labels, label_len) -> float:
    """Greedy CTC decode of a batch's argmax ids -> label error rate, pooled over the batch."""
    pred, pred_len = np.asarray(pred), np.asarray(pred_len)
    labels, label_len = np.asarray(labels), np.asarray(label_len)
    errors = total = 0
    for p, pl, y, yl in zip(pred, pred_len, labels, label_len):
        ref = [int(t) for t in y[:yl]]
        errors += edit_distance(ctc_collapse(p[:pl]), ref)
        total += len(ref)
    return errors / max(total, 1)
