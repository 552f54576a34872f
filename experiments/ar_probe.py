"""Does the AR read the text and the reference? Teacher-forced loss and accuracy of a trained AR stage on a
split as it is, and again with each row given another row's text (or reference).

If the right text is worth little (loss barely rises when the text is swapped), the AR predicts the audio
tokens from the audio context alone; on unseen voices that is what a model that memorised its training
voices does (docs/what_limits_quality.md, "Why the AR does not read unseen voices").

  python experiments/ar_probe.py --workdir W [--splits train,validation,test_unseen] [--batches 4] [--step N]

Prints one row per split: loss / token accuracy as is, with other text, with other reference.
"""
from __future__ import annotations

import argparse

import jax
import numpy as np

from speech_jax import sharding
from speech_jax.train.loop import Trainer
from speech_jax.train.restore import read_config
from speech_jax.train.validate import restored_trainer

# A row's own fields, and what "another row's" swaps in: np.roll over the batch gives each row its
# neighbour's (a different utterance; the pipeline never batches one utterance twice).
SWAPS = {"other text": ("text_ids", "text_len"), "other ref": ("ref_audio", "ref_len")}


def probe(trainer: Trainer, state, split: str, batches: int) -> dict[str, tuple[float, float]]:
    """{"as is" | "other text" | "other ref": (mean loss, mean token accuracy)} over `batches` batches."""
    rows: dict[str, list] = {name: [] for name in ("as is", *SWAPS)}
    stream = iter(trainer.dataset(split, training=False))
    for _ in range(batches):
        batch = next(stream)
        for name in rows:
            fed = dict(batch)
            for key in SWAPS.get(name, ()):
                fed[key] = np.roll(batch[key], 1, axis=0)
            with sharding.activation_rules(trainer.mesh, trainer.rules):
                out, _ = trainer.eval_step(state, trainer.to_device(fed))
            out = jax.device_get(out)
            rows[name].append((float(out["loss"]), float(out["token_accuracy"])))
    return {name: tuple(np.mean(v, axis=0)) for name, v in rows.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="a trained ar stage")
    ap.add_argument("--splits", default="train,validation,test_unseen")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--step", type=int, default=None, help="default: the newest checkpoint")
    args = ap.parse_args()

    config = read_config(args.workdir, args.step)
    if config.stage != "ar":
        raise SystemExit(f"{args.workdir} holds a {config.stage} stage, not an ar stage")
    trainer, step, state = restored_trainer(config, args.workdir, args.step)
    print(f"AR step {step}: teacher-forced loss / token accuracy")
    print(f"| split | as is | {' | '.join(SWAPS)} |\n|---|---|" + "---|" * len(SWAPS))
    for split in args.splits.split(","):
        cells = probe(trainer, state, split, args.batches)
        print(f"| {split} | " + " | ".join(f"{loss:.2f} / {acc:.3f}" for loss, acc in cells.values()) + " |")


if __name__ == "__main__":
    main()
