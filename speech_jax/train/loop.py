"""The one training loop: mesh → abstract state → shardings → jitted pure step → checkpoints/metrics."""
from __future__ import annotations

import functools
import logging
import math
import os
import signal
import sys
import time

import jax
import numpy as np

from data_pipelines.pipeline import device_batch, make_dataset
from speech_jax import sharding
from speech_jax.train import checkpoint, fit_schedule, metrics as metrics_lib, stop
from speech_jax.train.compilation_cache import use_compilation_cache
from speech_jax.train.eval_fetch import fetch, host_eval_of
from speech_jax.train.goodput import Goodput
from speech_jax.train.one_behind import OneBehind
from speech_jax.train.optim import schedule_steps, with_schedule_steps
from speech_jax.train.profile_window import ProfileWindow
from speech_jax.train.program import build_program, resolve_config


class _Preemption:
    """SIGTERM (pre-emption, job kill) asks the loop to checkpoint and stop at the next step."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and stopping")
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class Trainer:
    """Holds what a run needs: mesh, shardings, jitted steps, data iterators, checkpointer."""

    def __init__(self, config, workdir: str):
        sharding.maybe_initialize_distributed()
        use_compilation_cache(config.train.get("compilation_cache_dir", ""))  # .get: configs saved before it
        self.config = config
        self.workdir = workdir
        self.text_units = resolve_config(config)
        p = build_program(config)
        self.task, self.mesh, self.rules, self.tx, self.schedule = p.task, p.mesh, p.rules, p.tx, p.schedule
        self.graphdef, self.abstract_state, self.state_shardings = p.graphdef, p.abstract_state, p.state_shardings
        self.batch_shardings, self._init, self._rng = p.batch_shardings, p.init, p.rng
        self.train_step, self.train_phases, self.eval_step = p.train_step, p.train_phases, p.eval_step
        self._eval_ds: dict = {}
        self.frame_multiple = 2 * config.mel.hop_length

    # -- state ---------------------------------------------------------------------------------
    def initial_state(self):
        with sharding.activation_rules(self.mesh, self.rules):
            state = self._init(self._rng)
        if hasattr(self.task, "load_pretrained"):  # weights of earlier stages (a fresh run only)
            state = self.task.load_pretrained(state, self.config)
        return state

    def dataset(self, split: str, training: bool):
        """This process's rows of every global batch (the rows its devices hold)."""
        rows = sharding.host_rows(self.batch_shardings["audio_len"], self.config.data.batch_size)
        return make_dataset(self.config.data, split=split, training=training, frame_multiple=self.frame_multiple,
                            rows=rows)

    def data_iterator(self, split: str, training: bool):
        return iter(self.dataset(split, training))

    def to_device(self, batch: dict) -> dict:
        """Global arrays of the global batch's shape, from this process's rows."""
        batch = device_batch(batch, self.batch_shardings)
        n = self.config.data.batch_size
        return {k: jax.make_array_from_process_local_data(self.batch_shardings[k], v, (n,) + v.shape[1:])
                for k, v in batch.items()}

    def step(self, state, batch, step: int):
        rng = jax.random.fold_in(self._rng, step)
        train_step = [fn for first, fn in self.train_phases if first <= step][-1]
        with sharding.activation_rules(self.mesh, self.rules):
            return train_step(state, self.to_device(batch), rng)

    def evaluate(self, state, artifacts_dir: str | None = None, split: str | None = None) -> dict:
        """Mean metrics over the first `train.eval_batches` batches of a split (the same each time).

        With `artifacts_dir`, the task writes samples (wavs, plots) of the first batch there."""
        split = split or self.config.data.eval_split
        if split not in self._eval_ds:
            self._eval_ds[split] = self.dataset(split, training=False)
        it = iter(self._eval_ds[split])
        sums: dict[str, float] = {}
        kept = []  # every batch's outputs, for tasks that summarise the whole evaluation
        summarize = getattr(self.task, "summarize_eval", None)
        host_eval = host_eval_of(self.task, self.config)
        n = 0
        for _ in range(self.config.train.eval_batches):
            batch = next(it)
            with sharding.activation_rules(self.mesh, self.rules):
                out, labels = self.eval_step(state, self.to_device(batch))
            artifacts = n == 0 and artifacts_dir and hasattr(self.task, "eval_artifacts")
            out, labels = fetch(out, labels, arrays=bool(artifacts or summarize or host_eval))
            row = {k: float(v) for k, v in out.items() if np.ndim(v) == 0}
            if host_eval is not None:
                row.update(host_eval(out, labels, self.text_units, self.config))
            if artifacts and jax.process_index() == 0:
                self.task.eval_artifacts(out, labels, artifacts_dir, self.config)
            if summarize is not None:
                kept.append((out, labels))
            for k, v in row.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
        result = {k: v / n for k, v in sums.items()}
        if summarize is not None:
            result.update(summarize(kept, self.config))
        return result

    def evaluate_all(self, state, artifacts_dir: str | None = None) -> dict:
        """The eval split under "eval/", each of `data.extra_eval_splits` under "eval_<split>/"; the weights'
        moving average where the state keeps one (what the finished stage serves)."""
        if state.ema is not None:
            state = state.replace(params=state.ema)
        out = {f"eval/{k}": v for k, v in self.evaluate(state, artifacts_dir).items()}
        for split in self.config.data.get("extra_eval_splits", ()):
            out.update({f"eval_{split}/{k}": v for k, v in self.evaluate(state, None, split).items()})
        return out


