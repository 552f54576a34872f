"""`speech-jax` command line: prepare a corpus, train a stage, extract tokens and latents."""
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


def _extract(args) -> int:
    from data_pipelines.extract import extract
    out = extract(args.tokenizer, flow_vae_workdir=args.flow_vae, name=args.dataset, data_dir=args.data_dir,
                  splits=tuple(args.splits.split(",")), tag=args.tag, batch_size=args.batch_size,
                  latent_dtype=args.latent_dtype)
    print({k: out[k] for k in ("directory", "counts") if k in out})
    return 0


def _user_errors() -> tuple[type, ...]:
    """Errors that describe bad input (a corrupt checkpoint, mismatched models): no traceback needed."""
    from data_pipelines.extract import ExtractError
    from speech_jax.train.checkpoint import CheckpointError
    return ExtractError, CheckpointError


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

    e = sub.add_parser("extract", help="write 25 Hz tokens (and 50 Hz Flow-VAE latents) for a corpus")
    e.add_argument("--tokenizer", required=True, help="workdir of a trained tokenizer stage")
    e.add_argument("--flow-vae", default=None, help="workdir of a trained flow_vae stage (adds latents)")
    e.add_argument("--dataset", default=None, help="TFDS name/config (default: the tokenizer's corpus)")
    e.add_argument("--data-dir", default=None, help="default: the tokenizer's data.data_dir")
    e.add_argument("--splits", default="train,validation,test_unseen")
    e.add_argument("--tag", default="default", help="name of this extraction (data.extracted in configs)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--latent-dtype", default="float16", choices=["float16", "float32"])

    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "prepare":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return _prepare(args)
        if args.command == "train":
            return _train(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "extract":
            return _extract(args)
    except (ValueError, FileNotFoundError, *_user_errors()) as e:
        logging.error("%s", e)
        print(f"speech-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
