"""`speech-jax` command line: prepare, train (other stages arrive with their issues)."""
from __future__ import annotations

import argparse
import logging
import sys


def _prepare(args) -> int:
    from data_pipelines.prepare import prepare
    out = prepare(args.dataset, args.data_dir, config=args.config, manifest=args.manifest,
                  on_error=args.on_error, vocab_size=args.vocab_size, sample_rate=args.sample_rate)
    print(out)
    return 0


def _train(args, overrides) -> int:
    from speech_jax.config import apply_overrides, load_config
    from speech_jax.train.loop import train
    config = apply_overrides(load_config(args.config), overrides)
    result = train(config, args.workdir)
    print({k: round(v, 5) if isinstance(v, float) else v for k, v in result.items()})
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("absl", "jax._src", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="speech-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build a TFDS corpus and its BPE tokenizer")
    p.add_argument("--dataset", required=True, choices=["espeak_tts", "manifest"])
    p.add_argument("--data-dir", default="data")
    p.add_argument("--config", default=None, help="builder config (espeak_tts: tiny | small)")
    p.add_argument("--manifest", default=None, help="CSV or JSONL with wav_path,text,speaker[,language]")
    p.add_argument("--on-error", default="skip", choices=["skip", "stop"])
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--sample-rate", type=int, default=16000)

    t = sub.add_parser("train", help="train one stage; resumes from --workdir")
    t.add_argument("--config", required=True)
    t.add_argument("--workdir", required=True)

    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "prepare":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return _prepare(args)
        if args.command == "train":
            return _train(args, rest)
    except (ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"speech-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
