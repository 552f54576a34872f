"""The synthesis backend: nine pure array programs over static bucket shapes, and one class that calls them.

  speaker(ref_audio [B,R], ref_len [B])      -> ar_spk [B,d_model], fm_spk [B,spk_dim]
  voice(v [B,spk_dim])                       -> ar_spk [B,d_model], fm_spk [B,spk_dim]   (a saved voice; fm_spk
                                                is v, the vector of flow matching's frozen encoder)
  tokenize(audio [B,R], len [B])             -> ids [B,R/hop/2], token_mask         (one-shot prompt tokens)
  vae_encode(audio [B,R], len [B])           -> mean [B,R/hop,D]                    (one-shot prompt latent)
  ar_generate(text_ids [B,L], text_len, prompt_text_ids [B,L], prompt_text_len, prompt_tokens [B,Pa],
              prompt_tokens_len, spk [B,d_model], key_data, temperature [], top_p [])
                                             -> tokens [B,N] (-1 from EOS on), lengths [B]
  ar_generate_guided(the same, labels [B,S], label_len [B], weight [], progress [])
                                             -> the same, sampled under CTC guidance (the tokenizer's head
                                                reading the labels; speech_jax/infer/ctc_guidance.py)
  fm_sample(x0 [B,F,D], tokens [B,F/2], frame_mask [B,F], spk [B,spk_dim], prompt [B,F,D],
            prompt_mask [B,F], cfg_weight [])  -> z [B,F,D]
  vae_decode(z [B,F,D], frame_mask [B,F])    -> wav [B,F·hop]
  score_text(tokens [B,N], lengths [B], labels [B,S], label_len [B])
                                             -> nll [B]  (the tokenizer CTC head's, a label: best-of-n)

Every program is a pure function of the weights of the stages it `USES` (flat {"a.b.c": array} dicts,
one per stage) followed by the arrays above; the batch size B is free, every other size is a bucket
of `Spec`. In memory the programs are jitted (`jit_programs`); a serving bundle holds the very same
functions exported to StableHLO (`speech_jax.export`). `ProgramBackend` calls either, so the host-side
driver (`speech_jax.infer.synthesizer`) is one algorithm for both.

Randomness: AR sampling runs inside `ar_generate` from the key data it is given; the flow-matching
start noise x0 is drawn by the driver with `jax.random` and passed in. Settings that fix a program's
shapes or control flow (top_k, fm_steps, ...) are static `Spec` fields; temperature, top_p and
cfg_weight are traced arguments.

This module must not import `speech_jax.models` at import time: a bundle is served without them.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Callable

import jax
import jax.numpy as jnp

COMPONENTS = ("tokenizer", "ar", "flow_matching")
# Which stages' weights each program takes, in argument order.
USES = {
    "speaker": ("ar", "flow_matching"),
    "voice": ("ar",),
    "tokenize": ("tokenizer",),
    "vae_encode": ("flow_matching",),
    "ar_generate": ("ar",),
    "ar_generate_guided": ("ar", "tokenizer"),
    "fm_sample": ("flow_matching",),
    "vae_decode": ("flow_matching",),
    "score_text": ("tokenizer",),
}
PROGRAMS = tuple(USES)
# Static settings each program's code depends on (beyond the shapes).
STATIC = {"ar_generate": ("top_k", "rep_window", "rep_threshold", "min_ratio", "max_ratio"),
          "ar_generate_guided": ("top_k", "rep_window", "rep_threshold", "min_ratio", "max_ratio"),
          "fm_sample": ("fm_steps", "fm_method", "fm_grid")}


@dataclasses.dataclass(frozen=True)
class Spec:
    """Static shapes (buckets) and settings of the programs; JSON-able (a bundle's manifest holds it)."""

    sample_rate: int
    hop: int               # samples per mel / latent frame; a token covers 2 frames
    latent_dim: int        # Flow-VAE latent channels D
    codebook_size: int     # audio tokens K
    d_model: int           # the AR speaker slot's width
    spk_dim: int           # the flow-matching speaker vector's width
    text_len: int          # L: text-unit ids of the target text, and of the prompt text (AR data.max_text_len)
    prompt_tokens: int     # Pa: one-shot prompt tokens (AR data.prompt_max_seconds)
    max_new_tokens: int    # N: generated tokens at most
    score_text_len: int = 128  # S: the tokenizer's text units a piece at most (score_text's labels)
    top_k: int = 25
    rep_window: int = 10
    rep_threshold: float = 0.1
    min_ratio: float = 2.0  # audio tokens a text unit at least / at most (the text units' `token_ratios`)
    max_ratio: float = 20.0
    fm_steps: int = 10
    fm_method: str = "euler"
    fm_grid: str = "cosine"
    # Flow matching's speaker encoder: "frozen" (the AR's: a saved voice's one vector serves both stages)
    # or "trained" (its own: a saved voice needs flow matching's vector too, `v_fm`).
    fm_speaker_encoder: str = "frozen"

    @property
    def ref_samples(self) -> int:
        """R: reference audio samples (the longest one-shot prompt; zero-shot references are cropped)."""
        return 2 * self.hop * self.prompt_tokens

    @property
    def frames(self) -> int:
        """F: latent frames flow matching runs on: prompt tokens + generated tokens, 2 frames each."""
        return 2 * (self.prompt_tokens + self.max_new_tokens)

    def replace(self, **changes) -> "Spec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def key_data_spec() -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(*(lambda k: (k.shape, k.dtype))(jax.random.key_data(jax.random.key(0))))


def input_specs(spec: Spec, batch) -> dict[str, tuple[jax.ShapeDtypeStruct, ...]]:
    """Array arguments (after the weights) of every program; `batch` an int or a symbolic dimension."""
    s, b = jax.ShapeDtypeStruct, batch
    f32, i32 = jnp.float32, jnp.int32
    ref = (s((b, spec.ref_samples), f32), s((b,), i32))
    frames, d = spec.frames, spec.latent_dim
    scalar = s((), f32)
    ar_generate = (s((b, spec.text_len), i32), s((b,), i32), s((b, spec.text_len), i32), s((b,), i32),
                   s((b, spec.prompt_tokens), i32), s((b,), i32), s((b, spec.d_model), f32),
                   key_data_spec(), scalar, scalar)
    return {
        "speaker": ref,
        "voice": (s((b, spec.spk_dim), f32),),
        "tokenize": ref,
        "vae_encode": ref,
        "ar_generate": ar_generate,
        "ar_generate_guided": ar_generate + (s((b, spec.score_text_len), i32), s((b,), i32), scalar, scalar),
        "fm_sample": (s((b, frames, d), f32), s((b, frames // 2), i32), s((b, frames), jnp.bool_),
                      s((b, spec.spk_dim), f32), s((b, frames, d), f32), s((b, frames), jnp.bool_), scalar),
        "vae_decode": (s((b, frames, d), f32), s((b, frames), jnp.bool_)),
        "score_text": (s((b, spec.max_new_tokens), i32), s((b,), i32), s((b, spec.score_text_len), i32),
                       s((b,), i32)),
    }


# --- weights as flat dicts ------------------------------------------------------------------------

def _key(path) -> str:
    """A state leaf's path as "a.b.0.c" (dict keys and list indices; the Variable's `.value` dropped)."""
    return ".".join(str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey))


@dataclasses.dataclass(frozen=True, eq=False)
class Template:
    """How a stage's flat weights become its NNX module again: graph, state tree and leaf keys.

    Equal (and hashed) by a fingerprint of its structure, so programs built from equal templates
    are the same Python functions and reuse their compilations across `Synthesizer` instances
    (a GraphDef holding dict attributes is not hashable itself)."""

    graphdef: object
    treedef: object
    keys: tuple[str, ...]
    fingerprint: str

    @classmethod
    def split(cls, model) -> tuple["Template", dict[str, jax.Array]]:
        """(template, flat weights) of an NNX module (all its variables: params and the rest)."""
        from flax import nnx
        graphdef, state = nnx.split(model)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
        keys = tuple(_key(path) for path, _ in leaves)
        if len(set(keys)) != len(keys):
            raise ValueError(f"state paths of {type(model).__name__} do not give unique keys")
        fingerprint = hashlib.sha256(repr((graphdef, treedef, keys)).encode()).hexdigest()
        return cls(graphdef, treedef, keys, fingerprint), dict(zip(keys, (leaf for _, leaf in leaves)))

    def __hash__(self):
        return hash(self.fingerprint)

    def __eq__(self, other):
        return isinstance(other, Template) and self.fingerprint == other.fingerprint

    def state(self, flat: dict):
        return jax.tree.unflatten(self.treedef, [flat[k] for k in self.keys])

    def module(self, flat: dict):
        from flax import nnx
        return nnx.merge(self.graphdef, self.state(flat))


def make_programs(templates: dict[str, Template], spec: Spec) -> dict[str, Callable]:
    """The nine programs as pure functions (weights first, in `USES` order); see the module docstring."""
    from speech_jax.infer.ar_decode import generate
    from speech_jax.infer.ctc_guidance import code_table
    from speech_jax.models.ar_layout import build_prefix
    from speech_jax.models.audio_tokenizer import encode

    tok, ar, fm = (templates[c] for c in COMPONENTS)

    def speaker(ar_w, fm_w, ref_audio, ref_len):
        return (ar.module(ar_w).speaker_embedding(ref_audio, ref_len).astype(jnp.float32),
                fm.module(fm_w).encode_speaker(ref_audio, ref_len).astype(jnp.float32))

    def voice(ar_w, v):
        # v is what the speaker encoder would give (flow matching's frozen copy of it reads the same; a
        # flow matching that trained its own is given its vector by the driver: `Spec.fm_speaker_encoder`).
        v = v.astype(jnp.float32)
        return ar.module(ar_w).speaker_slot(v).astype(jnp.float32), v

    def tokenize(tok_w, audio, length):
        return encode(tok.module(tok_w), audio, length)

    def vae_encode(fm_w, audio, length):
        mean, _, frame_mask = fm.module(fm_w).frozen.vae.encode(audio, length)
        return jnp.where(frame_mask[..., None], mean, 0.0).astype(jnp.float32)

    def ar_generate(ar_w, text_ids, text_len, prompt_text_ids, prompt_text_len, prompt_tokens,
                    prompt_tokens_len, spk, key_data, temperature, top_p, guidance=None):
        model = ar.module(ar_w)
        prefix = build_prefix(text_ids, text_len, prompt_text_ids, prompt_text_len, prompt_tokens,
                              prompt_tokens_len, codebook_size=model.codebook_size,
                              use_speaker=model.speaker != "none")
        return generate(ar.graphdef, ar.state(ar_w), prefix, spk, jax.random.wrap_key_data(key_data),
                        max_new_tokens=spec.max_new_tokens, temperature=temperature, top_k=spec.top_k,
                        top_p=top_p, rep_window=spec.rep_window, rep_threshold=spec.rep_threshold,
                        min_ratio=spec.min_ratio, max_ratio=spec.max_ratio, guidance=guidance)

    def ar_generate_guided(ar_w, tok_w, *arrays):
        *ar_arrays, labels, label_len, weight, progress = arrays
        guidance = dict(table=code_table(tok.module(tok_w)), labels=labels, label_len=label_len, weight=weight,
                        progress=progress)
        return ar_generate(ar_w, *ar_arrays, guidance=guidance)

    def fm_sample(fm_w, x0, tokens, frame_mask, spk, prompt, prompt_mask, cfg_weight):
        # prompt and result in Flow-VAE latents (the stage converts to and from its own latent statistics)
        return fm.module(fm_w).sample_latents(x0, tokens, frame_mask, spk, prompt, prompt_mask,
                                              steps=spec.fm_steps, method=spec.fm_method,
                                              grid_kind=spec.fm_grid, cfg_weight=cfg_weight)

    def vae_decode(fm_w, z, frame_mask):
        return fm.module(fm_w).frozen.vae.decode(z, frame_mask)

    def score_text(tok_w, tokens, lengths, labels, label_len):
        # How well generated tokens say their text: the tokenizer's CTC head reading them (best-of-n).
        mask = jnp.arange(tokens.shape[1])[None] < lengths[:, None]
        return tok.module(tok_w).text_nll(tokens, mask, labels, label_len)

    return dict(speaker=speaker, voice=voice, tokenize=tokenize, vae_encode=vae_encode, ar_generate=ar_generate,
                ar_generate_guided=ar_generate_guided, fm_sample=fm_sample, vae_decode=vae_decode,
                score_text=score_text)


def _static_key(spec: Spec, name: str) -> Spec:
    """The spec with the static settings `name` does not read reset, so e.g. a new top_k recompiles
    ar_generate only."""
    defaults = {f.name: f.default for f in dataclasses.fields(Spec) if f.default is not dataclasses.MISSING}
    unused = {k: v for k, v in defaults.items() if k not in STATIC.get(name, ())}
    return spec.replace(**unused)


@functools.lru_cache(maxsize=None)
def _jitted(templates: tuple[tuple[str, Template], ...], spec: Spec, name: str) -> Callable:
    return jax.jit(make_programs(dict(templates), spec)[name])


def jit_programs(templates: dict[str, Template]) -> Callable[[str, Spec], Callable]:
    """The in-memory provider: (program name, spec) -> the jitted program (cached per process)."""
    frozen = tuple(sorted(templates.items()))
    return lambda name, spec: _jitted(frozen, _static_key(spec, name), name)


class ProgramBackend:
    """The programs bound to weights. `provide(name, spec)` gives a program's callable (jitted in
    memory, deserialised StableHLO in a bundle); it may refuse a spec it cannot serve."""

    def __init__(self, spec: Spec, weights: dict[str, dict], provide: Callable[[str, Spec], Callable]):
        self.spec, self.weights, self.provide = spec, weights, provide

    def configured(self, **settings) -> "ProgramBackend":
        """The same backend with other static settings (e.g. top_k, fm_steps)."""
        spec = self.spec.replace(**settings)
        return self if spec == self.spec else ProgramBackend(spec, self.weights, self.provide)

    def _call(self, name: str, *arrays):
        fn = self.provide(name, self.spec)
        return jax.tree.map(jax.device_get, fn(*(self.weights[c] for c in USES[name]), *arrays))

    def speaker(self, ref_audio, ref_len):
        return self._call("speaker", ref_audio, ref_len)

    def voice(self, v):
        return self._call("voice", v)

    def tokenize(self, audio, length):
        return self._call("tokenize", audio, length)

    def vae_encode(self, audio, length):
        return self._call("vae_encode", audio, length)

    def ar_generate(self, *arrays):
        return self._call("ar_generate", *arrays)

    def ar_generate_guided(self, *arrays):
        return self._call("ar_generate_guided", *arrays)

    def fm_sample(self, *arrays):
        return self._call("fm_sample", *arrays)

    def vae_decode(self, z, frame_mask):
        return self._call("vae_decode", z, frame_mask)

    def score_text(self, tokens, lengths, labels, label_len):
        return self._call("score_text", tokens, lengths, labels, label_len)
