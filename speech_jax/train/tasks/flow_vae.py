"""Training task for the Flow-VAE: a GAN step with two optimizers in one jitted function.

Per step (DAC / BigVGAN recipe, REFERENCE.md): the generator (encoder → z → decoder) runs once,
keeping its VJP; the discriminators are updated on the stop-gradient output; then the generator's loss
(multi-scale log-mel L1, optionally a multi-resolution STFT loss, LSGAN adversarial and feature matching
against the *updated* discriminators, KL with warm-up) is differentiated w.r.t. its output and pulled back
through the saved VJP, so the
generator is run forward once. The discriminators (and the adversarial terms) can start late.
"""
from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

from speech_jax.layers import init_rngs
from speech_jax.models import gan_losses
from speech_jax.models.discriminators import Discriminators
from speech_jax.models.flow_vae import FlowVAE, latent_spread
from speech_jax.train.decay_mask import flat_mask, mask_of
from speech_jax.train.optim import learning_rate_now, make_optimizer as make_single_optimizer
from speech_jax.train.state import TrainState
from speech_jax.train.step import all_finite, select_tree

GEN, DISC = "generator", "discriminators"


class FlowVAEGAN(nnx.Module):
    """The generator (the Flow-VAE, kept for serving) and its training-only discriminators."""

    def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        cfg = config.model
        if cfg.get("sample_rate", config.data.sample_rate) != config.data.sample_rate:
            raise ValueError(f"model.sample_rate={cfg.sample_rate} must equal data.sample_rate="
                             f"{config.data.sample_rate}")
        self.generator = FlowVAE(cfg, rngs=rngs)
        self.discriminators = Discriminators(cfg, rngs=rngs)
        # Static settings the step reads (it only receives the graph).
        self.sample_rate = int(config.data.sample_rate)
        self.mel_scales = tuple(tuple(s) for s in cfg.mel_scales)
        self.stft_ffts = tuple(cfg.eval_stft_ffts)
        self.weights = dict(mel=float(cfg.lambda_mel), adv=float(cfg.lambda_adv), fm=float(cfg.lambda_fm),
                            kl=float(cfg.kl_weight), stft=float(cfg.get("lambda_stft", 0.0)),
                            phase=float(cfg.get("lambda_phase", 0.0)))
        # .get: workdirs saved before the STFT loss existed restore with their own configs
        self.stft_loss_ffts = tuple(cfg.get("stft_loss_ffts", (512, 1024, 2048)))
        self.phase_loss_ffts = tuple(cfg.get("phase_loss_ffts", (512, 1024)))
        self.kl_warmup_steps = int(cfg.kl_warmup_steps)
        self.disc_start_step = int(cfg.disc_start_step)
        # Evaluation also decodes the posterior means plus this much Gaussian noise (× each utterance's latent
        # spread) and scores its voicing: how far off its encoder's means the decoder still voices, as it must
        # for flow matching's latents (0: skipped).
        self.eval_latent_noise = float(cfg.get("eval_latent_noise", 0.0))


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> FlowVAEGAN:
    return FlowVAEGAN(config, rngs=rngs)


class GanOptimizers:
    """One optax transform per network; `init` gives {generator: ..., discriminators: ...} states.

    With `flat`, each network's optimizer works on its parameters raveled into one vector (the same
    arithmetic: global-norm clipping and AdamW are elementwise or global). The GAN has hundreds of small
    parameter arrays, and per-array updates and skip-selects are thousands of tiny XLA fusions: about
    half of the CPU compile time of the step. Flat optimizer state is replicated, so accelerator configs
    that shard the optimizer state (FSDP) keep it per array."""

    def __init__(self, generator: optax.GradientTransformation, discriminators: optax.GradientTransformation,
                 flat: bool = False):
        self.g, self.d, self.flat = generator, discriminators, flat

    def ravel(self, tree):
        """(the optimizer's view of a parameter tree: one vector if flat, else the tree; the inverse)."""
        return ravel_pytree(tree) if self.flat else (tree, lambda t: t)

    def init(self, params):
        return {GEN: self.g.init(self.ravel(params[GEN])[0]), DISC: self.d.init(self.ravel(params[DISC])[0])}

    def apply(self, part: str, grads, opt_state, params):
        """grads (a tree) and `params` in the optimizer's view -> (updated params in that view, new
        optimizer state, gradient global norm, whether every gradient entry is finite)."""
        g = self.ravel(grads)[0]
        # Which entries weight decay may touch (optim.decay_mask), in the optimizer's view; from the tree.
        mask = flat_mask(grads) if self.flat else mask_of(grads)
        updates, opt_state = (self.g if part == GEN else self.d).update(g, opt_state, params, decay_mask=mask)
        return optax.apply_updates(params, updates), opt_state, optax.global_norm(g), all_finite(g)


