"""`speech-jax demo`: resumes what is done, synthesises unseen speakers, writes the report; its time budget."""
import json
import os

import numpy as np
import pytest

from speech_jax import demo as demo_lib
from speech_jax import demo_report
from speech_jax.audio.io import load_audio
from speech_jax.config import load_config
from speech_jax.demo import Demo, DemoError
from stages import demo_arguments


def _must_not_run(*args, **kwargs):
    raise AssertionError("a finished demo step ran again")


@pytest.fixture(scope="module")
def finished_demo(tiny_stages):
    """The fixture's demo (trained through flow_matching) run again to the end: evaluate and report only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("speech_jax.train.loop.train", _must_not_run)
        mp.setattr("data_pipelines.extract.extract", _must_not_run)
        demo = Demo(**tiny_stages["demo"])
        state = demo.run()
    return demo, state


def test_second_run_reuses_the_trained_stages_and_evaluates_unseen_speakers(finished_demo):
    demo, state = finished_demo
    assert list(state["steps"]) == list(demo_lib.STEPS)
    for stage, _ in demo_lib.STAGES:
        assert state["steps"][stage]["step"] == 2 == state["steps"][stage]["planned_steps"]
    for mode in demo_lib.MODES:
        with open(os.path.join(demo.out, "eval", mode, "results.json")) as f:
            results = json.load(f)
        assert results["counts"]["synthesized"] == results["counts"]["lines"] == 2
        assert np.isfinite(results["means"]["mcd"]) and results["means"]["duration_ratio"] > 0
    with open(os.path.join(demo.out, demo_lib.STATE)) as f:
        evaluated = json.load(f)["steps"]["evaluate"]
    assert evaluated["means"].keys() == set(demo_lib.MODES) and evaluated["candidates"] == demo_lib.CANDIDATES
    assert evaluated["ctc_guidance"] == demo_lib.CTC_GUIDANCE > 0
    assert evaluated["fm_temperature"] == demo_lib.FM_TEMPERATURE < 1


def test_report_has_audio_mel_plots_curves_and_the_metric_table(finished_demo):
    demo, state = finished_demo
    report = os.path.join(demo.out, "report")
    md = open(state["steps"]["report"]["markdown"], encoding="utf-8").read()
    page = open(state["steps"]["report"]["html"], encoding="utf-8").read()
    assert "minutes in all, over every invocation" in md
    assert "judge (CTC phoneme recognizer, for the judge CER) is not part of the TTS system and trained outside" in md
    assert f"the best of {demo_lib.CANDIDATES} AR samples a sentence" in md
    for mode in ("zero-shot", "one-shot"):
        assert f"| {mode} | 2 / 2 |" in md
    flow_vae_row = next(line for line in md.splitlines() if line.startswith("| Flow-VAE |"))
    assert "g_adv" in flow_vae_row  # the tiny config's discriminators train from step 0
    audio = sorted(os.listdir(os.path.join(report, "audio")))
    assert audio == [f"{i:02d}_{kind}.wav" for i in range(2)
                     for kind in ("ground_truth", "one_shot", "prompt", "zero_shot")]
    for name in audio:
        wav, sr = load_audio(os.path.join(report, "audio", name))
        assert sr == 16000 and wav.size > 0
        assert f"audio/{name}" in md and f"src='audio/{name}'" in page
    figures = set(os.listdir(os.path.join(report, "figures")))
    assert {"mel_00.png", "mel_01.png"} <= figures
    assert {f"curves_{s}.png" for s, _ in demo_lib.STAGES} <= figures
    assert page.count("<audio") == 8
    with open(os.path.join(demo.out, "eval", "zero_shot", "results.json")) as f:
        utts = [u["utt"] for u in json.load(f)["utterances"]]
    assert all(f"### {utt}" in md for utt in utts)


def test_a_flow_vae_whose_discriminators_never_started_is_reported_without_the_gan_s_zeros():
    final = dict(mel_loss=1.0, stft_loss=1.2, phase_loss=0.2, kl=170.0, d_loss=0.0, g_adv=0.0, g_fm=0.0,
                 disc_active=0.0)
    info = dict(step=1211, planned_steps=1500, time_budget_reached=True, minutes=10.8, final=final,
                config="experiments/demo/flow_vae.py")
    rows = _report_rows({"flow_vae": info})
    assert rows["Flow-VAE"][-1] == "mel_loss 1.000, stft_loss 1.200, phase_loss 0.200, kl 170.000"
    assert demo_report._shown("flow_vae", info) == ("mel_loss", "stft_loss", "phase_loss", "kl")  # nor curves
    info["final"] = dict(final, disc_active=1.0, d_loss=0.5, g_adv=1.5)  # once they run, their terms are shown
    assert "d_loss 0.500, g_adv 1.500, g_fm 0.000" in _report_rows({"flow_vae": info})["Flow-VAE"][-1]
    assert demo_report._shown("flow_vae", info) == demo_report.CURVES["flow_vae"]


def _report_rows(steps: dict) -> dict:
    """The report's training rows by stage title, for a demo state holding these steps."""
    import types
    return {row[0]: row for row in demo_report._stage_rows(types.SimpleNamespace(state={"steps": steps}))}


