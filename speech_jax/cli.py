"""`speech-jax` command line: demo, prepare, train, compile, validate, extract, synthesize, pvc, t2v, export,
evaluate, sweep."""
from __future__ import annotations

import argparse
import logging
import os
import sys

ACOUSTIC_PROMPT_HELP = ("zero-shot with a reference: its tokens and Flow-VAE latent prompt flow matching (no "
                        "transcript needed; the AR still sees the speaker vector only); --no-acoustic-prompt: "
                        "flow matching sees the speaker vector only")
CANDIDATES_HELP = ("best of N: the AR samples N token sequences a sentence and the tokenizer's CTC head keeps "
                   "the one it reads as the text most likely (N times the AR's work; default 1)")
FM_TEMPERATURE_HELP = "the scale of flow matching's starting noise (default: the synthesizer's FM_TEMPERATURE)"
CTC_GUIDANCE_HELP = ("W > 0: every AR sampling step adds W times how well each code continues the text, as the "
                     "tokenizer's CTC head reads it, to the code's logit (default 0: the paper's sampling)")
CTC_PROGRESS_HELP = "CTC guidance's bonus in nats for each text unit a code says (default 4)"


def _prepare(args) -> int:
    from data_pipelines.prepare import prepare, summary
    corpus = {k: v for k, v in (("max_seconds", args.max_seconds), ("max_clipped", args.max_clipped),
                                 ("min_quality", args.min_quality), ("language", args.language)) if v is not None}
    if args.no_dedup:
        corpus["dedup"] = False
    out = prepare(args.dataset, args.data_dir, config=args.config, manifest=args.manifest,
                  on_error=args.on_error, vocab_size=args.vocab_size, sample_rate=args.sample_rate,
                  min_seconds=args.min_seconds, manual_dir=args.manual_dir, beam=args.beam, **corpus)
    print(summary(out))
    return 0


def _train(args, overrides) -> int:
    from speech_jax.config import apply_overrides, load_config
    from speech_jax.train.loop import train
    config = apply_overrides(load_config(args.config), overrides)
    from speech_jax.train.metrics import format_metrics
    result = train(config, args.workdir)
    print(format_metrics(result))
    return 0


def _compile(args, overrides) -> int:
    if args.topology.startswith("cpu:"):  # read when jax starts its CPU backend, which has not happened yet
        flag = f"--xla_force_host_platform_device_count={args.topology.split(':', 1)[1]}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    # Describing a topology uses no chip, so another JAX process on this host holding libtpu's lockfile (a
    # training job: jax loads libtpu whenever it is installed) must not stop a compile. Read when libtpu loads.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from speech_jax.config import apply_overrides, load_config
    from speech_jax.sharding_report import format_report
    from speech_jax.train.aot import DoesNotFit, compile_step, format_result
    from speech_jax.train.fit_batch import fit_batch, format_fit
    config = apply_overrides(load_config(args.config), overrides)
    try:
        if args.fit_batch:
            print(f"searching the largest global batch of {config.stage} on {args.topology} within "
                  f"{100 * (args.hbm_fraction or 0.85):.0f} % of HBM:")
            fit = fit_batch(config, args.topology, chip=args.chip, hbm_fraction=args.hbm_fraction or 0.85)
            result = fit.result
        else:
            result = compile_step(config, args.topology, chip=args.chip, hbm_fraction=args.hbm_fraction or 1.0)
    except DoesNotFit as e:
        print(f"speech-jax compile: does not fit: {e}", file=sys.stderr)
        return 3
    print(format_result(result))
    if args.fit_batch:
        print(format_fit(fit))
    print("sharding (parameters and non-trained state; optimizer moments shard like their parameters):")
    print(format_report(result.rows, parts=("params", "rest"), limit=args.rows))
    return 0


def _extract(args) -> int:
    from data_pipelines.extract import extract
    out = extract(args.tokenizer, flow_vae_workdir=args.flow_vae, name=args.dataset, data_dir=args.data_dir,
                  splits=tuple(args.splits.split(",")), tag=args.tag, batch_size=args.batch_size,
                  shard_size=args.shard_size, latent_dtype=args.latent_dtype, replace_stale=args.replace_stale)
    print({k: out[k] for k in ("directory", "counts") if k in out})
    return 0


