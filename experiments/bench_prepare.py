"""Preparation throughput of the public-corpus builders: utterances/s written, on a miniature tree in each
corpus's layout (data_pipelines/corpora/miniature.py: espeak speech, a few bad files), single process vs TFDS's Beam
DirectRunner (`--beam`, needs the 'beam' extra).

    python experiments/bench_prepare.py [--corpora vctk,emilia] [--per-speaker 25] [--beam] [--workers 2]

Times `download_and_prepare` only (listing, decoding, filtering, resampling to 16 kHz, writing array_record),
not the BPE training `speech-jax prepare` runs after it, nor writing the tree.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from data_pipelines.corpora import miniature  # noqa: E402
from data_pipelines import corpora  # noqa: E402


def build(name: str, manual_dir: str, data_dir: str, beam: bool, workers: int) -> tuple[float, int]:
    """(seconds, utterances written)."""
    import tensorflow_datasets as tfds

    kwargs = dict(manual_dir=manual_dir)
    if beam:
        from tensorflow_datasets.core.utils.lazy_imports_utils import apache_beam as beam
        kwargs.update(beam_options=beam.options.pipeline_options.PipelineOptions([
            "--runner=DirectRunner", f"--direct_num_workers={workers}",
            "--direct_running_mode=" + ("multi_processing" if workers > 1 else "in_memory")]))
    builder = corpora.CORPORA[name](config=corpora.make_config(), data_dir=data_dir)
    start = time.perf_counter()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(**kwargs))
    seconds = time.perf_counter() - start
    return seconds, sum(s.num_examples for s in builder.info.splits.values())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpora", default=",".join(miniature.WRITERS))
    p.add_argument("--per-speaker", type=int, default=25, help="utterances per speaker in each tree")
    p.add_argument("--beam", action="store_true", help="also build with Beam's DirectRunner")
    p.add_argument("--workers", type=int, default=2, help="DirectRunner worker processes")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.corpora.split(","):
            src = os.path.join(tmp, name, "src")
            miniature.WRITERS[name](__import__("pathlib").Path(src), per_speaker=args.per_speaker)
            for mode in ["plain"] + (["beam"] if args.beam else []):
                seconds, n = build(name, src, os.path.join(tmp, name, mode), mode == "beam", args.workers)
                row = {"corpus": name, "mode": mode, "utterances": n, "seconds": round(seconds, 2),
                       "utterances_per_s": round(n / seconds, 1)}
                print(json.dumps(row), flush=True)
                results.append(row)
    return results


if __name__ == "__main__":
    main()
