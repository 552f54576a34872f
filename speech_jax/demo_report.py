"""The demo's report: `OUT/report/report.md` and `report.html` (the same content, the HTML with players).

It reads only what the demo's steps left on disk (the state file, each stage's `metrics.jsonl`, the
evaluations' `results.json` and wavs), so it can be rewritten at any time.
"""
from __future__ import annotations

import datetime
import html
import json
import os
import shutil

from speech_jax.audio.io import load_audio
from speech_jax.eval import artifacts

# Curves per stage: the keys drawn when the run logged them.
CURVES = {
    "tokenizer": ("loss", "mel_loss", "ctc_loss", "ctc_cer", "vq_loss"),
    "flow_vae": ("mel_loss", "stft_loss", "phase_loss", "kl", "d_loss", "g_adv", "g_fm"),
    "ar": ("loss", "token_accuracy"),
    "flow_matching": ("loss",),
    "judge": ("loss",),
}
STAGE_TITLES = {"tokenizer": "audio tokenizer (25 Hz, CTC-supervised VQ)", "flow_vae": "Flow-VAE",
                "ar": "AR transformer + speaker encoder", "flow_matching": "latent flow matching (DiT)",
                "judge": "judge: CTC phoneme recognizer (not part of the TTS; outside the budget)"}
METRICS = (("mcd", "MCD-DTW (dB) ↓", "{:.2f}"), ("duration_ratio", "duration ratio (→ 1)", "{:.3f}"),
           ("rtf", "real-time factor", "{:.3f}"), ("wer", "WER", "{:.2%}"), ("judge_cer", "judge CER ↓", "{:.2%}"),
           ("sim", "SIM", "{:.3f}"), ("voiced", "voiced frames", "{:.2f}"),
           ("f0_error", "F0 vs prompt (semitones) ↓", "{:.2f}"))
# The GAN's terms, which a run whose discriminators never started logs as zeros.
ADVERSARIAL = ("d_loss", "g_adv", "g_fm")
# Reference rows under the modes: what espeak's own rendering scores (the ceiling of SIM, the judge's own
# error level, its voicing and pitch) and what another speaker's voice scores against the prompt (the floor of SIM).
REFERENCES = (("ground truth (espeak)", {"judge_cer": "gt_judge_cer", "sim": "gt_sim", "voiced": "gt_voiced",
                                         "f0_error": "gt_f0_error"}),
              ("another speaker (SIM floor)", {"sim": "sim_other_speaker"}))
SAMPLES = 4  # utterances shown with players and mel plots


def _fmt(value, fmt) -> str:
    return "–" if value is None else fmt.format(value)


def _stage_rows(demo) -> list[list[str]]:
    rows = []
    for stage, title in STAGE_TITLES.items():
        info = demo.state["steps"].get(stage)
        if info is None or "skipped" in info:
            rows.append([title, info["skipped"] if info else "not trained", "", "", ""])
            continue
        steps = f"{info['step']} / {info['planned_steps']}" + (" (time share spent)" if info["time_budget_reached"]
                                                                else "")
        final = ", ".join(f"{k} {info['final'][k]:.3f}" for k in _shown(stage, info) if k in info["final"])
        rows.append([title, _config_name(info["config"]), steps, f"{info['minutes']:.1f}", final])
    return rows


def _shown(stage: str, info: dict | None) -> tuple[str, ...]:
    """The stage's curve keys, less the GAN's terms where its discriminators never ran (zeros, not losses)."""
    gan_off = info is not None and info.get("final", {}).get("disc_active") == 0.0
    return tuple(k for k in CURVES[stage] if not (gan_off and k in ADVERSARIAL))


def _config_name(path: str) -> str:
    """A config inside the source tree by its path there (experiments/...), any other by its file name."""
    from speech_jax.demo import ROOT
    rel = os.path.relpath(path, ROOT)
    return os.path.basename(path) if rel.startswith("..") else rel


def _curves(demo, fig_dir: str) -> dict[str, str]:
    out = {}
    for stage in CURVES:
        path = os.path.join(demo.workdirs[stage], "metrics.jsonl")
        if os.path.exists(path):
            keys = _shown(stage, demo.state["steps"].get(stage))
            try:
                out[stage] = artifacts.save_loss_curves(os.path.join(fig_dir, f"curves_{stage}.png"), path, keys,
                                                       with_eval=True)
            except ValueError:  # nothing logged yet
                pass
    return out


def _results(demo) -> dict[str, dict]:
    out = {}
    for mode in ("zero_shot", "one_shot"):
        path = os.path.join(demo.out, "eval", mode, "results.json")
        if os.path.exists(path):
            with open(path) as f:
                out[mode] = json.load(f)
    return out


