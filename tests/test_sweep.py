"""`speech-jax sweep`: the shipped sweeps expand to their runs; a tiny real sweep (the tokenizer, 2 seeds,
2 steps each) runs one job's run (`--trial`), is interrupted and resumed, skips finished runs, and collects
a table with mean ± spread, plots and TensorBoard HParams summaries."""
import contextlib
import csv
import glob
import io
import json
import os
import struct

import pytest

from speech_jax import sweep as sweep_lib
from speech_jax.cli import main
from speech_jax.sweep_table import Done, markdown, table
from stages import COMMON, MESH_8, OVERRIDES, STEPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = {"speaker_conditioning.py": 3, "flow_vae_vs_vae.py": 6, "tokenizer_lr_size.py": 12, "latent_floor.py": 3, "ar_dropout.py": 2}

TINY_SWEEP = f'''"""Two seeds of the tiny tokenizer, each scored by `speech-jax validate` as an evaluation command."""
from speech_jax.sweep import Evaluation, Sweep


def get_sweep():
    return Sweep(base={os.path.join(ROOT, "experiments", "tokenizer", "tiny.py")!r},
                 trials=({{"optim.learning_rate": 1e-3}},), seeds=(0, 1),
                 metrics=("loss", "mel_loss", "validate/loss", "validate/perplexity"), curves=("loss",),
                 evaluations=(Evaluation("validate", ("validate", "--workdir", "{{workdir}}", "--out", "{{out}}",
                                                      "--batches", "1"), results="metrics.json", key=None),))
'''


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_sweeps_expand_to_their_runs(name, tmp_path, capsys):
    path = os.path.join(ROOT, "experiments", "sweeps", name)
    sweep = sweep_lib.load_sweep(path)
    runs = sweep_lib.runs(sweep)
    assert len(runs) == SHIPPED[name] and [r.index for r in runs] == list(range(len(runs)))
    assert len({r.name for r in runs}) == len(runs)
    from speech_jax.config import apply_overrides, load_config
    for run in runs:  # every run's overrides name real fields of its base config
        config = apply_overrides(load_config(sweep_lib.base_path(sweep)), run.overrides(sweep))
        assert config.train.seed == run.seed
    assert sweep.description
    assert main(["sweep", path, "--out", str(tmp_path), "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[3] for line in listed] == [r.name for r in runs]


def test_table_groups_seeds_and_keeps_trials_apart():
    sweep = sweep_lib.Sweep(base="b.py", trials=sweep_lib.product({"a": [1, 2], "b": ["x"]}), seeds=(0, 1),
                            metrics=("loss", "eval/acc"))
    runs = sweep_lib.runs(sweep)
    assert [(r.trial["a"], r.seed) for r in runs] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    done = [Done(runs[0], {"loss": 1.0, "eval/acc": 0.5}, {}, {}), Done(runs[1], {"loss": 3.0}, {}, {}),
            Done(runs[2], {"loss": 5.0, "eval/acc": 0.25}, {}, {})]
    rows = table(sweep, done)
    assert [r["axes"] for r in rows] == [{"a": 1}, {"a": 2}]  # "b" does not vary: not a column
    assert rows[0]["metrics"]["loss"][:2] == (2.0, pytest.approx(2 ** 0.5))
    assert rows[0]["metrics"]["eval/acc"][2] == 1
    text = markdown(sweep, rows, len(runs))
    assert "| 1 | 2 | 2 ± 1.4 | 0.5 |" in text and "| 2 | 1 | 5 | 0.25 |" in text
    assert "3 of 4 runs finished" in text


def _sweep(args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["sweep", *args])
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def tiny_sweep(tiny_corpus, tmp_path_factory):
    """The tiny sweep run as a cluster job would (`--trial 1`), then cut short by a time budget (run 0 stops
    after 1 of 2 steps), then resumed to the end: each step's (exit code, stdout), the output directory."""
    root = tmp_path_factory.mktemp("sweep")
    path = root / "tiny_sweep.py"
    path.write_text(TINY_SWEEP)
    out = str(root / "out")
    extra = [f"--config.data.data_dir={tiny_corpus['data_dir']}", f"--config.data.bpe_model={tiny_corpus['bpe_model']}",
             *COMMON, *OVERRIDES["tokenizer"], *STEPS, *MESH_8]  # tiny_stages' tokenizer: its compiled programs
    steps = {"trial": _sweep([str(path), "--out", out, "--trial", "1", *extra])}
    steps["cut"] = _sweep([str(path), "--out", out, *extra, "--config.train.max_minutes=1e-9"])
    steps["resume"] = _sweep([str(path), "--out", out, *extra])
    return dict(steps=steps, out=out, path=str(path), extra=extra,
                runs=sweep_lib.runs(sweep_lib.load_sweep(str(path))))


def test_trial_runs_one_run_and_tabulates_nothing(tiny_sweep):
    rc, text = tiny_sweep["steps"]["trial"]
    first, second = (os.path.join(tiny_sweep["out"], r.name) for r in tiny_sweep["runs"])
    assert rc == 0 and "[sweep 1/1] run 1 (optim.learning_rate=0.001, seed 1): finished" in text
    marker = json.load(open(os.path.join(second, "sweep_run.json")))
    assert marker["seed"] == 1 and "--config.train.seed=1" in marker["overrides"]
    assert set(marker["evaluations"]["validate"]) >= {"loss", "perplexity"}
    assert "sweep.md" not in text  # one job of many: --collect tabulates


def test_an_interrupted_run_resumes_from_its_checkpoint(tiny_sweep):
    rc, text = tiny_sweep["steps"]["cut"]
    assert rc == 3  # the sweep stops at the incomplete run (run 1 comes after it)
    assert "run 0 (optim.learning_rate=0.001, seed 0): stopped at step 1" in text and "run 1" not in text
    rc, text = tiny_sweep["steps"]["resume"]
    assert rc == 0 and "run 0 (optim.learning_rate=0.001, seed 0): finished" in text
    assert "run 1 (optim.learning_rate=0.001, seed 1): skipped" in text
    workdir = os.path.join(tiny_sweep["out"], tiny_sweep["runs"][0].name)
    steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert steps == [1, 2]  # step 1 from the cut run, step 2 after resuming: not retrained from 0


def test_the_table_has_mean_and_spread_over_seeds(tiny_sweep):
    rc, text = tiny_sweep["steps"]["resume"]
    assert "2 of 2 runs finished" in text
    rows = list(csv.DictReader(open(os.path.join(tiny_sweep["out"], "sweep.csv"))))
    assert len(rows) == 1 and rows[0]["seeds"] == "0 1" and rows[0]["loss_n"] == "2"
    assert float(rows[0]["loss_std"]) > 0 and float(rows[0]["validate/perplexity"]) > 1
    md = open(os.path.join(tiny_sweep["out"], "sweep.md")).read()
    cells = md.split("| 0.001 | 2 | ")[1].split("\n")[0].split(" | ")
    assert len(cells) == 4 and all(" ± " in c for c in cells), md
    assert "Command-line overrides: `--config.data.data_dir=" in md and "--config.train.steps=2" in md
    assert os.path.getsize(os.path.join(tiny_sweep["out"], "plots", "loss.png")) > 1000


def test_a_second_invocation_skips_finished_runs_and_collect_runs_nothing(tiny_sweep):
    lengths = [os.path.getsize(os.path.join(tiny_sweep["out"], r.name, "metrics.jsonl")) for r in tiny_sweep["runs"]]
    rc, text = _sweep([tiny_sweep["path"], "--out", tiny_sweep["out"], *tiny_sweep["extra"]])
    assert rc == 0 and text.count(": skipped") == 2
    rc, collected = _sweep([tiny_sweep["path"], "--out", tiny_sweep["out"], "--collect"])
    assert rc == 0 and "[sweep" not in collected and "2 of 2 runs finished" in collected
    assert lengths == [os.path.getsize(os.path.join(tiny_sweep["out"], r.name, "metrics.jsonl"))
                       for r in tiny_sweep["runs"]]


def test_a_finished_run_made_by_other_overrides_is_an_error(tiny_sweep, capsys):
    args = [tiny_sweep["path"], "--out", tiny_sweep["out"], "--trial", "0", *tiny_sweep["extra"]]
    assert _sweep([*args, "--config.train.max_minutes=30"])[0] == 0  # how it runs, not what: still finished
    assert _sweep([*args, "--config.model.commitment=0.5"])[0] == 2
    assert "holds a run with other overrides" in capsys.readouterr().err


def _events(path):
    """The records of a TensorBoard event file (length, crc, data, crc) as Event protos."""
    from tensorboardX.proto.event_pb2 import Event
    data, events, i = open(path, "rb").read(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        events.append(Event.FromString(data[i + 12:i + 12 + n]))
        i += 12 + n + 4
    return events


def test_each_run_has_hparams_beside_its_training_curves(tiny_sweep):
    for run in tiny_sweep["runs"]:
        files = glob.glob(os.path.join(tiny_sweep["out"], run.name, "tensorboard", "*.sweep_hparams"))
        assert len(files) == 1  # collected three times, one file
        values = [v for e in _events(files[0]) for v in e.summary.value]
        plugins = {v.metadata.plugin_data.plugin_name for v in values if v.HasField("metadata")}
        assert "hparams" in plugins
        tags = {v.tag for v in values}
        assert {"sweep/loss", "sweep/validate/perplexity"} <= tags
        assert "seed" in str([v.metadata.plugin_data.content for v in values if v.tag.endswith("session_start_info")])