def make_optimizer(cfg, total_steps: int, fitted: bool = False):
    """AdamW for both; the discriminators may use their own learning rate (optim.disc_learning_rate);
    `optim.flat_state` ravels each network's parameters into one vector for the optimizer; `fitted`: both
    schedules' length in their states (train.fit_schedule_at)."""
    g_tx, schedule = make_single_optimizer(cfg, total_steps, fitted)
    d_cfg = ml_collections.ConfigDict(cfg.to_dict())
    if cfg.get("disc_learning_rate", 0.0):
        d_cfg.learning_rate = cfg.disc_learning_rate
    d_tx, _ = make_single_optimizer(d_cfg, total_steps, fitted)
    return GanOptimizers(g_tx, d_tx, flat=bool(cfg.get("flat_state", False))), schedule


def _with(params, **parts):
    """A copy of the params tree with some top-level parts replaced (same pytree structure)."""
    out = jax.tree.map(lambda x: x, params)
    for k, v in parts.items():
        out[k] = v
    return out


def _when(active: bool | None, pred, on, off, operand):
    """`on(operand)` when the discriminators run (`active`), `off(operand)` when they do not; None (a late start
    in one program) chooses at run time with `lax.cond(pred, ...)`."""
    if active is None:
        return jax.lax.cond(pred, on, off, operand)
    return on(operand) if active else off(operand)


def train_phases(config: ml_collections.ConfigDict) -> dict:
    """{first step: make_train_step options}: a late start of the discriminators is a second program from
    that step on, not a `lax.cond` in one: XLA:CPU runs a conditional's convolutions without their
    parallelism (the demo's GAN step: 17.5 s inside the cond, 2.0 s outside; docs/what_limits_quality.md).
    A run without discriminators never compiles them."""
    start = int(config.model.disc_start_step)
    if start <= 0:
        return {0: {"discriminators": start == 0}}
    return {0: {"discriminators": False}, start: {"discriminators": True}}


def _sample_mask(batch):
    t = batch["audio"].shape[1]
    return jnp.arange(t)[None] < batch["audio_len"][:, None]


