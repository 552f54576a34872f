"""Input pipeline cost per host as the number of hosts grows: one host's share of each global batch.

Every host plans the whole global batch from the record index (no audio) and reads, decodes, resamples and
pads its own rows only, so a host's loading time should fall as 1 / processes. This runs process 0 of P in
one process (the plan is the same on every host) and prints its seconds per global batch.

    python experiments/bench_loading.py --data-dir D [--name espeak_tts/small] [--batch-size 32] \
        [--processes 1,2,4,8] [--windows 3] [--config experiments/ar/tiny.py]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--name", default="espeak_tts/small")
    p.add_argument("--config", default=os.path.join(ROOT, "experiments", "ar", "tiny.py"),
                   help="a stage config whose data section is used (the AR's loads references and tokens)")
    p.add_argument("--extracted", default="default", help="extracted-feature tag ('' for audio only)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--processes", default="1,2,4,8")
    p.add_argument("--windows", type=int, default=3, help="length-grouping windows timed per setting")
    args = p.parse_args()

    from data_pipelines.pipeline import make_dataset
    from data_pipelines.sources import corpus_dir
    from speech_jax.config import load_config
    cfg = load_config(args.config).data
    cfg.name, cfg.data_dir, cfg.batch_size = args.name, args.data_dir, args.batch_size
    cfg.bpe_model = os.path.join(corpus_dir(args.name, args.data_dir), "bpe.model")
    cfg.extracted = args.extracted
    if not args.extracted:
        cfg.with_prompt = cfg.with_latents = False
    cfg.num_workers = 0  # one thread: the cost itself, not how it is spread
    frame_multiple = 640
    batches = args.windows * max(cfg.group_window, 1)  # whole windows: the plan reads a window at a time
    next(iter(make_dataset(cfg, split="train", training=True, frame_multiple=frame_multiple)))  # caches
    for pc in (int(x) for x in args.processes.split(",")):
        start = time.perf_counter()
        it = iter(make_dataset(cfg, split="train", training=True, frame_multiple=frame_multiple,
                               process_index=0, process_count=pc))
        rows = sum(len(b["audio"]) for b in itertools.islice(it, batches))
        seconds = (time.perf_counter() - start) / batches
        print(json.dumps({"processes": pc, "global_batch": args.batch_size, "rows_per_host": rows // batches,
                          "host_seconds_per_batch": round(seconds, 4),
                          "host_rows_per_s": round(rows / batches / seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
