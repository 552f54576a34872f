"""`speech-jax prepare`: build a TFDS corpus, then train its BPE tokenizer beside it.

Both steps are skipped when their output already exists, so preparing again is a fast no-op.
The tokenizer lands at `<corpus dir>/bpe.model`, e.g. `<data_dir>/espeak_tts/tiny/1.0.0/bpe.model`,
which is where the data pipeline looks by default.
"""

from __future__ import annotations

import json
import logging
import os

_log = logging.getLogger(__name__)

# The public corpora (data_pipelines/corpora) read their published layout from --manual-dir.
CORPORA = ("libritts_r", "libritts", "vctk", "ljspeech", "kaldi", "emilia")
DATASETS = ("espeak_tts", "manifest") + CORPORA
# Requested sizes; with byte fallback sentencepiece may return fewer pieces on a small corpus.
DEFAULT_VOCAB = {"tiny": 384, "small": 1024}
FALLBACK_VOCAB = 1024
# Room for merges above one piece per character, when the characters alone exceed the default.
_MERGE_ROOM = 64
BPE_NAME = "bpe"  # -> bpe.model, plus bpe.json recording how it was trained


def _beam_options(text: str):
    """`--beam "--runner=DataflowRunner --project=P ..."` as Beam PipelineOptions (the 'beam' extra)."""
    import shlex

    from tensorflow_datasets.core.utils.lazy_imports_utils import apache_beam as beam

    try:
        options = beam.options.pipeline_options  # the lazy import happens here
    except ImportError as e:
        raise ValueError(f"--beam needs Apache Beam ({e}): pip install 'speech_jax[beam]', best in an "
                         "environment of its own (Beam pins protobuf and pillow)") from None
    return options.PipelineOptions(shlex.split(text))