def make_train_step(task, graphdef, tx: GanOptimizers, schedule, discriminators: bool | None = None):
    """The GAN step; `discriminators` True / False builds it with / without them (a phase of the run), None
    decides by `model.disc_start_step`: with them from 0, never below 0, else a `lax.cond` on the step (one
    program for the whole run, as ahead-of-time compiling wants)."""
    del task

    def train_step(state: TrainState, batch, rng):
        static = nnx.merge(graphdef, state.params, state.rest)  # for its static settings only
        w = static.weights
        g_p, d_p = state.params[GEN], state.params[DISC]
        mask = _sample_mask(batch)
        wav = batch["audio"].astype(jnp.float32) * mask
        start = static.disc_start_step
        started = (state.step >= start) & (start >= 0)
        active = discriminators
        if active is None:
            active = True if start == 0 else False if start < 0 else None

        def discriminate(d, x):
            return nnx.merge(graphdef, _with(state.params, **{DISC: d}), state.rest).discriminators(x)

        def generate(g):
            model = nnx.merge(graphdef, _with(state.params, **{GEN: g}), state.rest, copy=True)
            out = model.generator(wav, batch["audio_len"], rng)
            return out["wav_hat"] * mask, out["kl"]

        (wav_hat, kl), generator_vjp = jax.vjp(generate, g_p)

        # 1. Discriminators, on the generator's output with no gradient to the generator; real and fake
        # go through as one batch (fewer, larger convolutions).
        def d_loss_of(d):
            logits, _ = discriminate(d, jnp.concatenate([wav, jax.lax.stop_gradient(wav_hat)]))
            real, fake = zip(*(jnp.split(x, 2) for x in logits))
            return gan_losses.lsgan_discriminator_loss(real, fake)

        g_view, g_unravel = tx.ravel(g_p)
        d_view, d_unravel = tx.ravel(d_p)

        def d_update(_):
            loss, grads = jax.value_and_grad(d_loss_of)(d_p)
            return loss, *tx.apply(DISC, grads, state.opt_state[DISC], d_view)

        def d_idle(_):
            zero = jnp.zeros((), jnp.float32)
            return zero, d_view, state.opt_state[DISC], zero, jnp.array(True)

        d_loss, d_next, d_opt, d_grad_norm, d_finite = _when(active, started, d_update, d_idle, None)
        d_new = d_unravel(d_next)

        # 2. Generator, against the updated discriminators.
        kl_weight = w["kl"] * jnp.minimum(1.0, (state.step + 1) / max(static.kl_warmup_steps, 1))

        def adversarial(x):
            fake, fake_feats = discriminate(d_new, x)
            _, real_feats = discriminate(d_new, wav)
            return gan_losses.lsgan_generator_loss(fake), gan_losses.feature_matching_loss(real_feats, fake_feats)

        def g_loss_of(x, kl_value):
            mel = gan_losses.multiscale_mel_loss(wav, x, static.sample_rate, mask, static.mel_scales)
            adv, fm = _when(active, started, adversarial, lambda _: (jnp.zeros(()), jnp.zeros(())), x)
            loss = w["mel"] * mel + w["adv"] * adv + w["fm"] * fm + kl_weight * kl_value
            parts = dict(mel_loss=mel, g_adv=adv, g_fm=fm)
            if w["stft"]:  # linear-frequency magnitudes resolve harmonics, which need coherent phase
                parts["stft_loss"] = gan_losses.multiresolution_stft_distance(wav, x, static.stft_loss_ffts, mask)
                loss = loss + w["stft"] * parts["stft_loss"]
            if w["phase"]:  # ... which the magnitudes leave free: the phases' advance, as the input's
                parts["phase_loss"] = gan_losses.phase_derivative_loss(wav, x, static.phase_loss_ffts, mask)
                loss = loss + w["phase"] * parts["phase_loss"]
            return loss, parts

        (g_loss, parts), (ct_wav, ct_kl) = jax.value_and_grad(g_loss_of, argnums=(0, 1), has_aux=True)(wav_hat, kl)
        (g_grads,) = generator_vjp((ct_wav, ct_kl))
        g_next, g_opt, g_grad_norm, g_finite = tx.apply(GEN, g_grads, state.opt_state[GEN], g_view)

        # A non-finite loss or gradient anywhere skips the whole step.
        finite = jnp.isfinite(g_loss) & jnp.isfinite(d_loss) & g_finite & d_finite
        params = _with(state.params, **{GEN: g_unravel(select_tree(finite, g_next, g_view)),
                                        DISC: d_unravel(select_tree(finite, d_next, d_view))})
        opt_state = {GEN: g_opt, DISC: d_opt}
        new = TrainState(step=state.step + 1,
                         params=params,
                         rest=state.rest,
                         opt_state=select_tree(finite, opt_state, state.opt_state),
                         skipped=state.skipped + (~finite).astype(jnp.int32))
        metrics = dict(loss=g_loss, kl=kl, kl_weight=kl_weight, d_loss=d_loss, d_grad_norm=d_grad_norm,
                       grad_norm=g_grad_norm, disc_active=started.astype(jnp.float32),
                       learning_rate=learning_rate_now(schedule, state.opt_state, state.step - state.skipped),
                       skipped_steps=new.skipped, **parts)
        return new, metrics

    return train_step


# --- evaluation ---------------------------------------------------------------------------------

def eval_fn(model: FlowVAEGAN, batch: dict) -> dict:
    """Resynthesis from the posterior mean (no sampling): spectral distances in-graph, audio for the host."""
    vae = model.generator
    mask = _sample_mask(batch)
    wav = batch["audio"].astype(jnp.float32) * mask
    mean, log_std, frame_mask = vae.encode(wav, batch["audio_len"])
    wav_hat = vae.decode(mean, frame_mask)
    wav_hat = jnp.pad(wav_hat, ((0, 0), (0, wav.shape[1] - wav_hat.shape[1]))) * mask
    out = dict(mel_distance=gan_losses.multiscale_mel_loss(wav, wav_hat, model.sample_rate, mask, model.mel_scales),
               stft_distance=gan_losses.multiresolution_stft_distance(wav, wav_hat, model.stft_ffts, mask),
               kl=vae.kl(mean, log_std, mean, frame_mask),
               wav=wav, wav_hat=wav_hat, latent_mean=mean, frame_mask=frame_mask.astype(jnp.int32))
    if model.eval_latent_noise:
        # the same noise at every evaluation: the curve follows the decoder, not the draw
        eps = jax.random.normal(jax.random.key(0), mean.shape, jnp.float32)
        z = mean + model.eval_latent_noise * latent_spread(mean, frame_mask, axes=(1,)) * eps
        noised = vae.decode(z, frame_mask)
        out["wav_noised"] = jnp.pad(noised, ((0, 0), (0, wav.shape[1] - noised.shape[1]))) * mask
    return out