def test_a_judge_trained_before_is_reused_and_not_reported_as_trained(tiny_stages):
    judge = Demo(**tiny_stages["demo"]).train_judge()  # the fixture's judge is at its last step: nothing trains
    assert judge["reused"] and judge["step"] == judge["planned_steps"]
    line = demo_report._judge_line(dict(judge, minutes=2.1, prepare_minutes=2.0))
    assert f"a judge trained before (step {judge['step']}) was reused" in line
    assert "2.0 of them preparing its corpus" in line and "trained outside" not in line


def test_training_shares_follow_the_budget_and_a_spent_budget_is_a_clear_error(tiny_stages, tmp_path):
    kwargs = dict(tiny_stages["demo"], out=str(tmp_path), minutes=20.0)
    demo = Demo(**kwargs)
    demo.deadline = demo_lib.time.monotonic() + 20 * 60
    reserve = demo._reserved_minutes()
    assert reserve > 0
    shares = {s: w * (20 - reserve) for s, w in demo_lib.STAGES}  # weights sum to 1
    assert demo._stage_minutes("ar") == pytest.approx(shares["ar"], rel=1e-3)
    demo.state["steps"]["tokenizer"] = {}  # done: its weight no longer counts
    left = 1 - dict(demo_lib.STAGES)["tokenizer"]
    assert demo._stage_minutes("ar") == pytest.approx(shares["ar"] / left, rel=1e-3)
    demo.deadline = demo_lib.time.monotonic() + 60 * reserve
    with pytest.raises(DemoError, match="too few to train ar"):
        demo._stage_minutes("ar")
    demo.state["speed"] = 2.0  # the reserve is the reference machine's minutes: half of them on a machine of 2x
    assert demo._reserved_minutes() == pytest.approx(reserve / 2)


def test_the_long_recipe_scales_and_shares_by_what_its_stages_cost(tiny_stages, tmp_path):
    # The budget over 30 minutes up to the long recipe, then over its configs' 50 a unit, never below 4.
    scales = [demo_lib.step_scale(m) for m in (10, 60, 119.9, 120, 140, 222, 240, 300)]
    assert scales == pytest.approx([1, 2, 3.997, 4, 4, 4.44, 4.8, 6], abs=1e-3)
    demo = Demo(**dict(tiny_stages["demo"], out=str(tmp_path), minutes=240.0))
    demo.state["step_scale"] = demo_lib.step_scale(240)
    assert demo.long_recipe and demo.guidance == 0.0  # its AR reads better unguided
    assert demo.fm_temperature == 1.0  # measured so
    given = Demo(**dict(tiny_stages["demo"], out=str(tmp_path), minutes=240.0, ctc_guidance=0.5, fm_temperature=0.3))
    assert given.guidance == 0.5 and given.fm_temperature == 0.3  # a user's choice holds at any budget
    with pytest.raises(ValueError, match="fm_temperature must be >= 0"):
        Demo(**dict(tiny_stages["demo"], out=str(tmp_path), fm_temperature=-1.0))
    demo.deadline = demo_lib.time.monotonic() + 240 * 60
    costs = dict(demo_lib.LONG_STAGES)
    for stage, cost in costs.items():  # each share holds its schedule at the measured cost per unit
        share = demo._stage_minutes(stage)
        assert share == pytest.approx((240 - demo._reserved_minutes()) * cost / sum(costs.values()), rel=1e-3)
        assert share >= cost * demo.state["step_scale"]