def _samples(demo, results: dict, report_dir: str) -> list[dict]:
    """The first utterances synthesised in every mode: their audio copied beside the report, a mel plot
    of the espeak ground truth against each mode's output."""
    from speech_jax.eval.seed_tts import espeak_ground_truth, read_meta
    if not results:
        return []
    by_mode = {mode: {u["utt"]: u for u in r["utterances"] if u["wav"]} for mode, r in results.items()}
    lines = {line.utt: line for line in read_meta(next(iter(results.values()))["settings"]["meta"])}
    utts = [utt for utt in lines if all(utt in done for done in by_mode.values())][:SAMPLES]
    audio_dir = os.path.join(report_dir, "audio")
    samples = []
    for i, utt in enumerate(utts):
        line, name = lines[utt], f"{i:02d}"
        files = {"prompt": _copy(line.prompt_wav, audio_dir, f"{name}_prompt.wav")}
        wavs = {}
        for mode in by_mode:
            src = os.path.join(demo.out, "eval", mode, by_mode[mode][utt]["wav"])
            files[mode] = _copy(src, audio_dir, f"{name}_{mode}.wav")
            wavs[mode.replace("_", "-")], sr = load_audio(src)
        truth, _ = espeak_ground_truth(sr)(utt, line.target_text)
        files["ground_truth"] = artifacts.save_wavs(audio_dir, {f"{name}_ground_truth": truth}, sr)[0]
        mel = artifacts.save_mel_comparison(os.path.join(report_dir, "figures", f"mel_{name}.png"), truth, wavs,
                                            sr, title=utt, reference_label="espeak ground truth")
        samples.append(dict(utt=utt, text=line.target_text, prompt_text=line.prompt_text, files=files, mel=mel))
    return samples


def _copy(src: str, directory: str, name: str) -> str:
    os.makedirs(directory, exist_ok=True)
    dst = os.path.join(directory, name)
    shutil.copyfile(src, dst)
    return dst


def _judge_line(judge: dict | None) -> str | None:
    """The judge's time, which the budget does not count: trained here, reused, or skipped."""
    if judge is None:
        return None
    line = "The judge (CTC phoneme recognizer, for the judge CER) is not part of the TTS system"
    if "skipped" in judge:
        return f"{line} and was not trained ({judge['skipped']})."
    prepared = judge.get("prepare_minutes", 0.0)
    corpus = f", {prepared:.1f} of them preparing its corpus" if prepared >= 0.05 else ""
    if judge.get("reused"):
        return (f"{line}: a judge trained before (step {judge['step']}) was reused; "
                f"{judge['minutes']:.1f} minutes outside the budget{corpus}.")
    return f"{line} and trained outside the budget: {judge['minutes']:.1f} minutes{corpus}."


def _budget(demo) -> str:
    """This invocation's budget, and the long recipe's schedules when the first invocation set them."""
    from speech_jax.demo import CONFIG_MINUTES
    text = f"Budget of this invocation --minutes {demo.minutes:g}"
    scale = demo.state.get("step_scale", 1.0)
    if scale > 1:  # a demo directory begun before `first_minutes` was kept: its scale was the budget over 30
        first = demo.state.get("first_minutes", scale * CONFIG_MINUTES)
        speed = demo.state.get("speed", 1.0)
        on = f" on a machine {speed:g}x the reference's speed" if speed != 1 else ""
        text += f"; schedules {scale:.3g}x the demo configs' (the first invocation's --minutes {first:g}{on})"
    return text


def _synthesis(steps: dict) -> str:
    n = steps.get("evaluate", {}).get("candidates", 1)
    w = steps.get("evaluate", {}).get("ctc_guidance", 0.0)
    text = (f" Synthesis keeps the best of {n} AR samples a sentence, as the tokenizer's CTC head reads them."
            if n > 1 else "")
    t = steps.get("evaluate", {}).get("fm_temperature", 1.0)
    text += f" The AR samples under CTC guidance of weight {w:g} (the same head steers each step)." if w else ""
    return text + (f" Flow matching starts from noise scaled by {t:g}." if t != 1 else "")