def _batch_stats(batch: dict, sample_rate: int, task, global_batch: int) -> dict:
    stats = {"audio_seconds": float(np.sum(batch["audio_len"])) / sample_rate,
             "padded_seconds": float(np.size(batch["audio"])) / sample_rate}
    if hasattr(task, "tokens_in_batch"):  # the stage's own unit of work (non-padding tokens)
        stats["tokens"] = float(task.tokens_in_batch(batch))
    # This process holds a share of the global batch: throughput is reported for all of it.
    scale = global_batch / len(batch["audio_len"])
    return {k: v * scale for k, v in stats.items()}


def train(config, workdir: str) -> dict:
    """Trains `config.stage` for `config.train.steps` steps; resumes from `workdir` when it holds checkpoints.

    With `train.max_minutes` > 0 the run also stops (after checkpointing) once that much wall time has
    passed since the call, and the result says `"time_budget_reached": True`; calling again resumes.
    A SIGTERM likewise checkpoints and stops early, and the result says `"preempted": True`.
    """
    t_call = time.perf_counter()
    os.makedirs(workdir, exist_ok=True)
    tc = config.train
    trainer = Trainer(config, workdir)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints,
                                   every=tc.ckpt_every, async_save=tc.async_checkpointing)
    data_iter = trainer.data_iterator(config.data.train_split, training=True)
    start = 0
    if ckpt.latest_step() is not None:
        abstract = checkpoint.abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
        start, state, _ = ckpt.restore(abstract, data_iter)
        logging.info("resumed from %s at step %d", ckpt.directory, start)
    else:
        state = trainer.initial_state()
    fitted_steps = schedule_steps(state.opt_state)  # None: the schedule is train.steps long
    total = tc.steps if fitted_steps is None else int(np.asarray(fitted_steps.addressable_data(0)))
    if total != tc.steps:
        logging.info("the schedule's length was fitted to %d steps (train.steps=%d)", total, tc.steps)
    stop_at = int(tc.get("stop_at_step", 0)) or math.inf  # .get: configs saved before the field existed
    if stop_at < 0:
        raise ValueError(f"train.stop_at_step must be >= 0 (0 = the schedule's end), got {stop_at}")
    if start >= min(total, stop_at):
        logging.info("already trained to step %d (of a schedule of %d)", start, total)
        ckpt.close()
        return {"step": start, "schedule_steps": total}

    goodput = Goodput(t_call)
    goodput.add("init", time.perf_counter() - t_call)
    # .get: configs saved before these fields existed
    behind = OneBehind(tc.get("metrics_one_behind", True))
    profile = ProfileWindow(tc.get("profile_steps", ""), os.path.join(workdir, "tensorboard"))
    writer = metrics_lib.MetricsWriter(workdir)
    peak, peak_src = metrics_lib.device_peak_flops(tc.peak_flops)
    logging.info("peak %.3g FLOP/s per device (%s); %d devices", peak, peak_src, jax.device_count())
    config_json = config.to_dict()
    pending, host_stats = [], []
    last_row: dict = {}
    t_last = time.perf_counter()
    timed = 0  # steps in the current interval whose time is measured (the compiling step is not)
    bar = _progress(start, total)
    deadline = t_call + 60 * tc.max_minutes if tc.max_minutes > 0 else math.inf
    fit_at = int(tc.get("fit_schedule_at", 0))  # .get: configs saved before the field existed
    fitting = fitted_steps is not None and start < fit_at and deadline < math.inf
    interval_seconds = []  # seconds a step of each logged interval, what the fitted length is timed from
    out_of_time = preempted = False
    check_every = 1 if jax.process_count() == 1 else max(int(tc.get("stop_check_every", 1)), 1)

    def log(step, pending, host_stats, shapes, n_timed):
        nonlocal t_last, last_row
        with goodput.timing("step"):  # waits for the step to finish
            vals = jax.device_get(pending)
        now = time.perf_counter()
        dt, t_last = (now - t_last) / max(n_timed, 1), now
        row = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
        row["skipped_steps"] = float(vals[-1]["skipped_steps"])
        secs = np.mean([h["audio_seconds"] for h in host_stats])
        flops = trainer.task.flops_per_step(config, shapes)
        if n_timed:
            interval_seconds.append(dt)
            row.update(step_time=dt, audio_seconds_per_s=secs / dt,
                       frames_per_s=secs * config.data.sample_rate / config.mel.hop_length / dt,
                       mfu=flops / dt / (peak * jax.device_count()))
            if "tokens" in host_stats[0]:
                row["tokens_per_s"] = float(np.mean([h["tokens"] for h in host_stats])) / dt
        row.update(goodput.shares())
        last_row = writer.write(step, row)
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        else:
            logging.info("step %d: %s", step, metrics_lib.format_metrics(row))
        goodput.add("log", time.perf_counter() - now)

    # Steps that compile a program: the first, and the first of each later phase (a task's `train_phases`).
    compiling_steps = {start} | {first for first, _ in trainer.train_phases if first > start}
    with _Preemption() as preempt:
        step = start
        while step < min(total, stop_at):
            with goodput.timing("data"):
                batch = next(data_iter)
            profile.before_step(step)
            compiling = step in compiling_steps
            if compiling and step > start:
                with goodput.timing("step"):  # the steps queued before it are steps, not compilation
                    jax.block_until_ready(state)
            with goodput.timing("compile" if compiling else "step"):
                state, m = trainer.step(state, batch, step)
                if compiling:  # keep compilation out of step_time
                    jax.block_until_ready(m)
            step += 1
            timed += 1
            if compiling:
                t_last, timed = time.perf_counter(), 0
            profile.after_step(step, m)
            behind.flush()  # the previous logged step's metrics, now that this step is queued
            pending.append(m)
            host_stats.append(_batch_stats(batch, config.data.sample_rate, trainer.task, config.data.batch_size))
            if bar is not None:
                bar.update(1)
            if step % check_every == 0:  # the stop decision is agreed by every process
                preempted, out_of_time = stop.agree(preempt.requested, time.perf_counter() > deadline)
                out_of_time = out_of_time and step < total
            pausing = step == stop_at and step < total
            evaluating = tc.eval_every and (step % tc.eval_every == 0 or step == total)
            saving = (preempted or out_of_time or pausing or step == total
                      or (tc.ckpt_every and step % tc.ckpt_every == 0))
            if step % tc.log_every == 0 or step == total or out_of_time or pausing:
                shapes = {k: (config.data.batch_size,) + v.shape[1:] for k, v in batch.items() if hasattr(v, "shape")}
                # Deferred to the next step's dispatch unless this step evaluates, saves or ends the run.
                behind.submit(functools.partial(log, step, pending, host_stats, shapes, timed),
                              defer=not (evaluating or saving))
                pending, host_stats, timed = [], [], 0
                if fitting and step >= fit_at and not (preempted or out_of_time):
                    behind.flush()  # this interval's step time
                    if interval_seconds:  # none yet when a resume compiled its first step just before
                        total = fit_schedule.agreed(fit_schedule.fitted_length(
                            step, interval_seconds, deadline - time.perf_counter()))
                        state = state.replace(opt_state=with_schedule_steps(state.opt_state, total))
                        writer.write(step, {"schedule_steps": total})
                        logging.info("the schedule fitted to the %.1f minutes left: %d steps",
                                     (deadline - time.perf_counter()) / 60, total)
                        fitting = False
                        if bar is not None:
                            bar.total = total
            if evaluating:
                with goodput.timing("eval"):
                    ev = trainer.evaluate_all(state, os.path.join(workdir, "samples", f"step_{step}"))
                writer.write(step, ev)
                logging.info("eval at step %d: %s", step, metrics_lib.format_metrics(ev))
                t_last, timed = time.perf_counter(), 0
            if saving:
                with goodput.timing("checkpoint"):
                    ckpt.save(step, state, data_iter, config_json, force=True)
            if preempted:
                break
            if out_of_time:
                logging.info("train.max_minutes=%g spent at step %d of %d", tc.max_minutes, step, total)
                break
    behind.flush()
    profile.close(state)
    ckpt.close()
    writer.close()
    if bar is not None:
        bar.close()
    return {"step": step, **last_row, "schedule_steps": total, "time_budget_reached": out_of_time,
            "preempted": preempted}


def _progress(start: int, total: int):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=start, dynamic_ncols=True)