def test_a_long_budget_lengthens_every_schedule_and_a_resumed_run_keeps_it(tiny_stages, tmp_path):
    with open(os.path.join(tiny_stages["demo"]["out"], demo_lib.STATE)) as f:
        done = json.load(f)
    state = {k: done[k] for k in ("corpus", "corpus_name", "bpe_model")}
    with open(tmp_path / demo_lib.STATE, "w") as f:
        json.dump(dict(state, steps={"prepare": done["steps"]["prepare"]}), f)
    kwargs = dict(tiny_stages["demo"], out=str(tmp_path), overrides={})  # the fixture's overrides fix its steps
    configured = {s: load_config(f).train.steps for s, f in Demo(**kwargs).config_files.items()}

    Demo(**dict(kwargs, minutes=300)).run(stop_after="prepare")  # the long recipe: six units of 50 minutes
    resumed = Demo(**dict(kwargs, minutes=45))  # what is left of the budget: the schedules stay as begun
    resumed.run(stop_after="prepare")
    for stage, _ in demo_lib.STAGES:
        assert resumed.stage_config(stage).train.steps == 6 * configured[stage]
    assert resumed.stage_config(demo_lib.JUDGE).train.steps == configured[demo_lib.JUDGE]
    # The demo's AR and flow-matching configs size themselves by the budget the run began with, not this
    # invocation's: the larger AR, the wide DiT. The judge, the instrument, keeps one schedule and corpus.
    defaults = demo_lib.default_config_files()
    demo_configs = dict(kwargs["config_files"], **{s: defaults[s] for s in ("ar", "flow_matching", "judge")})
    long = Demo(**dict(kwargs, minutes=45, config_files=demo_configs))
    ar = long.stage_config("ar")
    assert (ar.model.d_model, ar.model.num_layers, ar.train.steps, ar.data.batch_size) == (192, 6, 6 * 540, 16)
    wide = long.stage_config("flow_matching")
    assert (wide.model.d_model, wide.model.num_layers, wide.train.steps) == (128, 4, 6 * 1000)
    judge = long.stage_config(demo_lib.JUDGE, max_minutes=None)
    assert (judge.train.steps, judge.train.max_minutes) == (3600, 25.0)
    assert judge.data.name == "espeak_tts/varied_large"  # more voices than the demo's corpus: prepared beside it
    assert judge.data.exclude_speakers_of == (f"{done['corpus_name']}:test_unseen",)  # never the voices it scores

    short = tmp_path / "short"
    short.mkdir()
    with open(short / demo_lib.STATE, "w") as f:
        json.dump(dict(state, steps={"prepare": done["steps"]["prepare"]}), f)
    demo = Demo(**dict(kwargs, out=str(short), minutes=10))  # shorter: the time share stops a stage
    demo.run(stop_after="prepare")
    assert demo.stage_config("ar").train.steps == configured["ar"]


def _prepared(tiny_stages, out) -> str:
    """A demo directory whose corpus is prepared (the fixture's), nothing else done."""
    with open(os.path.join(tiny_stages["demo"]["out"], demo_lib.STATE)) as f:
        done = json.load(f)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, demo_lib.STATE), "w") as f:
        json.dump(dict({k: done[k] for k in ("corpus", "corpus_name", "bpe_model")},
                       steps={"prepare": done["steps"]["prepare"]}), f)
    return str(out)