def _corpus_builder(dataset, data_dir, config, manual_dir, options, beam):
    import tensorflow_datasets as tfds

    from data_pipelines import corpora

    if manual_dir is None:
        raise ValueError(f"--dataset {dataset} reads the corpus from --manual-dir DIR (nothing is downloaded); "
                         f"it should hold:\n{corpora.CORPORA[dataset].MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if "://" not in manual_dir and not os.path.isdir(manual_dir):
        raise FileNotFoundError(f"--manual-dir {manual_dir} is not a directory")
    cfg = corpora.make_config(config, **options)
    manual_dir = manual_dir if "://" in manual_dir else os.path.abspath(manual_dir)
    download = tfds.download.DownloadConfig(manual_dir=manual_dir,
                                            beam_options=None if beam is None else _beam_options(beam))
    return corpora.CORPORA[dataset](config=cfg, data_dir=data_dir), download


def _builder(dataset, data_dir, config, manifest, on_error, sample_rate, min_seconds):
    if dataset == "espeak_tts":
        if manifest is not None:
            raise ValueError("--manifest is only used with --dataset manifest")
        from data_pipelines.espeak_tts import builder as espeak

        size = config or "small"
        if size not in espeak.SIZES:
            raise ValueError(f"espeak_tts config must be one of {espeak.SIZES}, got {size!r}")
        if sample_rate not in espeak.SAMPLE_RATES:
            raise ValueError(f"espeak_tts is built at {espeak.SAMPLE_RATES} Hz, not {sample_rate}")
        return espeak.EspeakTts(config=espeak.config_name(size, sample_rate), data_dir=data_dir)
    if dataset == "manifest":
        if manifest is None:
            raise ValueError("--dataset manifest needs --manifest PATH (a CSV or JSONL file)")
        from data_pipelines.manifest import builder as manifest_lib

        cfg = manifest_lib.make_config(manifest, config, on_error=on_error, sample_rate=sample_rate,
                                       min_seconds=min_seconds)
        return manifest_lib.Manifest(config=cfg, data_dir=data_dir)
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")


def _train_texts(name: str, data_dir: str) -> list[str]:
    import tensorflow_datasets as tfds

    source = tfds.data_source(name, data_dir=data_dir, split="train", download=False)
    return [source[i]["text"].decode("utf-8") for i in range(len(source))]


def _default_vocab(texts: list[str], default: int) -> int:
    """`default`, raised when the corpus has more distinct characters than would fit (the
    multilingual corpora carry hundreds of CJK and Hangul characters)."""
    from speech_jax.text.bpe import MIN_VOCAB_SIZE

    return max(default, MIN_VOCAB_SIZE + len(set("".join(texts))) + _MERGE_ROOM)


def _train_bpe(texts: list[str], corpus_dir: str, vocab_size: int, requested: int) -> str:
    """Trains and writes `bpe.model` atomically (a killed run never leaves half a model)."""
    from speech_jax.text.bpe import BpeTokenizer

    path = os.path.join(corpus_dir, BPE_NAME + ".model")
    tmp_prefix = os.path.join(corpus_dir, f"{BPE_NAME}.tmp{os.getpid()}")
    tokenizer = BpeTokenizer.train(texts, tmp_prefix, vocab_size)
    os.replace(tmp_prefix + ".model", path)
    with open(os.path.join(corpus_dir, BPE_NAME + ".json"), "w") as f:
        json.dump({"requested_vocab_size": requested, "trained_vocab_size": vocab_size,
                   "vocab_size": tokenizer.vocab_size,
                   "num_texts": len(texts)}, f)
    return path


def _bpe_is_current(corpus_dir: str, vocab_size: int) -> bool:
    try:
        with open(os.path.join(corpus_dir, BPE_NAME + ".json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return (meta.get("requested_vocab_size") == vocab_size
            and os.path.exists(os.path.join(corpus_dir, BPE_NAME + ".model")))


def prepare(dataset: str, data_dir: str, *, config: str | None = None,
            manifest: str | None = None, on_error: str = "skip", vocab_size: int | None = None,
            sample_rate: int = 16000, min_seconds: float | None = None, manual_dir: str | None = None,
            beam: str | None = None, **corpus_options) -> dict:
    """Builds `dataset` (one of DATASETS) under `data_dir` and its tokenizer.

    espeak_tts: `config` is 'tiny' or 'small' (default). manifest: `manifest` is the CSV/JSONL
    path, `config` an optional name for the corpus, `on_error` 'skip' or 'stop', `min_seconds`
    the shortest clip kept (default `DEFAULT_MIN_SECONDS`). The public corpora (CORPORA) read
    `manual_dir`; `config` optionally names the build; `min_seconds` and `corpus_options`
    (max_seconds, max_clipped, min_quality, dedup, language, split_spec: see corpora.CorpusConfig)
    set the preparation filters; `beam`, Beam pipeline options as one string (e.g.
    "--runner=DirectRunner --direct_num_workers=4"), builds with Apache Beam instead of in this process.
    Returns {"name", "data_dir", "corpus_dir", "bpe_model", "splits", "report", "skipped", "filters"};
    `name` is what `tfds.data_source(name, data_dir=data_dir)` reads; `skipped` counts the rows or
    files left out, by split; `filters` (public corpora) the counts of each filter, by split.
    """
    data_dir = os.path.abspath(os.fspath(data_dir))
    download = None
    if dataset in CORPORA:
        if manifest is not None:
            raise ValueError("--manifest is only used with --dataset manifest")
        builder, download = _corpus_builder(dataset, data_dir, config, manual_dir,
                                            dict(corpus_options, sample_rate=sample_rate, min_seconds=min_seconds),
                                            beam)
    else:
        if manual_dir is not None or beam is not None or corpus_options:
            raise ValueError(f"--manual-dir, --beam and the corpus filters are only used with --dataset {'|'.join(CORPORA)}")
        if dataset != "manifest" and min_seconds is not None:
            raise ValueError("--min-seconds is only used with --dataset manifest or a public corpus")
        if min_seconds is None:
            from data_pipelines.manifest.builder import DEFAULT_MIN_SECONDS
            min_seconds = DEFAULT_MIN_SECONDS
        builder = _builder(dataset, data_dir, config, manifest, on_error, sample_rate, min_seconds)
    builder.download_and_prepare(download_config=download)  # returns at once when the corpus exists
    name = f"{builder.name}/{builder.builder_config.name}"
    corpus_dir = os.fspath(builder.data_dir)

    requested = vocab_size or DEFAULT_VOCAB.get(builder.builder_config.name, FALLBACK_VOCAB)
    bpe_model = os.path.join(corpus_dir, BPE_NAME + ".model")
    if not _bpe_is_current(corpus_dir, requested):
        texts = _train_texts(name, data_dir)
        size = requested if vocab_size else _default_vocab(texts, requested)
        _log.info("training BPE (vocab %d) on %d %s train texts", size, len(texts), name)
        bpe_model = _train_bpe(texts, corpus_dir, size, requested)

    report, skipped, counts = None, {}, None
    if dataset in CORPORA:
        from data_pipelines.corpora import merge_reports

        counts = merge_reports(corpus_dir)[1]  # the per-split reports, joined into one
    if dataset != "espeak_tts":
        from data_pipelines.manifest import REPORT_NAME

        path = os.path.join(corpus_dir, REPORT_NAME)
        report = path if os.path.exists(path) and os.path.getsize(path) else None
        if report:
            with open(report) as f:
                for line in f:
                    split = json.loads(line)["split"]
                    skipped[split] = skipped.get(split, 0) + 1
    return {
        "name": name,
        "data_dir": data_dir,
        "corpus_dir": corpus_dir,
        "bpe_model": bpe_model,
        "splits": {k: v.num_examples for k, v in builder.info.splits.items()},
        "report": report,
        "skipped": skipped,
        "filters": counts,
    }


def summary(out: dict) -> str:
    """What `speech-jax prepare` prints: the corpus, its splits and what was left out, and where."""
    lines = [f"corpus {out['name']} in {out['data_dir']} (train with --config.data.name={out['name']} "
             f"--config.data.data_dir={out['data_dir']})"]
    for split, kept in sorted(out["splits"].items()):
        lines.append(f"  {split}: {kept} utterances")
    if out.get("skipped"):
        left = sum(out["skipped"].values())
        total = left + sum(out["splits"].get(s, 0) for s in out["skipped"])
        by_split = ", ".join(f"{s} {n}" for s, n in sorted(out["skipped"].items()))
        lines.append(f"skipped {left} of {total} rows ({by_split}); each with its reason in {out['report']}")
    for split, c in sorted((out.get("filters") or {}).items()):
        left = ", ".join(f"{k} {v}" for k, v in c["rejected"].items() if v) or "none"
        lines.append(f"  {split}: kept {c['kept']} of {c['listed']}; left out: {left}; "
                     f"texts normalised: {c['text_normalised']}")
    lines.append(f"BPE model: {out['bpe_model']}")
    return "\n".join(lines)
