"""A stage's jitted programs and their shardings, built from its config: what the training loop runs
and what `speech-jax compile` compiles ahead of time for another topology."""
from __future__ import annotations

import ast
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from data_pipelines.pipeline import device_fields
from speech_jax import sharding
from speech_jax.layers import init_rngs
from speech_jax.train.optim import make_optimizer
from speech_jax.train.state import init_train_state
from speech_jax.train.step import make_eval_step, make_train_step
from speech_jax.train.tasks import get_task


@dataclasses.dataclass
class Program:
    task: Any
    mesh: Mesh
    rules: tuple
    tx: Any
    schedule: Callable
    graphdef: Any
    abstract_state: Any        # the train state's shapes and dtypes (nothing allocated)
    state_shardings: Any       # same structure, NamedShardings
    batch_shardings: dict      # device field -> NamedSharding
    init: Callable             # rng -> sharded fresh train state (`frozen` zeros where load_pretrained fills it)
    train_step: Callable       # (state, batch, rng) -> (state, metrics); donates the state
    # (first step, train step) for each phase of a run whose step changes at fixed steps (a GAN's late start),
    # in order; `train_step` is the last phase's, the steady state that ahead-of-time compiling sizes
    train_phases: tuple
    eval_step: Callable        # (state, batch) -> (outputs, integer batch fields)
    rng: jax.Array


def resolve_config(config, corpus: bool = True):
    """Fills the config's derived sizes (pretrained parts, text vocabulary, extracted features) in place;
    returns the stage's text units.

    `corpus=False` (compiling without the data): the corpus is read only for sizes the config leaves 0,
    and the text units are not returned."""
    task = get_task(config.stage)
    if hasattr(task, "resolve_config"):  # e.g. sizes of pretrained parts, from their workdirs
        task.resolve_config(config)
    text_units = None
    if corpus or config.model.get("text_vocab_size", 1) == 0:
        text_units = _resolve_text_vocab(config)
    if corpus or any(config.model.get(k, 1) == 0 for k in ("codebook_size", "latent_dim")):
        _resolve_feature_sizes(config)
    return text_units