def _synthesize(args) -> int:
    from speech_jax.audio.io import save_audio
    from speech_jax.infer.synthesizer import TEMPERATURE
    synth = _load_synthesizer(args)
    pick = lambda value, default: default if value is None else value  # noqa: E731  a bundle's own settings
    voice = args.voice
    if args.voice_description is not None:
        if not args.t2v or args.voice:
            raise ValueError("--voice-description needs --t2v (a trained t2v stage's workdir) and no --voice")
        from speech_jax.t2v import voice_from_description
        voice = voice_from_description(args.t2v, args.voice_description, seed=args.seed)
        if args.ar and os.path.abspath(args.ar) != voice.metadata["ar_workdir"]:
            logging.warning("the t2v stage generates voices in the speaker space of %s, synthesis uses the AR "
                            "in %s: the voice is only meaningful for the former", voice.metadata["ar_workdir"], args.ar)
    wav = synth.synthesize(args.text, args.reference, voice=voice, prompt_text=args.prompt_text,
                           language=args.language, seed=args.seed, temperature=pick(args.temperature, TEMPERATURE),
                           top_k=pick(args.top_k, synth.spec.top_k), top_p=args.top_p,
                           cfg_weight=args.cfg_weight, fm_steps=pick(args.fm_steps, synth.spec.fm_steps),
                           candidates=args.candidates, acoustic_prompt=_acoustic_prompt(args),
                           **_sampling(args))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_audio(args.out, wav, synth.sample_rate)
    print({"out": args.out, "seconds": round(len(wav) / synth.sample_rate, 3), "sample_rate": synth.sample_rate})
    return 0


def _pvc(args, overrides) -> int:
    from speech_jax.pvc import clone_voice
    out = clone_voice(data_dir=args.data, speaker=args.speaker, ar=args.ar, out=args.out, workdir=args.workdir,
                      split=args.split, config_file=args.config, overrides=overrides,
                      flow_matching=args.flow_matching)
    m = out["metrics"]
    print({"voice": out["voice"], "step": m.get("step"), "loss": m.get("loss"),
           "token_accuracy": m.get("token_accuracy")})
    return 0


def _t2v(args) -> int:
    from speech_jax.infer.voice import save_voice
    from speech_jax.t2v import voice_from_description
    voice = voice_from_description(args.workdir, args.description, seed=args.seed, guidance=args.guidance)
    path = save_voice(args.out, voice.v, **{k: v for k, v in voice.metadata.items() if k != "spk_dim"})
    print({"voice": path, "description": args.description, "seed": args.seed})
    return 0


def _export(args) -> int:
    from speech_jax.export import export_bundle, read_manifest
    out = export_bundle(args.out, tokenizer=args.tokenizer, ar=args.ar, flow_matching=args.flow_matching,
                        max_new_tokens=args.max_new_tokens, top_k=args.top_k, fm_steps=args.fm_steps,
                        styles=dict(_name_value(s, "--style") for s in args.style))
    manifest = read_manifest(out)
    print({"bundle": out, "buckets": manifest["buckets"], "programs": sorted(manifest["programs"])})
    return 0


