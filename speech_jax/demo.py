"""`speech-jax demo`: the embedded default end to end, within a wall-clock budget.

    prepare espeak_tts -> train tokenizer -> train Flow-VAE -> extract tokens and latents
    -> train AR + speaker encoder -> train flow matching -> train the CTC judge (outside the budget)
    -> synthesise zero-shot and one-shot for unseen speakers, score against espeak's ground truth -> report

Every step records itself in `OUT/demo_state.json` when it completes; a second run skips what is done
and resumes an interrupted training stage from its last checkpoint. The training stages share what the
budget leaves after the other steps, by weight, each one's share decided when it starts (so time a
stage leaves unused goes to the next); a stage stops at the end of its schedule or when its share is
spent (`train.max_minutes`), whichever comes first. The configs' `train.steps` are sized for 30 minutes; a
longer budget lengthens every stage's schedule in proportion (`step_scale`), so each learning rate still decays
within its share. Below the long recipe the stages whose schedules depend on their length (all but the
Flow-VAE's) then fit that length to their share after their first 40 steps (`train.fit_schedule_at`,
experiments/demo/__init__.py), timed on this machine. A config whose `get_config` takes `step_scale` may also
size its model by it (flow matching's DiT is wider from two hours on: the long recipe, `--minutes 240`), and
those configs cost 50 minutes per unit of the scale, so from there on the scale is the budget over 50 and the
shares are the stages' measured costs; each of its stages then times 60 of its own steps in a throwaway run
before it starts and fits its schedule to what its share holds at that speed (`fitted_steps`, kept for
resumes). Those minutes are the reference machine's: before its first stage the demo times its tokenizer's
steps on this machine (`measure_speed`), and a machine twice as fast gets the schedules (and models) of twice
the budget. That scale is fixed by the first invocation and kept by the ones that resume it, whatever their
`--minutes`.

The judge (a CTC phoneme recogniser, `experiments/demo/judge.py`) is no part of the TTS system: it
trains after the four stages on its own time (`judge_minutes`, default its config's `train.max_minutes`),
which the budget does not count, and scores the synthesis and espeak's ground truth alike. A judge config
with `own_corpus` set keeps the espeak corpus it names (more voices to generalise from): prepared beside the
demo's, trained on without ever hearing the demo's test_unseen voices. Without
Whisper it is the demo's intelligibility figure; SIM comes from Resemblyzer when it is installed.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import statistics
import time

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE = "demo_state.json"
XLA_CACHE = "xla_cache"
# Share of the training time per stage: what each stage's schedule costs at the configs' step counts (reference
# minutes, measured in an emulated reference run: tokenizer 8.5, Flow-VAE 8.7, AR 5.6 on packed rows, flow matching
# 4.4), so that the four schedules end within the 30 minutes with their learning rates decayed. The earlier fixed
# shares (AR 33 %) left the AR and flow matching minutes they could not use (3.3 of 17.6 in the emulation) while
# the tokenizer and Flow-VAE stopped at 83 % and 67 % of theirs (docs/what_limits_quality.md, "The 30-minute
# demo with the 64-channel latent, and shares by cost again"). What a stage leaves goes to the stages after it.
STAGES = (("tokenizer", 0.31), ("flow_vae", 0.32), ("ar", 0.21), ("flow_matching", 0.16))
# The long recipe's configs (LONG_RECIPE_FROM_SCALE on: the larger AR, the wide DiT) cost more per unit of
# step_scale than the 30-minute demo's: reference minutes per unit on espeak_tts/varied_large (2-core CPU, the
# AR's evaluations every 700 steps included), as the probe times them. Shared by these costs, the four
# schedules end together; at the 30-minute demo's weights, 195 minutes left flow matching 57 % of its schedule.
# Raised twice by what runs' stages fell short of their schedules: a 115-minute run (old probe) and a 92-minute
# run on another machine (steady probe: tokenizer 88.5 %, Flow-VAE 81.5 %, AR 84 %, flow matching 74 % of 8.6,
# 8.6, 12.0, 9.8). Machines differ in what each stage costs against the tokenizer's steps (flow matching 96 % of
# its schedule on the first, 74 % on the second), so these are the larger (docs/what_limits_quality.md), and each
# stage's schedule is now fitted to its share at its own speed (SCHEDULE_FILL).
LONG_STAGES = (("tokenizer", 9.7), ("flow_vae", 10.6), ("ar", 14.3), ("flow_matching", 13.3))
JUDGE = "judge"
STEPS = ("prepare", "tokenizer", "flow_vae", "extract", "ar", "flow_matching", JUDGE, "evaluate", "report")
MODES = ("zero_shot", "one_shot")
# The demo synthesises the best of this many AR samples a sentence (the tokenizer's CTC reading picks one;
# `Synthesizer.synthesize(candidates=...)`): on 24 unseen lines of the 30-minute demo, judge CER 0.557 against
# 0.652 for one sample (docs/what_limits_quality.md, "Best of n"), and with every schedule ended 0.611 against
# 0.634 for the best of 16 (two seeds; the best of 64 gained nothing more). Under CTC guidance (below) the best of
# 16 reads as the best of 32 (D34's stages, 24 lines, two seeds: 0.386 / 0.377 against 0.390 / 0.376) at a real-time
# factor of 0.31-0.40 against 0.53-0.55, so 16; the long recipe was measured at 16 too.
CANDIDATES = 16
# And, below the long recipe, samples each under CTC guidance of this weight (`Synthesizer.synthesize(ctc_guidance=
# ...)`): the same head steers every step toward codes that continue the text, judge CER 0.36-0.39 against
# 0.54-0.56 on the same stages (docs/what_limits_quality.md, "CTC guidance"). The long recipe's AR reads better
# without it.
CTC_GUIDANCE = 0.5
# And flow matching starts from noise of this scale (`Synthesizer.synthesize(fm_temperature=...)`): with the
# Flow-VAE's phase losses at 30, the clones voice 0.31-0.38 of their frames against 0.20 (ground truth 0.69) at
# the same words (docs/what_limits_quality.md, "Voicing: flow matching's starting noise and the phase weight").
# The long recipe was measured at 1.
FM_TEMPERATURE = 0.5
# Minutes held back from training for what follows it, on the reference machine, divided by this machine's speed
# (held back and unused, they are the last stage's minutes lost). Measured on espeak_tts/small 1.0.0, 2.7k
# utterances: extract 0.74 there, 0.31 on a machine of 1.7x; evaluating 8 + 8 utterances at the best of 16 with
# compiling, and the report, 0.52 there (0.89 reference minutes; the best of 32 adds about a sixth); rounded up.
EXTRACT_MINUTES = 0.9
EVALUATE_MINUTES_PER_UTTERANCE = 0.04
EVALUATE_MINUTES_FIXED = 0.6
# The budget the demo configs' `train.steps` are sized for on a 2-core CPU; the long recipe's, per unit of
# step_scale: its four stages' 48 minutes and the steps around them.
CONFIG_MINUTES = 30.0
LONG_CONFIG_MINUTES = 50.0
# The reference machine those minutes are measured on, in the 30-minute demo tokenizer's seconds a step (after
# compiling): the configs were sized on a 2-core CPU where it took 0.33 s at 16 rows (7.2 minutes for 1230 steps,
# compiling and checkpoints included); a later 2-core CPU took 0.17-0.19 s, and 0.30 s against 0.57 s for the AR,
# 0.19 against 0.37 for the Flow-VAE (flow matching 0.075 against 0.12): about one ratio, so one stage's steps
# time them all. Its 8 rows now take 0.54 of 16's time (0.079 s against 0.147 on a 1.7x machine).
REFERENCE_STEP_SECONDS = 0.18
# Timed in six intervals of 10 steps. The first interval holds the other buckets' first steps, which compile
# (18 s over 9 steps on `varied_large`), and the second can still be slow (0.27 s against 0.18-0.20 from the
# third on, where the run itself then kept 0.17-0.23): the speed comes from the median of the last four. With
# three intervals the median was the second: the long recipe's probe read 1.21x where the steady steps read 1.89x.
PROBE_INTERVAL, PROBE_STEPS = 10, 60
PROBE_WARMUP_INTERVALS = 2
SPEED_PROBE = "speed"  # the state's key for the speed probe's seconds a step
# The long recipe fits each stage's schedule to its share at its own probed speed, because machines differ in
# what each stage costs against the tokenizer's steps (flow matching took 96 % of its share on one machine and
# would have needed 135 % on another). Of the share, this much is steps at the probed speed: over a 92-minute
# run the tokenizer averaged 0.202 s a step against its probe's steady 0.175 (data, checkpoints, slower
# stretches; 0.87), and what a stage leaves goes to the next one's share.
SCHEDULE_FILL = 0.85


def long_recipe_from_scale() -> float:
    """The step_scale from which the demo's configs are the long recipe's (experiments/demo/__init__.py)."""
    from speech_jax.config import load_python_file
    return load_python_file(os.path.join(ROOT, "experiments", "demo", "__init__.py"), "_demo_configs",
                            (ROOT,)).LONG_RECIPE_FROM_SCALE


def step_scale(minutes: float) -> float:
    """How many times the demo configs' schedules a budget of `minutes` holds: the budget over what one unit
    costs, the 30-minute demo's configs below the long recipe and the long recipe's from it on."""
    scale, long_from = max(1.0, minutes / CONFIG_MINUTES), long_recipe_from_scale()
    return scale if scale < long_from else max(long_from, minutes / LONG_CONFIG_MINUTES)


class DemoError(RuntimeError):
    """The demo cannot go on (a missing source checkout, a budget too small to train anything)."""


def steady_step_seconds(interval_seconds: list[float]) -> float:
    """The probe's seconds a step: the median of its logged intervals' step times after the warm-up ones
    (all of them when there are no more)."""
    if not interval_seconds:
        raise DemoError("timing the tokenizer's steps gave no step times: give --speed")
    return statistics.median(interval_seconds[PROBE_WARMUP_INTERVALS:] or interval_seconds)


def _logged_step_seconds(workdir: str) -> list[float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r["step_time"] for r in rows if "step_time" in r]


def default_config_files() -> dict[str, str]:
    files = {stage: os.path.join(ROOT, "experiments", "demo", f"{stage}.py") for stage in (*dict(STAGES), JUDGE)}
    missing = [p for p in files.values() if not os.path.isfile(p)]
    if missing:
        raise DemoError(f"the demo's configs are not here ({missing[0]}): run it from a source checkout "
                        "installed with `pip install -e .`")
    return files


class Demo:
    """One demo directory: `data/` (unless data_dir is given), `workdirs/<stage>`, `eval/<mode>`, `report/`.

    minutes: the budget of this invocation (0: none; each stage trains its config's `train.steps`).
    corpus: the espeak_tts builder config (`small`, or `tiny` for a quick check).
    config_files / overrides: per stage, the config and `--config.k=v` overrides applied on top.
    utterances: how many test_unseen prompt/target pairs are synthesised in each mode.
    whisper / speaker_model: checkpoints for WER and SIM (the optional extra `eval`), or speaker_model
    "resemblyzer" (extra `sim`; the default when installed, "none" for no SIM); MCD-DTW and duration
    against espeak's ground truth are always scored.
    judge_minutes: the judge's training time, outside `minutes` (None: its config's; 0: no judge).
    candidates: AR samples a sentence that synthesis picks the best of (1: the paper's single sample).
    ctc_guidance: the weight of CTC guidance in the AR's sampling (0: the paper's sampling; None: CTC_GUIDANCE
    below the long recipe, 0 from it).
    fm_temperature: the scale of flow matching's starting noise in synthesis (None: FM_TEMPERATURE below the
    long recipe, 1 from it, the paper's).
    speed: this machine's speed against the reference machine the configs' schedules are sized for (None:
    measured by `measure_speed` when there is a budget; 1: the configs' own schedules, e.g. to repeat a run).
    """

    def __init__(self, out: str, *, minutes: float = 30.0, data_dir: str | None = None, corpus: str = "small",
                 utterances: int = 8, seed: int = 0, config_files: dict[str, str] | None = None,
                 overrides: dict[str, list[str]] | None = None, whisper: str | None = None,
                 speaker_model: str | None = None, judge_minutes: float | None = None,
                 speed: float | None = None, candidates: int = CANDIDATES,
                 ctc_guidance: float | None = None, fm_temperature: float | None = None):
        if minutes < 0:
            raise ValueError(f"minutes must be >= 0 (0 = no budget), got {minutes}")
        if utterances < 1:
            raise ValueError(f"utterances must be >= 1, got {utterances}")
        if judge_minutes is not None and judge_minutes < 0:
            raise ValueError(f"judge_minutes must be >= 0 (0 = no judge), got {judge_minutes}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        if ctc_guidance is not None and not ctc_guidance >= 0:
            raise ValueError(f"ctc_guidance must be >= 0 (0 = none), got {ctc_guidance}")
        if fm_temperature is not None and not fm_temperature >= 0:
            raise ValueError(f"fm_temperature must be >= 0, got {fm_temperature}")
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.out = os.path.abspath(out)
        self.data_dir = os.path.abspath(data_dir or os.path.join(self.out, "data"))
        self.minutes, self.corpus, self.utterances, self.seed = float(minutes), corpus, int(utterances), seed
        self.config_files = dict(config_files or default_config_files())
        self.config_files.setdefault(JUDGE, os.path.join(ROOT, "experiments", "demo", f"{JUDGE}.py"))
        self.overrides = overrides or {}
        self.whisper, self.speaker_model, self.judge_minutes = whisper, speaker_model, judge_minutes
        self.speed, self.candidates, self.ctc_guidance = speed, int(candidates), ctc_guidance
        self._fm_temperature = fm_temperature
        self.workdirs = {stage: os.path.join(self.out, "workdirs", stage) for stage in (*dict(STAGES), JUDGE)}
        self.state = self._load_state()
        self.deadline = None
        self.begun: dict[str, float] = {}  # stage -> the deadline of a share begun early (the speed probe's)

    # --- state ---------------------------------------------------------------------------------------

    def _load_state(self) -> dict:
        path = os.path.join(self.out, STATE)
        if not os.path.exists(path):
            return {"steps": {}}
        try:
            with open(path) as f:
                state = json.load(f)
        except json.JSONDecodeError as e:
            raise DemoError(f"{path} is not JSON ({e}); delete it to start the demo over") from e
        if state.get("corpus", self.corpus) != self.corpus:
            raise DemoError(f"{self.out} holds a demo of espeak_tts/{state['corpus']}, not {self.corpus}: "
                            "give another --out")
        return state

    def _save_state(self):
        os.makedirs(self.out, exist_ok=True)
        self.state["corpus"] = self.corpus
        path = os.path.join(self.out, STATE)
        with open(path + ".tmp", "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(path + ".tmp", path)

    @property
    def long_recipe(self) -> bool:
        return self.state.get("step_scale", 1.0) >= long_recipe_from_scale()

    @property
    def guidance(self) -> float:
        """The CTC guidance synthesis samples under."""
        if self.ctc_guidance is not None:
            return float(self.ctc_guidance)
        return 0.0 if self.long_recipe else CTC_GUIDANCE

    @property
    def fm_temperature(self) -> float:
        """The scale of flow matching's starting noise in synthesis."""
        if self._fm_temperature is not None:
            return float(self._fm_temperature)
        return 1.0 if self.long_recipe else FM_TEMPERATURE

    def done(self, step: str) -> bool:
        return step in self.state["steps"]

    def _add_partial(self, name: str, seconds: float):
        partial = self.state.setdefault("partial_minutes", {})
        partial[name] = round(partial.get(name, 0.0) + seconds / 60, 3)
        self._save_state()

    def _record(self, name: str, seconds: float, info: dict):
        self.state["steps"][name] = dict(info, minutes=round(seconds / 60, 3))
        self._save_state()

    # --- budget --------------------------------------------------------------------------------------

    def _minutes_left(self) -> float:
        return (self.deadline - time.monotonic()) / 60

    def _reserved_minutes(self) -> float:
        """What the steps after training need on this machine, of those not yet done."""
        reserve = 0.0
        if not self.done("extract"):
            reserve += EXTRACT_MINUTES
        if not self.done("evaluate"):
            reserve += EVALUATE_MINUTES_FIXED + EVALUATE_MINUTES_PER_UTTERANCE * self.utterances * len(MODES)
        return reserve / self.state.get("speed", self.speed or 1.0)

    def _stage_minutes(self, stage: str) -> float:
        """This stage's share of the training time left (0: no budget)."""
        if not self.minutes:
            return 0.0
        stages = LONG_STAGES if self.long_recipe else STAGES
        pending = [w for s, w in stages if not self.done(s)]
        weight = dict(stages)[stage]
        share = (self._minutes_left() - self._reserved_minutes()) * weight / sum(pending)
        if share < 0.5:
            raise DemoError(f"{self._minutes_left():.1f} minutes are left of --minutes {self.minutes:g}, "
                            f"too few to train {stage}: run again (finished steps are kept) or raise --minutes")
        return share

    # --- steps ---------------------------------------------------------------------------------------

    def run(self, stop_after: str | None = None) -> dict:
        """Runs every step not yet done (through `stop_after`, when given); returns the state."""
        if stop_after is not None and stop_after not in STEPS:
            raise ValueError(f"stop_after must be one of {STEPS}, got {stop_after!r}")
        self.deadline = time.monotonic() + 60 * self.minutes if self.minutes else None
        actions = {"prepare": self.prepare, "extract": self.extract, JUDGE: self.train_judge,
                   "evaluate": self.evaluate, "report": self.report,
                   **{s: (lambda s=s: self.train(s)) for s, _ in STAGES}}
        for step in STEPS:
            if self.done(step) and step != "report":  # the report is always rewritten
                log.info("demo: %s already done", step)
            else:
                log.info("demo: %s", step)
                t = time.monotonic()
                try:
                    info = actions[step]() or {}
                except BaseException:  # interrupted: its time so far counts when a later run finishes it
                    self._add_partial(step, time.monotonic() - t)
                    raise
                self._record(step, time.monotonic() - t + 60 * self.state.get("partial_minutes", {}).pop(step, 0.0),
                             info)
                if step == JUDGE and self.deadline is not None:  # the judge's time is not the budget's
                    self.deadline += time.monotonic() - t
            if step == "prepare" and "step_scale" not in self.state:
                self._fix_schedules()
            if step == stop_after:
                break
        return self.state

    def _fix_schedules(self):
        """The schedules' scale for this demo directory, from the first invocation's budget in the reference
        machine's minutes; kept by every later invocation."""
        t = time.monotonic()
        measured = self.speed is None and bool(self.minutes)
        speed = self.measure_speed() if measured else (self.speed or 1.0)
        self.state.update(step_scale=step_scale(self.minutes * speed), first_minutes=self.minutes,
                          speed=round(speed, 3))
        seconds = time.monotonic() - t
        if measured and self.long_recipe:  # its tokenizer is another config: the probe's steps are dropped
            self.begun.pop("tokenizer", None)
            shutil.rmtree(self.workdirs["tokenizer"], ignore_errors=True)
            self.state["speed_minutes"] = round(seconds / 60, 3)
        elif measured:  # the probe's steps were the tokenizer's first: so is their time
            self._add_partial("tokenizer", seconds)
        self._save_state()
        log.info("demo: this machine runs %.2fx the reference's speed: schedules %.3gx the configs'",
                 speed, self.state["step_scale"])

    def measure_speed(self) -> float:
        """This machine's speed against the reference machine: the tokenizer's seconds a step there
        (`REFERENCE_STEP_SECONDS`) over its steady seconds here, timed over the first `PROBE_STEPS` steps of
        the 30-minute demo's tokenizer trained in its share of the budget (no scale is fixed yet). Below the
        long recipe the tokenizer goes on from them (its schedule already fitted to its share), so timing
        costs nothing; the long recipe's tokenizer, another config, starts afresh."""
        probes = self.state.setdefault("probe_step_seconds", {})
        if SPEED_PROBE not in probes:
            from speech_jax.train.loop import train
            workdir = self.workdirs["tokenizer"]
            shutil.rmtree(workdir, ignore_errors=True)  # an interrupted probe's steps: timed again
            minutes = self._stage_minutes("tokenizer")
            self.begun["tokenizer"] = time.monotonic() + 60 * minutes
            config = self.stage_config("tokenizer", max_minutes=minutes)
            config.train.update(stop_at_step=PROBE_STEPS, log_every=PROBE_INTERVAL)
            train(config, workdir)
            probes[SPEED_PROBE] = round(steady_step_seconds(_logged_step_seconds(workdir)), 5)
            self._save_state()
        return REFERENCE_STEP_SECONDS / probes[SPEED_PROBE]

    def probe_step_seconds(self, stage: str) -> float:
        """The long recipe's stage's steady seconds a step on this machine at its scale, timed over
        `PROBE_STEPS` steps of a throwaway run; kept in the state under the stage's name, so a resumed demo
        times nothing twice."""
        probes = self.state.setdefault("probe_step_seconds", {})
        if stage not in probes:
            import tempfile

            from speech_jax.train.loop import train
            config = self.stage_config(stage, max_minutes=0.0)
            config.train.update(steps=PROBE_STEPS, log_every=PROBE_INTERVAL, eval_every=0, ckpt_every=0,
                                keep_checkpoints=1)
            with tempfile.TemporaryDirectory(dir=self.out) as workdir:
                train(config, workdir)
                probes[stage] = round(steady_step_seconds(_logged_step_seconds(workdir)), 5)
            self._save_state()
        return probes[stage]

    def fitted_steps(self, stage: str, minutes: float) -> int:
        """The long recipe's schedule for a stage: as many steps as its share holds at its own probed speed
        (`SCHEDULE_FILL` of it: data, checkpoints and slower stretches), fixed when it first starts and kept
        by every resumed run (the learning rate's schedule must not change under a checkpoint)."""
        fitted = self.state.setdefault("fitted_steps", {})
        if stage not in fitted:
            fitted[stage] = max(1, int(minutes * 60 * SCHEDULE_FILL / self.probe_step_seconds(stage)))
            self._save_state()
        return fitted[stage]

    def prepare(self) -> dict:
        from data_pipelines.prepare import prepare
        out = prepare("espeak_tts", self.data_dir, config=self.corpus)
        self.state["corpus_name"], self.state["bpe_model"] = out["name"], out["bpe_model"]
        return {"splits": out["splits"]}

    def stage_config(self, stage: str, max_minutes: float | None = 0.0):
        """The stage's config for this demo; `max_minutes` None keeps the config's own time limit."""
        from speech_jax.config import apply_overrides, load_config
        # A config may size its model by the budget (the long recipe's flow matching); every stage's steps scale.
        config = load_config(self.config_files[stage], step_scale=self.state.get("step_scale", 1.0))
        judge_corpus = self._judge_corpus(config) if stage == JUDGE else None
        config.data.name = self.state["corpus_name"]
        config.data.data_dir = self.data_dir
        config.data.bpe_model = self.state["bpe_model"]
        if judge_corpus:  # the judge learns from more voices, never from those it will score
            config.data.name, config.data.bpe_model = judge_corpus, ""
            config.data.exclude_speakers_of = (f"{self.state['corpus_name']}:test_unseen",)
        config.train.seed = self.seed
        # Programs compiled twice read back (the tokenizer's after the speed probe, any stage resumed).
        config.train.compilation_cache_dir = os.path.join(self.out, XLA_CACHE)
        if stage == "flow_matching":
            config.pretrained.ar_workdir = self.workdirs["ar"]
            config.pretrained.flow_vae_workdir = self.workdirs["flow_vae"]
        if stage != JUDGE:
            fitted = self.state.get("fitted_steps", {}).get(stage)
            config.train.steps = fitted or round(config.train.steps * self.state.get("step_scale", 1.0))
        config = apply_overrides(config, list(self.overrides.get(stage, [])))
        if max_minutes is not None:
            config.train.max_minutes = max_minutes
        return config

    def train(self, stage: str) -> dict:
        if self.long_recipe and self.minutes:  # each schedule fitted to its own stage's speed on this machine
            self.probe_step_seconds(stage)  # first: the probe's minute is the budget's, not the share's
            self.fitted_steps(stage, self._stage_minutes(stage))
        minutes = self._stage_minutes(stage) if stage not in self.begun else self._begun_minutes(stage)
        return self._train(stage, self.stage_config(stage, minutes))

    def _begun_minutes(self, stage: str) -> float:
        minutes = (self.begun.pop(stage) - time.monotonic()) / 60
        if minutes < 0.5:
            raise DemoError(f"{minutes:.1f} minutes are left of {stage}'s share: run again (finished steps are "
                            "kept) or raise --minutes")
        return minutes

    def _train(self, stage: str, config) -> dict:
        from speech_jax.train.loop import train
        if config.train.max_minutes:
            fitted = " until fitted to them" if config.train.get("fit_schedule_at") else ""
            log.info("demo: %s gets %.1f minutes (a schedule of %d steps%s)", stage, config.train.max_minutes,
                     config.train.steps, fitted)
        result = train(config, self.workdirs[stage])
        if result.get("preempted"):  # not done: the next run resumes it from its checkpoint
            raise DemoError(f"{stage} was stopped by SIGTERM at step {result['step']}: run the demo again to "
                            "resume it")
        losses = {k: v for k, v in result.items() if isinstance(v, float) and k != "step"}
        return {"workdir": self.workdirs[stage], "config": self.config_files[stage], "step": result["step"],
                "planned_steps": result.get("schedule_steps", config.train.steps),
                "time_budget_reached": bool(result.get("time_budget_reached")),
                "final": losses}  # the last logged training metrics

    def _judge_corpus(self, config) -> str | None:
        """The espeak corpus a judge config keeps (`own_corpus`: more voices to learn from than the demo's)."""
        name = config.data.name
        keep = config.get("own_corpus", False) and name.startswith("espeak_tts/")
        return name if keep and name != self.state["corpus_name"] else None

    def train_judge(self) -> dict:
        """Trains the judge for `judge_minutes` (None: its config's own `train.max_minutes`); resumes it.
        A judge of another espeak corpus has it prepared first, beside the demo's."""
        if self.judge_minutes == 0:
            return {"skipped": "judge_minutes is 0"}
        from speech_jax.config import load_config
        from speech_jax.train.restore import latest_step
        t = time.monotonic()
        corpus = self._judge_corpus(load_config(self.config_files[JUDGE]))
        if corpus:
            from data_pipelines.prepare import prepare
            prepare("espeak_tts", self.data_dir, config=corpus.split("/", 1)[1])
        prepare_minutes = round((time.monotonic() - t) / 60, 3)
        try:  # a judge trained before (e.g. copied in) is reused: the report must not call its time training
            step_before = latest_step(self.workdirs[JUDGE])
        except FileNotFoundError:
            step_before = 0
        info = self._train(JUDGE, self.stage_config(JUDGE, self.judge_minutes))
        return dict(info, prepare_minutes=prepare_minutes, reused=step_before >= info["step"])

    def _judge(self):
        info = self.state["steps"].get(JUDGE, {})
        if "workdir" not in info:
            return None
        from speech_jax.eval.judge import JudgeTranscriber
        return JudgeTranscriber(info["workdir"])

    def _embedder(self):
        from speech_jax.eval import models
        name = self.speaker_model
        if name is None:
            if not models.resemblyzer_available():
                log.info("demo: no SIM (Resemblyzer is not installed): %s", models.SIM_EXTRA_HINT)
                return None
            name = models.RESEMBLYZER
        return None if name == "none" else models.load_embedder(name)

    def extract(self) -> dict:
        from data_pipelines.extract import extract
        out = extract(self.workdirs["tokenizer"], flow_vae_workdir=self.workdirs["flow_vae"],
                      name=self.state["corpus_name"], data_dir=self.data_dir,
                      splits=("train", "validation", "test_unseen"),
                      replace_stale=True)  # the demo's own features: a rerun with retrained stages redoes them
        return {"extracted": out}

    def evaluate(self) -> dict:
        from speech_jax.eval import seed_tts
        from speech_jax.infer.synthesizer import Synthesizer
        eval_dir = os.path.join(self.out, "eval")
        meta = seed_tts.make_meta_from_corpus(self.data_dir, self.state["corpus_name"], "test_unseen",
                                              out_dir=eval_dir, n=self.utterances)
        synth = Synthesizer.from_workdirs(self.workdirs["tokenizer"], self.workdirs["ar"],
                                          self.workdirs["flow_matching"])

        def synthesize(text, prompt_wav, prompt_text, language):
            return (synth.synthesize(text, prompt_wav, prompt_text=prompt_text, language=language, seed=self.seed,
                                     candidates=self.candidates, ctc_guidance=self.guidance,
                                     fm_temperature=self.fm_temperature),
                    synth.sample_rate)

        from speech_jax.eval.models import load_scorers
        transcriber, _ = load_scorers(self.whisper, None)
        embedder, judge = self._embedder(), self._judge()
        means = {}
        for mode in MODES:
            result = seed_tts.evaluate(meta, synthesize, os.path.join(eval_dir, mode), mode=mode,
                                       transcriber=transcriber, embedder=embedder,
                                       ground_truth=seed_tts.espeak_ground_truth(synth.sample_rate),
                                       language_of=seed_tts.corpus_language, judge=judge)
            means[mode] = result["means"]
        return {"meta": meta, "means": means, "candidates": self.candidates, "ctc_guidance": self.guidance,
                "fm_temperature": self.fm_temperature}

    def report(self) -> dict:
        from speech_jax.demo_report import write_report
        paths = write_report(self)
        log.info("demo: report at %s", paths["html"])
        return paths


def machine() -> str:
    import jax
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"{jax.device_count()} × {jax.devices()[0].device_kind} ({jax.default_backend()})")