def build_program(config, devices=None) -> Program:
    """The programs of a resolved config on a mesh over `devices` (default: every local device)."""
    task = get_task(config.stage)
    mesh = sharding.make_mesh(config.mesh, devices)
    sharding.check_batch(config.data.batch_size, mesh)
    rules = tuple(tuple(r) for r in config.sharding.rules)
    if not config.data.get("target_audio", True) and getattr(task, "TRAINS_ON_TARGET_AUDIO", True):
        raise ValueError(f"data.target_audio=False: the {config.stage} stage's step trains on the target's audio")
    fit_at = int(config.train.get("fit_schedule_at", 0))  # .get: configs saved before the field existed
    if fit_at < 0:
        raise ValueError(f"train.fit_schedule_at must be >= 0 (0 = a schedule train.steps long), got {fit_at}")
    if fit_at > config.optim.warmup_steps and config.optim.schedule == "cosine" and not config.optim.decay_steps:
        raise ValueError(f"train.fit_schedule_at={fit_at} must be <= optim.warmup_steps="
                         f"{config.optim.warmup_steps}: the updates before it would follow another length's cosine")
    tx, schedule = (getattr(task, "make_optimizer", None) or make_optimizer)(config.optim, config.train.steps,
                                                                            fitted=fit_at > 0)
    ema_decay = float(config.optim.get("ema_decay", 0.0))  # .get: configs saved before the field existed
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"optim.ema_decay must be in [0, 1), got {ema_decay}")
    if ema_decay and hasattr(task, "make_train_step"):
        raise ValueError(f"optim.ema_decay={ema_decay}: the {config.stage} stage's own train step keeps no "
                         "moving average of its weights")

    def init(rng):
        model = task.build_model(config, init_rngs(rng))
        return init_train_state(model, tx, ema=ema_decay > 0)

    def fresh_state(rng):
        state = init(rng)[1]
        if hasattr(task, "load_pretrained") and "frozen" in state.rest:
            # load_pretrained replaces `frozen` whole with earlier stages' weights. Zeros here let XLA drop
            # their random init, most of the init program's compile time (flow matching's frozen Flow-VAE:
            # 122 of its 265 leaves; its compile 22 -> 7.5 s).
            rest = jax.tree.map(lambda x: x, state.rest)
            rest["frozen"] = jax.tree.map(jnp.zeros_like, rest["frozen"])
            state = state.replace(rest=rest)
        return state

    rng = jax.random.key(config.train.seed)
    graphdef, abstract = _abstract_init(init, rng)
    # .get: configs saved before the threshold existed
    min_bytes = int(config.sharding.get("fsdp_min_bytes", sharding.FSDP_MIN_BYTES))
    state_shardings = sharding.state_shardings(abstract, rules, mesh, min_bytes)
    accum = int(config.train.get("grad_accum_steps", 1))  # .get: configs saved before the field existed
    if hasattr(task, "make_train_step"):
        if accum != 1:
            raise ValueError(f"train.grad_accum_steps={accum}: the {config.stage} stage's own train step "
                             "does not accumulate gradients")
        # {first step: options of the task's step}; one phase unless the task's step changes mid-run
        phases = task.train_phases(config) if hasattr(task, "train_phases") else {0: {}}
        step_fns = [(first, task.make_train_step(task, graphdef, tx, schedule, **kw))
                    for first, kw in sorted(phases.items())]
    else:
        if accum < 1 or config.data.batch_size % accum:
            raise ValueError(f"train.grad_accum_steps={accum} must be >= 1 and divide data.batch_size="
                             f"{config.data.batch_size}")
        sharding.check_batch(config.data.batch_size // accum, mesh)  # each micro-batch spans the mesh
        step_fns = [(0, make_train_step(task, graphdef, tx, schedule, accum, ema_decay))]
    batch_shardings = {k: sharding.batch_sharding(mesh, n) for k, n in device_fields(config.data).items()}
    repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    options = compiler_options(config.train.get("compiler_options", ""))  # .get: configs saved before it
    # jit compiles on first call: a phase the run never reaches (or has passed, on resume) is never compiled.
    train_phases = tuple((first, jax.jit(fn, in_shardings=(state_shardings, batch_shardings, repl),
                                         out_shardings=(state_shardings, repl), donate_argnums=0,
                                         compiler_options=options))
                         for first, fn in step_fns)
    return Program(
        task=task, mesh=mesh, rules=rules, tx=tx, schedule=schedule, graphdef=graphdef,
        abstract_state=abstract, state_shardings=state_shardings, batch_shardings=batch_shardings,
        init=jax.jit(fresh_state, out_shardings=state_shardings, compiler_options=_init_options(options, mesh)),
        train_step=train_phases[-1][1], train_phases=train_phases,
        # Outputs stay where they are computed (no all-gather onto every device); eval_fetch.py reads them.
        eval_step=jax.jit(make_eval_step(task, graphdef), in_shardings=(state_shardings, batch_shardings),
                          compiler_options=options),
        rng=rng)


def _init_options(options: dict | None, mesh) -> dict | None:
    """The init program's compiler options: on the CPU, without LLVM's optimisations, which halve its compile
    (flow matching 7.5 -> 4.0 s, the tokenizer 12.3 -> 6.5 s) for a program that runs once (0.03 -> 0.1 s)."""
    if mesh.devices.flat[0].platform != "cpu":
        return options
    return {**(options or {}), "xla_backend_optimization_level": 0}


def compiler_options(spec: str) -> dict | None:
    """`train.compiler_options`, "name=value,name=value" (XLA options of the stage's programs, e.g.
    "xla_backend_optimization_level=0" to compile faster where steps are few) → jit's compiler_options."""
    options = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"train.compiler_options: {item!r} must look like name=value")
        try:
            options[name.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[name.strip()] = value.strip()  # a bare word: a string option
    return options or None


def _resolve_text_vocab(config):
    """The stage's text units (`speech_jax.text.units`): the corpus's BPE model, or espeak phonemes
    (`data.text_units`, inventory resolved); `model.text_vocab_size = 0` means their size.

    Exactly their size, not rounded up for sharding: ids past the vocabulary would be undecodable.
    """
    from speech_jax.text import units
    if units.kind(config.data) == "phonemes":
        units.resolve_phonemes(config)
    text_units = units.from_config(config.data)
    if "text_vocab_size" in config.model:
        if config.model.text_vocab_size == 0:
            config.model.text_vocab_size = text_units.vocab_size
        elif config.model.text_vocab_size < text_units.vocab_size:
            raise ValueError(f"model.text_vocab_size={config.model.text_vocab_size} is smaller than the "
                             f"{units.kind(config.data)} vocabulary ({text_units.vocab_size}); use 0 to follow it")
    return text_units


def _resolve_feature_sizes(config) -> None:
    """`model.codebook_size = 0` / `model.latent_dim = 0` follow the extracted features' models."""
    if not config.data.get("extracted"):
        return
    from data_pipelines.extracted import extracted_dir, read_meta
    meta = read_meta(extracted_dir(config.data.name, config.data.data_dir, config.data.extracted))
    for key in ("codebook_size", "latent_dim"):
        if key not in config.model:
            continue
        if config.model[key] == 0:
            config.model[key] = int(meta[key])
        elif config.model[key] != meta[key]:
            raise ValueError(f"model.{key}={config.model[key]} but the extracted features "
                             f"({config.data.extracted}) have {meta[key]}; use 0 to follow them")
    if config.data.get("with_latents") and not meta.get("latent_dim"):
        raise ValueError("data.with_latents needs features extracted with --flow-vae")


def _abstract_init(init, rng):
    """graphdef and the abstract train state, without allocating parameters."""
    out = {}

    def shapes(r):
        graphdef, state = init(r)
        out["graphdef"] = graphdef
        return state

    abstract = jax.eval_shape(shapes, rng)
    return out["graphdef"], abstract