def _utterances(outputs, labels, *keys):
    """Each of `keys`' padded [B, T] audio as a list of its utterances' valid samples."""
    lens = np.asarray(labels["audio_len"])
    return tuple([np.asarray(outputs[key][i, :n]) for i, n in enumerate(lens)] for key in keys)


def host_eval(outputs: dict, labels: dict, tokenizer, config) -> dict:
    """PESQ (wide and narrow band), STOI and latent statistics, on the host; with `model.eval_latent_noise`,
    the voicing of the noised latents' decoding (`noised_voiced_recall`, `noised_pitch_recall`)."""
    from speech_jax.eval.resynthesis import latent_stats, resynthesis_metrics
    refs, ests = _utterances(outputs, labels, "wav", "wav_hat")
    out = resynthesis_metrics(refs, ests, int(config.data.sample_rate))
    if "wav_noised" in outputs:
        noised, = _utterances(outputs, labels, "wav_noised")
        out.update(_noised_voicing(refs, noised, int(config.data.sample_rate)))
    stats = latent_stats(np.asarray(outputs["latent_mean"]), np.asarray(outputs["frame_mask"]).astype(bool))
    out.update({f"latent_{k}": float(v) for k, v in stats.items() if np.ndim(v) == 0})
    return {k: float(v) for k, v in out.items() if np.ndim(v) == 0}


def _noised_voicing(refs, noised, sample_rate: int) -> dict:
    """Recall of the references' voiced frames, and of their pitch within a semitone, in the noised
    decodings; references with under 5 % voiced frames (whispered voices) have nothing to recall."""
    from speech_jax.eval.voicing import voicing_agreement
    rows = [voicing_agreement(r, n, sample_rate) for r, n in zip(refs, noised)]
    rows = [r for r in rows if r["voiced_fraction_reference"] >= 0.05]
    return {f"noised_{k}": float(np.mean([r[k] for r in rows])) if rows else float("nan")
            for k in ("voiced_recall", "pitch_recall")}


def eval_artifacts(outputs: dict, labels: dict, directory: str, config, count: int = 3) -> None:
    """A few resynthesised wavs beside their originals, and a mel-spectrogram comparison PNG."""
    from speech_jax.eval.artifacts import save_mel_comparison, save_wavs
    sample_rate = int(config.data.sample_rate)
    refs, ests = _utterances(outputs, labels, "wav", "wav_hat")
    items = {}
    for i in range(min(count, len(refs))):
        items[f"{i}_original"], items[f"{i}_resynth"] = refs[i], ests[i]
    save_wavs(directory, items, sample_rate)
    save_mel_comparison(f"{directory}/mel.png", refs[0], ests[0], sample_rate, title="original / resynthesised")


# --- FLOPs ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _forward_flops(config_json: str, batch: int, length: int) -> tuple[float, float]:
    """XLA's FLOP count of one generator and one discriminator forward (convolutions dominate)."""
    config = ml_collections.ConfigDict(json.loads(config_json))
    model = nnx.eval_shape(lambda: build_model(config, init_rngs(0)))
    graphdef, state = nnx.split(model)
    wav = jax.ShapeDtypeStruct((batch, length), jnp.float32)
    lens = jax.ShapeDtypeStruct((batch,), jnp.int32)

    def gen(s, x, n):
        return nnx.merge(graphdef, s).generator(x, n, jax.random.key(0))["wav_hat"]

    def disc(s, x):
        return nnx.merge(graphdef, s).discriminators(x)[0]

    g = jax.jit(gen).lower(state, wav, lens).cost_analysis()["flops"]
    d = jax.jit(disc).lower(state, wav).cost_analysis()["flops"]
    return float(g), float(d)


def flops_per_step(config: ml_collections.ConfigDict, batch_shapes: dict) -> float:
    """Generator forward + backward (3 G) and 10 discriminator-forward equivalents: the D step runs it on
    real and fake and back-propagates (6 D), the G step on fake and real and back-propagates through fake (4 D).
    A run whose discriminators never start within `train.steps` (or at all: `disc_start_step < 0`) does
    the 3 G only."""
    b, t = batch_shapes["audio"][:2]
    g, d = _forward_flops(json.dumps(config.to_dict()), int(b), int(t))
    return 3 * g + (10 * d if 0 <= config.model.disc_start_step < config.train.steps else 0.0)