def test_the_schedules_are_the_budget_s_at_this_machine_s_speed(tiny_stages, tmp_path, monkeypatch):
    # Measured: the tokenizer's first steps timed, then the budget's schedules at that speed. Below the long
    # recipe the tokenizer goes on from those steps: their checkpoint, their time, the share they began.
    overrides = dict(tiny_stages["demo"]["overrides"])
    steps = demo_lib.PROBE_STEPS + 2
    overrides["tokenizer"] = list(overrides["tokenizer"]) + [f"--config.train.steps={steps}"]
    kwargs = dict(tiny_stages["demo"], out=_prepared(tiny_stages, tmp_path / "timed"), minutes=30.0, speed=None,
                  overrides=overrides)
    with monkeypatch.context() as m:
        m.setattr(demo_lib, "long_recipe_from_scale", lambda: float("inf"))
        timed = Demo(**kwargs)
        timed.run(stop_after="prepare")
        speed = timed.state["speed"]
        assert 0.1 < speed < 100 and timed.state["step_scale"] == pytest.approx(demo_lib.step_scale(30 * speed),
                                                                                rel=1e-2)
        assert list(timed.state["probe_step_seconds"]) == [demo_lib.SPEED_PROBE]
        tokenizer = timed.workdirs["tokenizer"]
        assert os.listdir(os.path.join(tokenizer, "checkpoints")) == [str(demo_lib.PROBE_STEPS)]
        probe_minutes = timed.state["partial_minutes"]["tokenizer"]
        assert probe_minutes > 0 and "speed_minutes" not in timed.state
        share_end = timed.begun["tokenizer"]
        trained = {}
        with monkeypatch.context() as given:
            given.setattr(timed, "_train", lambda stage, config: trained.setdefault(stage, config))
            timed.train("tokenizer")  # the share the probe began, not a new one
        assert trained["tokenizer"].train.max_minutes == pytest.approx(
            (share_end - demo_lib.time.monotonic()) / 60, abs=0.01)
        timed.begun["tokenizer"] = share_end
        timed.run(stop_after="tokenizer")  # trains on from the probe's steps to the schedule's end
        with open(os.path.join(tokenizer, "metrics.jsonl")) as f:
            logged = [json.loads(line)["step"] for line in f]
        assert logged == sorted(logged) and logged[-1] == steps and demo_lib.PROBE_STEPS in logged
        assert timed.state["steps"]["tokenizer"]["step"] == steps
        assert timed.state["steps"]["tokenizer"]["minutes"] > probe_minutes
        assert "tokenizer" not in timed.state["partial_minutes"]
    assert Demo(**dict(kwargs, speed=0.5)).run(stop_after="prepare")["speed"] == speed  # kept when resumed
    with monkeypatch.context() as m:  # the long recipe's tokenizer is another config: the probe's steps go
        m.setattr(demo_lib, "long_recipe_from_scale", lambda: 1.0)
        long = Demo(**dict(kwargs, out=_prepared(tiny_stages, tmp_path / "long"),
                           overrides=tiny_stages["demo"]["overrides"]))
        long.run(stop_after="prepare")
        assert long.long_recipe and long.state["speed_minutes"] > 0 and not long.begun
        assert not os.path.exists(long.workdirs["tokenizer"])
    # Given: twice the reference machine's speed holds the schedules of twice the budget; half, the configs'.
    configured = load_config(kwargs["config_files"]["ar"]).train.steps
    for speed, scale in ((2.0, 2.0), (0.5, 1.0)):
        demo = Demo(**dict(kwargs, out=_prepared(tiny_stages, tmp_path / str(speed)), speed=speed, overrides={}))
        demo.run(stop_after="prepare")
        assert demo.state["step_scale"] == scale and demo.stage_config("ar").train.steps == scale * configured
    with pytest.raises(ValueError, match="speed must be > 0"):
        Demo(**dict(kwargs, speed=0.0))


