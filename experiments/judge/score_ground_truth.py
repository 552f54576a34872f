"""The judge's CER on espeak's own audio of a corpus split: how well it reads voices (held-out ones, on
test_unseen) before it scores any synthesis. Mean over utterances, and per language.

    python experiments/judge/score_ground_truth.py --judge J --data-dir D [--corpus espeak_tts/small] \
        [--split test_unseen] [--limit 0]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--judge", required=True, help="a trained judge's workdir")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--corpus", default="espeak_tts/small")
    p.add_argument("--split", default="test_unseen")
    p.add_argument("--limit", type=int, default=0, help="first N utterances (0: all)")
    args = p.parse_args()

    import numpy as np

    from data_pipelines.sources import _str, open_source
    from speech_jax.audio.io import to_float32
    from speech_jax.eval.judge import JudgeTranscriber
    judge = JudgeTranscriber(args.judge)
    source = open_source(args.corpus, args.data_dir, args.split)
    n = min(args.limit, len(source)) if args.limit else len(source)
    by_language = defaultdict(list)
    for i in range(n):
        record = source[i]
        language = _str(record["language"])
        heard = judge.transcribe(to_float32(np.asarray(record["audio"])), int(record["sample_rate"]), language)
        by_language[language].append(judge.cer(heard, _str(record["text"]), language))
    every = [c for cers in by_language.values() for c in cers]
    print(json.dumps({"judge": args.judge, "corpus": args.corpus, "split": args.split, "utterances": len(every),
                      "cer": round(float(np.mean(every)), 4),
                      "per_language": {k: round(float(np.mean(v)), 3) for k, v in sorted(by_language.items())}}))


if __name__ == "__main__":
    main()