def write_report(demo) -> dict:
    from speech_jax.demo import machine
    report_dir = os.path.join(demo.out, "report")
    fig_dir = os.path.join(report_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    curves = _curves(demo, fig_dir)
    results = _results(demo)
    samples = _samples(demo, results, report_dir)
    steps = demo.state["steps"]
    from speech_jax.demo import JUDGE
    minutes = {k: v["minutes"] for k, v in steps.items() if k not in ("report", JUDGE)}
    if demo.state.get("speed_minutes"):  # timing the machine's speed, after prepare
        minutes = dict(list(minutes.items())[:1] + [("timing", demo.state["speed_minutes"])] + list(minutes.items())[1:])
    total = sum(minutes.values())
    per_step = ", ".join(f"{k} {v:.1f}" for k, v in minutes.items())
    judge = steps.get(JUDGE)
    context = dict(
        title=f"speech_jax demo: espeak_tts/{demo.corpus}",
        intro=(f"{datetime.date.today().isoformat()} on {machine()}. {_budget(demo)}; the steps took {total:.1f} "
               f"minutes in all, over every invocation ({per_step})." + _synthesis(steps)),
        judge=_judge_line(judge),
        caveat=("Every stage trained for minutes on a CPU, far from convergence: expect a rough spectral "
                "envelope and rhythm long before voicing or words. The numbers measure the pipeline at this budget, "
                "not the architecture; train the `small`/`base` configs for the real thing."),
        stages=_stage_rows(demo),
        curves={stage: os.path.relpath(p, report_dir) for stage, p in curves.items()},
        results=results,
        samples=samples,
        report_dir=report_dir,
    )
    md = os.path.join(report_dir, "report.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write(_markdown(context))
    page = os.path.join(report_dir, "report.html")
    with open(page, "w", encoding="utf-8") as f:
        f.write(_html(context))
    return {"markdown": md, "html": page}


def _metric_rows(results: dict) -> list[list[str]]:
    rows = []
    for mode, r in results.items():
        counts = r["counts"]
        rows.append([mode.replace("_", "-"), f"{counts['synthesized']} / {counts['lines']}"]
                    + [_fmt(r["means"].get(key), fmt) for key, _, fmt in METRICS])
    if results:  # both modes score the same lines' ground truth and prompts: the first one's figures
        means = next(iter(results.values()))["means"]
        for label, keys in REFERENCES:
            if any(means.get(k) is not None for k in keys.values()):
                rows.append([label, ""] + [_fmt(means.get(keys[key]), fmt) if key in keys else ""
                                           for key, _, fmt in METRICS])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


STAGE_HEADER = ["stage", "config", "steps", "minutes", "final training losses"]
METRIC_HEADER = ["mode", "synthesised"] + [label for _, label, _ in METRICS]


def _markdown(c: dict) -> str:
    rel = lambda p: os.path.relpath(p, c["report_dir"])  # noqa: E731
    out = [f"# {c['title']}", "", c["intro"], ""] + ([c["judge"], ""] if c["judge"] else [])
    out += [f"> {c['caveat']}", "", "## Training", ""]
    out += _table(STAGE_HEADER, c["stages"]) + [""]
    out += [f"![{stage} curves]({path})" for stage, path in c["curves"].items()] + [""]
    out += ["## Unseen speakers (test_unseen)", "",
            "Each line: a prompt utterance of a speaker never seen in training and another sentence to say in "
            "that voice; zero-shot gets only the prompt audio (the AR its speaker vector, flow matching also its "
            "tokens and latent), one-shot also its transcript (in the AR's context). MCD-DTW and the "
            "duration ratio compare with espeak's rendering of the target sentence in the same voice. Judge CER: "
            "the phoneme error rate of a CTC recognizer trained on espeak_tts (an in-domain proxy for "
            "intelligibility, not Whisper's WER); SIM: cosine of speaker embeddings of output and prompt.", ""]
    out += _table(METRIC_HEADER, _metric_rows(c["results"])) + [""]
    for s in c["samples"]:
        out += [f"### {s['utt']}", "", f"Target: “{s['text']}” — prompt: “{s['prompt_text']}”", "",
                " · ".join(f"[{k.replace('_', ' ')}]({rel(p)})" for k, p in s["files"].items()), "",
                f"![mel {s['utt']}]({rel(s['mel'])})", ""]
    return "\n".join(out)


def _html(c: dict) -> str:
    e = html.escape
    rel = lambda p: e(os.path.relpath(p, c["report_dir"]))  # noqa: E731

    def table(header, rows):
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    parts = [f"<h1>{e(c['title'])}</h1>", f"<p>{e(c['intro'])}</p>"]
    parts += [f"<p>{e(c['judge'])}</p>"] if c["judge"] else []
    parts += [f"<blockquote>{e(c['caveat'])}</blockquote>",
              "<h2>Training</h2>", table(STAGE_HEADER, c["stages"])]
    parts += [f"<h3>{e(STAGE_TITLES[s])}</h3><img src='{e(p)}' alt='{e(s)} curves'>" for s, p in c["curves"].items()]
    parts += ["<h2>Unseen speakers (test_unseen)</h2>", table(METRIC_HEADER, _metric_rows(c["results"]))]
    for s in c["samples"]:
        players = "".join(f"<figure><figcaption>{e(k.replace('_', ' '))}</figcaption>"
                          f"<audio controls src='{rel(p)}'></audio></figure>" for k, p in s["files"].items())
        parts += [f"<h3>{e(s['utt'])}</h3>",
                  f"<p>Target: “{e(s['text'])}” — prompt: “{e(s['prompt_text'])}”</p>",
                  f"<div class='players'>{players}</div>", f"<img src='{rel(s['mel'])}' alt='mel'>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}.players{display:flex;flex-wrap:wrap}"
             "figure{margin:4px 12px 4px 0}blockquote{color:#555}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(c['title'])}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