def _name_value(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not (sep and name and value):
        raise ValueError(f"{flag} takes NAME=WORKDIR, got {text!r}")
    return name, value


def _load_synthesizer(args):
    from speech_jax.infer.synthesizer import Synthesizer
    if args.bundle:
        if any((args.tokenizer, args.ar, args.flow_matching)):
            raise ValueError("give either --bundle or the stage workdirs (--tokenizer, --ar, --flow-matching), not both")
        return Synthesizer.from_bundle(args.bundle, style=getattr(args, "style", None))
    if getattr(args, "style", None):  # a style stage holds its base AR: it stands in for --ar
        if args.ar:
            raise ValueError("give either --ar or --style (a style stage holds the AR it adapts), not both")
        args.ar = args.style
    workdirs = (args.tokenizer, args.ar, args.flow_matching)
    if all(workdirs):
        return Synthesizer.from_workdirs(*workdirs)
    raise ValueError("give --bundle B, or all of --tokenizer, --ar and --flow-matching (trained stage workdirs)")


def _acoustic_prompt(args) -> bool:
    from speech_jax.infer.synthesizer import ACOUSTIC_PROMPT
    return ACOUSTIC_PROMPT if args.acoustic_prompt is None else args.acoustic_prompt


def _sampling(args) -> dict:
    """The synthesizer's CTC guidance and flow-matching noise settings from the command line."""
    from speech_jax.infer.synthesizer import CTC_PROGRESS, FM_TEMPERATURE
    return dict(ctc_guidance=args.ctc_guidance,
                ctc_progress=CTC_PROGRESS if args.ctc_progress is None else args.ctc_progress,
                fm_temperature=FM_TEMPERATURE if args.fm_temperature is None else args.fm_temperature)


def _validate(args) -> int:
    from speech_jax.train.metrics import format_metrics
    from speech_jax.train.validate import validate
    out = validate(args.workdir, split=args.split, batches=args.batches, out_dir=args.out, step=args.step)
    print(format_metrics(out))
    return 0


def _evaluate(args) -> int:
    from speech_jax.eval import seed_tts
    meta = args.meta
    if args.from_corpus:
        meta = seed_tts.make_meta_from_corpus(args.data_dir, args.from_corpus, args.split, out_dir=args.out,
                                              n=args.limit, speaker=args.speaker)
    elif not meta:
        raise ValueError("give --meta M.lst, or --from-corpus NAME to build one from a prepared corpus")
    elif args.speaker:
        raise ValueError("--speaker selects lines of --from-corpus; a --meta file holds the lines it holds")
    if args.voice and args.mode != "zero_shot":
        raise ValueError("--voice replaces the prompt recording: it synthesises zero-shot only")
    judge = None
    if args.judge:  # before the synthesiser: a wrong workdir fails fast
        from speech_jax.eval.judge import JudgeTranscriber
        judge = JudgeTranscriber(args.judge)
    synth = _load_synthesizer(args)

    def synthesize(text, prompt_wav, prompt_text, language):
        # With a saved voice the prompt recording is not read: SIM still compares the output with it.
        reference = dict(voice=args.voice) if args.voice else dict(reference=prompt_wav, prompt_text=prompt_text)
        return (synth.synthesize(text, language=language, seed=args.seed, candidates=args.candidates,
                                 acoustic_prompt=_acoustic_prompt(args), **_sampling(args), **reference),
                synth.sample_rate)

    from speech_jax.eval.models import load_scorers
    transcriber, embedder = load_scorers(args.whisper, args.speaker_model)
    espeak = args.espeak_ground_truth or bool(args.from_corpus)
    result = seed_tts.evaluate(
        meta, synthesize, args.out, mode=args.mode, transcriber=transcriber, embedder=embedder,
        ground_truth=seed_tts.espeak_ground_truth(synth.sample_rate) if espeak else None,
        language_of=seed_tts.corpus_language if espeak else args.language, limit=args.limit, judge=judge)
    print({"out": args.out, "means": result["means"], "counts": result["counts"]})
    return 0


def _sweep(args, overrides) -> int:
    from speech_jax import sweep as sweep_lib
    from speech_jax.sweep_run import run_sweep
    from speech_jax.sweep_table import collect
    sweep = sweep_lib.load_sweep(args.sweep)
    if args.list:
        for run in sweep_lib.runs(sweep):
            print(f"{run.index}\t{sweep_lib.label(run.trial)}\tseed {run.seed}\t{run.name}")
        return 0
    if any(not o.startswith("--config.") for o in overrides):
        raise ValueError(f"unrecognized arguments: {' '.join(overrides)} (runs take --config.k=v overrides)")
    params = dict(p.split("=", 1) for p in args.param if "=" in p)
    if len(params) != len(args.param):
        raise ValueError("--param takes NAME=VALUE")
    rc = 0
    if not args.collect:
        results = run_sweep(sweep, args.out, only=args.trial, extra=overrides, params=params)
        rc = 3 if results and results[-1]["status"] == "incomplete" else 0
        if args.trial:  # one job of many: `--collect` tabulates once they are done
            return rc
    out = collect(sweep, args.out, args.sweep)
    print(f"{out['finished']} of {out['runs']} runs finished: {out['markdown']}, {out['csv']}, "
          f"{len(out['plots'])} plots; tensorboard --logdir {args.out}")
    with open(out["markdown"]) as f:
        print(f.read())
    return rc


def _demo(args) -> int:
    from speech_jax.demo import CANDIDATES, JUDGE, STAGES, Demo
    overrides: dict[str, list[str]] = {}
    for item in args.set:
        stage, _, override = item.partition(":")
        if stage not in (*dict(STAGES), JUDGE) or not override.startswith("--config."):
            raise ValueError(f"--set takes STAGE:--config.key=value with STAGE one of "
                             f"{[s for s, _ in STAGES] + [JUDGE]}, got {item!r}")
        overrides.setdefault(stage, []).append(override)
    demo = Demo(args.out, minutes=args.minutes, data_dir=args.data_dir, corpus=args.corpus,
                utterances=args.utterances, seed=args.seed, overrides=overrides, whisper=args.whisper,
                speaker_model=args.speaker_model, judge_minutes=args.judge_minutes, speed=args.speed,
                candidates=CANDIDATES if args.candidates is None else args.candidates,
                ctc_guidance=args.ctc_guidance, fm_temperature=args.fm_temperature)
    state = demo.run(stop_after=args.stop_after)
    print({"report": state["steps"].get("report", {}).get("html"),
           "minutes": {k: v["minutes"] for k, v in state["steps"].items()}})
    return 0


def _user_errors() -> tuple[type, ...]:
    """Errors that describe bad input (a corrupt checkpoint, mismatched models): no traceback needed."""
    from data_pipelines.extract import ExtractError
    from speech_jax.demo import DemoError
    from speech_jax.train.checkpoint import CheckpointError
    return ExtractError, CheckpointError, DemoError


def configure_logging():
    """The training loop's progress at INFO, the libraries' chatter at WARNING (scripts share it)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger().setLevel(logging.INFO)  # also when a library's handler came first (basicConfig: no-op)
    for noisy in ("absl", "jax._src", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    from speech_jax.host_memory import configure_from_environment
    configure_from_environment()  # before JAX starts its threads
    configure_logging()
    parser = argparse.ArgumentParser(prog="speech-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="the embedded default end to end: prepare, train all stages, synthesise "
                       "for unseen speakers, evaluate, write a report (resumable)")
    d.add_argument("--out", default="demo", help="directory of the corpus, workdirs, evaluations and report")
    d.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget of this run (0: none)")
    d.add_argument("--data-dir", default=None, help="where the corpus is built (default: OUT/data)")
    d.add_argument("--corpus", default="small",
                   choices=["small", "medium", "many_voices", "varied", "varied_large", "tiny"],
                   help="espeak_tts builder config")
    d.add_argument("--utterances", type=int, default=8, help="test_unseen lines synthesised in each mode")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--stop-after", default=None, help="a step name: stop there (resume later)")
    d.add_argument("--set", action="append", default=[], metavar="STAGE:--config.k=v",
                   help="override a stage's demo config, e.g. ar:--config.train.steps=1000 (repeatable)")
    d.add_argument("--whisper", default=None, help="Whisper checkpoint (name or path): WER [extra 'eval']")
    d.add_argument("--speaker-model", default=None,
                   help="SIM model: 'resemblyzer' [extra 'sim'; the default when installed] or a WavLM x-vector "
                        "checkpoint [extra 'eval']; 'none' for no SIM")
    d.add_argument("--candidates", type=int, default=None, help="AR samples a sentence that synthesis keeps the "
                   "best of, by the tokenizer's reading (default 16; 1: a single sample, the paper's decoding)")
    d.add_argument("--ctc-guidance", type=float, default=None, help="the weight of CTC guidance in the AR's "
                   "sampling (default 0.5 below the long recipe, 0 from it; 0: the paper's sampling)")
    d.add_argument("--fm-temperature", type=float, default=None, help="the scale of flow matching's starting "
                   "noise (default 0.5 below the long recipe, 1 from it: the paper's)")
    d.add_argument("--speed", type=float, default=None,
                   help="this machine's speed against the reference machine the stage schedules are sized for "
                        "(default: measured by timing the tokenizer's steps; 1: the configs' own schedules)")
    d.add_argument("--judge-minutes", type=float, default=None,
                   help="time for training the CTC judge, on top of --minutes (default: its config's); 0: no judge")

    p = sub.add_parser("prepare", help="build a TFDS corpus and its BPE tokenizer")
    from data_pipelines.prepare import DATASETS
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--config", default=None, help="builder config (espeak_tts: tiny | small | medium | many_voices | varied | varied_large)")
    p.add_argument("--manifest", default=None, help="CSV or JSONL with wav_path,text,speaker[,language]")
    p.add_argument("--on-error", default="skip", choices=["skip", "stop"])
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--min-seconds", type=float, default=None,
                   help="manifest: shortest clip kept; shorter ones are bad rows (default 0.25); "
                        "public corpora: the duration filter's lower bound (default 0.5)")
    p.add_argument("--manual-dir", default=None, help="public corpora: the unpacked corpus in its published layout")
    p.add_argument("--max-seconds", type=float, default=None, help="public corpora: longest clip kept (default 30)")
    p.add_argument("--max-clipped", type=float, default=None,
                   help="public corpora: largest fraction of samples at full scale (default 0.001)")
    p.add_argument("--min-quality", type=float, default=None,
                   help="public corpora with a quality score (Emilia's DNSMOS): lowest kept (default: all)")
    p.add_argument("--language", default=None, help="kaldi: the corpus's language code (default 'und')")
    p.add_argument("--no-dedup", action="store_true", help="public corpora: keep utterances whose audio repeats")
    p.add_argument("--beam", default=None, metavar="OPTIONS",
                   help="public corpora: build with Apache Beam [extra 'beam'], given its pipeline options after "
                        "an '=': --beam='--runner=DirectRunner --direct_num_workers=4 "
                        "--direct_running_mode=multi_processing', or a Dataflow / Flink / Spark runner's options")

    t = sub.add_parser("train", help="train one stage; resumes from --workdir")
    t.add_argument("--config", required=True)
    t.add_argument("--workdir", required=True)

    c = sub.add_parser("compile", help="AOT-compile a stage's train step for a TPU topology (or cpu:N): "
                       "per-chip memory, FLOPs, roofline and sharding report")
    c.add_argument("--config", required=True)
    c.add_argument("--topology", required=True, help="v5e:2x2, v5p:4x4x4, v6e:4x4 ... (needs the 'tpu' extra), "
                   "or cpu:N for the host's devices")
    c.add_argument("--chip", default=None, help="hold the step to this chip's HBM and peaks instead of the "
                   "topology's (v5e, v5p, v6e, h100, h200), e.g. for cpu:N")
    c.add_argument("--hbm-fraction", type=float, default=None, help="fail when the step needs more than this "
                   "share of a chip's HBM (default 1; with --fit-batch, the share to fill: default 0.85)")
    c.add_argument("--fit-batch", action="store_true", help="search the largest global batch within --hbm-fraction "
                   "(a few compiles: the memory line through two batches, then checks) and report its step")
    c.add_argument("--rows", type=int, default=40, help="largest tensors listed (0 = all); flagged ones always")
    e = sub.add_parser("extract", help="write 25 Hz tokens (and 50 Hz Flow-VAE latents) for a corpus")
    e.add_argument("--tokenizer", required=True, help="workdir of a trained tokenizer stage")
    e.add_argument("--flow-vae", default=None, help="workdir of a trained flow_vae stage (adds latents)")
    e.add_argument("--dataset", default=None, help="TFDS name/config (default: the tokenizer's corpus)")
    e.add_argument("--data-dir", default=None, help="default: the tokenizer's data.data_dir")
    e.add_argument("--splits", default="train,validation,test_unseen")
    e.add_argument("--tag", default="default", help="name of this extraction (data.extracted in configs)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--shard-size", type=int, default=256,
                   help="records per output shard: the unit of resumption and of work among processes")
    e.add_argument("--latent-dtype", default="float16", choices=["float16", "float32"])
    e.add_argument("--replace-stale", action="store_true",
                   help="features of this tag from other models (or retrained ones) are deleted and redone")

    s = sub.add_parser("synthesize", help="zero-shot (reference only) or one-shot (+ --prompt-text) synthesis, "
                       "or with a saved voice (--voice)")
    s.add_argument("--text", required=True)
    s.add_argument("--reference", default=None, help="audio file of the voice to clone (any rate, mono or stereo)")
    s.add_argument("--voice", default=None,
                   help="a saved voice (.npz, e.g. from speech-jax pvc) instead of --reference")
    s.add_argument("--voice-description", default=None,
                   help='a voice in words, e.g. "a low, slow male voice" (with --t2v) instead of --reference')
    s.add_argument("--t2v", default=None, help="workdir of a trained t2v stage (for --voice-description)")
    s.add_argument("--prompt-text", default=None, help="the reference's transcript: one-shot")
    s.add_argument("--language", default=None,
                   help="the text's language (espeak name, e.g. en, cmn): needed by a model that reads phonemes")
    s.add_argument("--out", required=True, help="output wav")
    s.add_argument("--tokenizer", default=None, help="workdir of the trained tokenizer stage")
    s.add_argument("--ar", default=None, help="workdir of the trained ar stage")
    s.add_argument("--flow-matching", default=None, help="workdir of the trained flow_matching stage")
    s.add_argument("--style", default=None, help="workdir of a trained style stage (LoRA on the AR) in place "
                   "of --ar, or with --bundle the name of one of its styles: speaks in that style")
    s.add_argument("--bundle", default=None, help="a serving bundle (speech-jax export) instead of workdirs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--temperature", type=float, default=None, help="the AR's sampling temperature (default 0.6)")
    s.add_argument("--top-k", type=int, default=None, help="default: 25 (a bundle: the exported value)")
    s.add_argument("--top-p", type=float, default=0.8)
    s.add_argument("--cfg-weight", type=float, default=0.7)
    s.add_argument("--fm-steps", type=int, default=None, help="default: 10 (a bundle: the exported value)")
    s.add_argument("--candidates", type=int, default=1, help=CANDIDATES_HELP)
    s.add_argument("--ctc-guidance", type=float, default=0.0, help=CTC_GUIDANCE_HELP)
    s.add_argument("--ctc-progress", type=float, default=None, help=CTC_PROGRESS_HELP)
    s.add_argument("--fm-temperature", type=float, default=None, help=FM_TEMPERATURE_HELP)
    s.add_argument("--acoustic-prompt", action=argparse.BooleanOptionalAction, default=None,
                   help=ACOUSTIC_PROMPT_HELP)

    pv = sub.add_parser("pvc", help="professional voice cloning: fit a corpus speaker's voice vector for a "
                        "trained AR stage and save it (synthesize --voice)")
    pv.add_argument("--data", required=True, help="data directory of the prepared corpus (the AR stage's)")
    pv.add_argument("--speaker", required=True, help="the corpus speaker id whose voice is fitted")
    pv.add_argument("--ar", required=True, help="workdir of the trained ar stage")
    pv.add_argument("--out", required=True, help="voice file to write (.npz)")
    pv.add_argument("--workdir", required=True, help="the PVC run's checkpoints and metrics (resumable)")
    pv.add_argument("--split", default="test_unseen", help="the corpus split holding the speaker's utterances")
    pv.add_argument("--flow-matching", default=None,
                    help="workdir of the flow matching stage the voice is for: where it trained a speaker encoder "
                         "of its own (model.speaker_encoder=trained), the voice carries that encoder's vector too")
    pv.add_argument("--config", default=None, help="a pvc config (default experiments/pvc/demo.py); "
                    "--config.k=v overrides follow")

    tv = sub.add_parser("t2v", help="text-to-voice: sample a voice for a description from a trained t2v stage "
                        "and save it (synthesize --voice)")
    tv.add_argument("--workdir", required=True, help="workdir of the trained t2v stage")
    tv.add_argument("--description", required=True, help='e.g. "a fast, high pitched female voice speaking french"')
    tv.add_argument("--out", required=True, help="voice file to write (.npz)")
    tv.add_argument("--seed", type=int, default=0, help="another seed: another voice of the same description")
    tv.add_argument("--guidance", type=float, default=0.0,
                    help="classifier-free guidance weight (> 0 follows the description more closely)")

    x = sub.add_parser("export", help="serving bundle: safetensors, configs, BPE model, StableHLO programs")
    x.add_argument("--out", required=True, help="bundle directory to create")
    x.add_argument("--tokenizer", required=True, help="workdir of the trained tokenizer stage")
    x.add_argument("--ar", required=True, help="workdir of the trained ar stage")
    x.add_argument("--flow-matching", required=True, help="workdir of the trained flow_matching stage")
    x.add_argument("--max-new-tokens", type=int, default=None, help="default: the AR stage's data.max_seconds")
    x.add_argument("--top-k", type=int, default=25)
    x.add_argument("--fm-steps", type=int, default=10)
    x.add_argument("--style", action="append", default=[], metavar="NAME=WORKDIR",
                   help="a style stage trained on this AR, saved as its adapters only (repeatable)")

    v = sub.add_parser("validate", help="a trained stage's evaluation on a split, with samples")
    v.add_argument("--workdir", required=True)
    v.add_argument("--split", default=None, help="default: the stage's data.eval_split")
    v.add_argument("--batches", type=int, default=None, help="default: the stage's train.eval_batches")
    v.add_argument("--out", default=None, help="default: WORKDIR/validate/step_N")
    v.add_argument("--step", type=int, default=None, help="default: the newest checkpoint")

    ev = sub.add_parser("evaluate", help="seed-tts-eval: synthesise a meta list, score WER / SIM / MCD-DTW")
    ev.add_argument("--meta", default=None, help="lines utt|prompt_text|prompt_wav|target_text")
    ev.add_argument("--from-corpus", default=None, help="build the meta list from a prepared corpus "
                    "(e.g. espeak_tts/small): prompts and targets from different utterances of a speaker")
    ev.add_argument("--data-dir", default="data")
    ev.add_argument("--split", default="test_unseen")
    ev.add_argument("--speaker", default=None, help="--from-corpus: that speaker's lines only")
    ev.add_argument("--voice", default=None, help="a saved voice (speech-jax pvc) synthesises every line instead "
                    "of its prompt recording (SIM is still against the prompt): give its speaker's lines")
    ev.add_argument("--out", required=True)
    ev.add_argument("--mode", default="zero_shot", choices=["zero_shot", "one_shot"])
    for name in ("tokenizer", "ar", "flow-matching", "bundle"):
        ev.add_argument(f"--{name}", default=None)
    ev.add_argument("--style", default=None, help="a style stage's workdir in place of --ar (or a bundle's style)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--candidates", type=int, default=1, help=CANDIDATES_HELP)
    ev.add_argument("--ctc-guidance", type=float, default=0.0, help=CTC_GUIDANCE_HELP)
    ev.add_argument("--ctc-progress", type=float, default=None, help=CTC_PROGRESS_HELP)
    ev.add_argument("--fm-temperature", type=float, default=None, help=FM_TEMPERATURE_HELP)
    ev.add_argument("--acoustic-prompt", action=argparse.BooleanOptionalAction, default=None,
                    help=ACOUSTIC_PROMPT_HELP)
    ev.add_argument("--limit", type=int, default=None)
    ev.add_argument("--espeak-ground-truth", action="store_true",
                    help="meta utts are <espeak speaker>/<utt>: add MCD-DTW and duration ratio")
    ev.add_argument("--language", default=None, help="language of every line for WER (zh/ja: characters)")
    ev.add_argument("--whisper", default=None, help="Whisper checkpoint (name or path): WER [extra 'eval']")
    ev.add_argument("--speaker-model", default=None,
                    help="SIM model: 'resemblyzer' (offline) [extra 'sim'] or a WavLM x-vector checkpoint "
                         "[extra 'eval']")
    ev.add_argument("--judge", default=None, help="workdir of a trained judge stage: judge CER, an in-domain "
                    "intelligibility proxy (CTC recognizer trained on espeak_tts)")

    sw = sub.add_parser("sweep", help="run an ablation sweep's trials (resumable) and tabulate them",
                        description="Runs every trial x seed of a sweep file in OUT/<run> (finished runs are "
                        "skipped, interrupted ones resume; exit 3 when one stopped early), then writes "
                        "OUT/sweep.md, OUT/sweep.csv, OUT/plots and HParams summaries. Further --config.k=v "
                        "apply to every run, after the sweep's own overrides.")
    sw.add_argument("sweep", help="sweep file, e.g. experiments/sweeps/flow_vae_vs_vae.py")
    sw.add_argument("--out", required=True, help="directory of the runs' workdirs, the table and plots")
    sw.add_argument("--trial", type=int, action="append", default=None, metavar="I",
                    help="run only run I (repeatable; see --list), e.g. one cluster job each; no table")
    sw.add_argument("--collect", action="store_true", help="run nothing: tabulate the finished runs")
    sw.add_argument("--list", action="store_true", help="print the runs (index, trial, seed) and exit")
    sw.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a value the sweep's evaluation commands use (e.g. tokenizer=workdirs/tok)")

    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "demo":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return _demo(args)
        if args.command == "prepare":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return _prepare(args)
        if args.command == "train":
            return _train(args, rest)
        if args.command == "compile":
            return _compile(args, rest)
        if args.command == "sweep":
            return _sweep(args, rest)
        if args.command == "pvc":
            return _pvc(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "extract":
            return _extract(args)
        if args.command == "synthesize":
            return _synthesize(args)
        if args.command == "export":
            return _export(args)
        if args.command == "t2v":
            return _t2v(args)
        if args.command == "validate":
            return _validate(args)
        if args.command == "evaluate":
            return _evaluate(args)
    except (ValueError, FileNotFoundError, *_user_errors()) as e:
        logging.error("%s", e)
        print(f"speech-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