def test_the_long_recipe_fits_each_schedule_to_its_stage_s_own_speed(tiny_stages, tmp_path, monkeypatch):
    probes = []

    def probe_run(config, workdir):  # a throwaway run's log: a compiling interval, then 0.5 s a step
        probes.append(config.stage)
        with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
            for i, seconds in enumerate([3.0, 0.9, 0.5, 0.5, 0.4, 0.6]):
                f.write(json.dumps({"step": 10 * (i + 1), "step_time": seconds}) + "\n")
        return {"step": 60}

    monkeypatch.setattr("speech_jax.train.loop.train", probe_run)
    kwargs = dict(tiny_stages["demo"], out=_prepared(tiny_stages, tmp_path), minutes=300.0, speed=1.0, overrides={})
    demo = Demo(**kwargs)
    demo.run(stop_after="prepare")
    assert demo.long_recipe
    trained = {}
    monkeypatch.setattr(demo, "_train", lambda stage, config: trained.setdefault(stage, config))
    demo.deadline = demo_lib.time.monotonic() + 300 * 60
    demo.train("ar")
    share = trained["ar"].train.max_minutes
    assert probes == ["ar"] and demo.state["probe_step_seconds"] == {"ar": 0.5}
    assert trained["ar"].train.steps == int(share * 60 * demo_lib.SCHEDULE_FILL / 0.5)
    resumed = Demo(**dict(kwargs, minutes=20.0))  # resumed with less time: the same schedule, no second probe
    monkeypatch.setattr(resumed, "_train", lambda stage, config: trained.update(resumed=config))
    resumed.deadline = demo_lib.time.monotonic() + 20 * 60
    resumed.train("ar")
    assert probes == ["ar"] and trained["resumed"].train.steps == trained["ar"].train.steps
    assert trained["resumed"].train.max_minutes < share
    short = Demo(**dict(kwargs, out=_prepared(tiny_stages, tmp_path / "short"), minutes=30.0))
    short.run(stop_after="prepare")  # the 30-minute demo keeps its configs' schedules: no probe
    monkeypatch.setattr(short, "_train", lambda stage, config: trained.update(short=config))
    short.deadline = demo_lib.time.monotonic() + 30 * 60
    short.train("ar")
    assert probes == ["ar"] and trained["short"].train.steps == load_config(kwargs["config_files"]["ar"]).train.steps
    # The speed probe timed the 30-minute tokenizer: the long recipe's is timed again for its own schedule.
    demo.state["probe_step_seconds"][demo_lib.SPEED_PROBE] = 0.1
    demo.train("tokenizer")
    assert probes == ["ar", "tokenizer"] and demo.state["probe_step_seconds"]["tokenizer"] == 0.5


def test_the_probe_times_the_steps_after_its_warm_up():
    # The long recipe's probe on varied_large: the first interval compiles the other buckets, the second was
    # still slow; three intervals' median read that second one (1.21x where the steady steps read 1.89x).
    logged = [1.856, 0.2738, 0.1804, 0.2020, 0.1885, 0.1707]
    assert demo_lib.steady_step_seconds(logged) == pytest.approx((0.1804 + 0.1885) / 2)
    assert demo_lib.steady_step_seconds([0.3]) == 0.3  # a run too short for warm-up intervals: what it has
    with pytest.raises(DemoError, match="give --speed"):
        demo_lib.steady_step_seconds([])


def test_a_demo_directory_of_another_corpus_is_refused(tiny_stages):
    with pytest.raises(DemoError, match="not small"):
        Demo(**dict(tiny_stages["demo"], corpus="small"))


def test_a_stage_resumed_over_several_runs_counts_every_run_s_minutes(tmp_path, monkeypatch):
    with open(tmp_path / demo_lib.STATE, "w") as f:  # prepared; no stage trained yet
        json.dump({"corpus": "tiny", "steps": {"prepare": {"minutes": 0.5}}}, f)
    clock = [0.0]
    monkeypatch.setattr(demo_lib.time, "monotonic", lambda: clock[0])
    calls = []

    def train(stage):  # 5 minutes, stopped by SIGTERM the first time; 2 more minutes to finish
        clock[0] += 300.0 if not calls else 120.0
        calls.append(stage)
        if len(calls) == 1:
            raise DemoError(f"{stage} was stopped by SIGTERM at step 1: run the demo again to resume it")
        return {"step": 2}

    kwargs = demo_arguments({"data_dir": str(tmp_path)}, str(tmp_path))
    demo = Demo(**kwargs)
    monkeypatch.setattr(demo, "train", train)
    with pytest.raises(DemoError, match="SIGTERM"):
        demo.run(stop_after="tokenizer")
    assert demo.state["partial_minutes"] == {"tokenizer": 5.0} and "tokenizer" not in demo.state["steps"]
    demo = Demo(**kwargs)  # the next invocation finishes it
    monkeypatch.setattr(demo, "train", train)
    demo.run(stop_after="tokenizer")
    assert calls == ["tokenizer", "tokenizer"]
    assert demo.state["steps"]["tokenizer"]["minutes"] == pytest.approx(7.0) and demo.state["partial_minutes"] == {}
