"""Stages overfit on the espeak clips (tests/espeak_clips.py) through each task's own loss and step:
trained once per test session (conftest.py shares them across workers) and read by the learnability
proofs, stage by stage and end to end. Results are plain numpy (picklable): configs as dicts, model
state as pure dicts (`restore` makes the module again)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from speech_jax.text.phonemes import PhonemeVocab
from speech_jax.train.optim import make_optimizer
from speech_jax.train.state import init_train_state

from espeak_clips import UTTERANCES, clips, padded

# The suite compiles with XLA's cheapest code generation (conftest.py); these loops run hundreds of steps,
# where fully optimised code pays for its longer compile.
OPTIMIZED = {"xla_backend_optimization_level": 3, "xla_llvm_disable_expensive_passes": False}


def _numpy(state: nnx.State) -> dict:
    return jax.device_get(state.to_pure_dict())


def load_into(module, state: dict):
    """Puts the pure-dict `state` into `module` (same structure); returns the module."""
    target = nnx.state(module)
    target.replace_by_pure_dict(state)
    nnx.update(module, target)
    return module


def restore(build, config: dict, state: dict):
    """The module `build(config, rngs)` makes, with the pure-dict `state` in it."""
    return load_into(build(ml_collections.ConfigDict(config), nnx.Rngs(0)), state)


def phoneme_labels():
    """(vocab, [rows, longest] label ids, [rows] lengths) of the clips' texts, espeak phonemes."""
    vocab = PhonemeVocab.build([(t, v.language) for t, v in UTTERANCES])
    labels = [vocab.encode(t, v.language) for t, v in UTTERANCES]
    ids = np.zeros((len(labels), max(map(len, labels))), np.int32)
    for i, y in enumerate(labels):
        ids[i, :len(y)] = y
    return vocab, ids, np.asarray([len(y) for y in labels], np.int32)


def tokenizer(steps: int = 700) -> dict:
    """The tokenizer (CTC over phonemes, two labels a token) trained `steps` on the clips, with the
    training loop's optimizer; its evaluation outputs on them."""
    from experiments.tokenizer import tiny
    from speech_jax.train.tasks import tokenizer as task

    audio, audio_len = padded(clips())
    vocab, ids, ids_len = phoneme_labels()
    batch = dict(audio=audio, audio_len=audio_len, text_ids=ids, text_len=ids_len)
    config = tiny.get_config()
    config.model.update(dict(d_model=96, num_layers=2, mlp_dim=192, codebook_size=64, ctc_rate=2, ctc_weight=1.0,
                             text_vocab_size=vocab.vocab_size))
    config.optim.update(dict(learning_rate=4e-3, warmup_steps=50))
    model = task.build_model(config, nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx, _ = make_optimizer(config.optim, steps)

    @functools.partial(jax.jit, compiler_options=OPTIMIZED)
    def step(params, rest, opt, rng):
        def loss_of(p):
            m = nnx.merge(graphdef, p, rest, copy=True)  # the loss updates the VQ's EMA state
            loss, metrics = task.loss_fn(m, batch, rng, jnp.int32(0))
            return loss, (metrics, nnx.state(m, nnx.Not(nnx.Param)))
        (_, (metrics, rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), rest, opt, metrics

    opt = tx.init(params)
    key = jax.random.key(0)
    for i in range(steps):
        params, rest, opt, _ = step(params, rest, opt, jax.random.fold_in(key, i))
    model = nnx.merge(graphdef, params, rest)
    return dict(config=config.to_dict(), state=_numpy(nnx.state(model)), batch=batch, vocab=vocab,
                eval=jax.device_get(jax.jit(task.eval_fn)(model, batch)))


def flow_vae(steps: int = 500) -> dict:
    """The Flow-VAE trained `steps` with its task's own train step on the clips (reconstruction: mel +
    multi-resolution STFT + flow KL); resynthesis and posterior means of the clips."""
    from experiments.flow_vae import tiny
    from speech_jax.train.tasks import flow_vae as task

    config = tiny.get_config()
    config.model.update(dict(frame_dim=96, frame_mlp_dim=288, frame_layers=3, kl_warmup_steps=50,
                             disc_start_step=-1, lambda_stft=15.0))
    config.optim.learning_rate = 2e-3
    audio, audio_len = padded(clips())
    batch = dict(audio=jnp.asarray(audio), audio_len=jnp.asarray(audio_len))
    model = task.build_model(config, nnx.Rngs(0))
    tx, schedule = task.make_optimizer(config.optim, steps)
    graphdef, state = init_train_state(model, tx)
    discriminators = jax.device_get(state.params[task.DISC])
    step = jax.jit(task.make_train_step(task, graphdef, tx, schedule), donate_argnums=0,
                   compiler_options=OPTIMIZED)
    key = jax.random.key(0)
    for i in range(steps):
        state, metrics = step(state, batch, jax.random.fold_in(key, i))
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), discriminators,
                         jax.device_get(state.params[task.DISC]))
    model = nnx.merge(graphdef, state.params, state.rest)
    out = jax.device_get(jax.jit(task.eval_fn)(model, batch))
    return dict(config=config.to_dict(), generator=_numpy(nnx.state(model.generator)), audio=audio,
                audio_len=audio_len, wav_hat=out["wav_hat"], mel_distance=float(out["mel_distance"]),
                latents=out["latent_mean"], frame_mask=out["frame_mask"].astype(bool),
                skipped_steps=int(metrics["skipped_steps"]),
                discriminators_moved=max(jax.tree.leaves(moved)), d_loss=float(metrics["d_loss"]))
