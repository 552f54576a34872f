"""MiniMax-Speech AR transformer: a decoder-only model over audio tokens, conditioned on text and a
speaker vector, over the layout of `ar_layout` (`[spk] [prompt text] [text] [SOS prompt tokens]
[target tokens EOS]`).

The speaker slot holds, by `cfg.speaker`:
  "learnable"  the `SpeakerEncoder` vector of the reference, projected to d_model; trained jointly.
  "fixed"      the paper's frozen "SpkEmbed" baseline. We use a frozen embedding with no learned
               parameters at all: the per-channel mean and std of the reference's normalised log-mel
               over its valid frames (2·n_mels dims, gradient stopped), projected by a learned dense.
               A pretrained verification model would need outside weights; this keeps the ablation
               self-contained while still giving the model a fixed, untrainable reference summary.
  "none"       no speaker slot (masked out): the prompt alone carries the voice.

Decoding keeps a KV cache: `init_cache`, `prefill` (the prefix layout) and `decode_step` (one token).
"""
import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from speech_jax.audio.mel import MelSpec
from speech_jax.layers import Transformer, attention_mask, dense, param
from speech_jax.models.ar_layout import AUDIO, SPK, TEXT
from speech_jax.models.speaker_encoder import SpeakerEncoder, mel_statistics

SPEAKER_MODES = ("learnable", "fixed", "none")


def causal_mask(q_valid: jax.Array, key_valid: jax.Array, q_offset=0) -> jax.Array:
    """[B, T, M]: causal over valid keys. A padding query sees every earlier slot instead, so no row is
    empty (its output is never used; this only keeps fused kernels away from all-masked rows)."""
    t, m = q_valid.shape[1], key_valid.shape[1]
    causal = attention_mask(None, t, m, causal=True, q_offset=q_offset)
    keyed = attention_mask(key_valid, t, m, causal=True, q_offset=q_offset)
    return keyed | (causal & ~q_valid[:, :, None])


class ARTransformer(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, spec: MelSpec, *, rngs: nnx.Rngs):
        if cfg.speaker not in SPEAKER_MODES:
            raise ValueError(f"unknown speaker mode {cfg.speaker!r}; use one of {SPEAKER_MODES}")
        layer = int(cfg.get("guided_attention_layer", 2))
        if cfg.get("guided_attention_weight", 0.0) and not -cfg.num_layers <= layer < cfg.num_layers:
            raise ValueError(f"guided_attention_layer={layer} is not one of the {cfg.num_layers} layers")
        d, dtype = cfg.d_model, jnp.dtype(cfg.dtype)
        self.codebook_size = cfg.codebook_size
        self.sos_id, self.eos_id, self.audio_vocab = cfg.codebook_size, cfg.codebook_size + 1, cfg.codebook_size + 2
        self.speaker, self.d_model, self.dtype = cfg.speaker, d, dtype
        # Residual dropout in training (`dropout` > 0): a regulariser against memorising the corpus's
        # sentences, which the long recipe's AR does within 2000 steps (docs/what_limits_quality.md).
        self.dropout = float(cfg.get("dropout", 0.0))
        # Training only: the share of target tokens whose input is a random code (labels stay true), against
        # the exposure bias of teacher forcing (speech_jax/train/tasks/ar.py `corrupt_targets`).
        self.token_noise = float(cfg.get("token_noise", 0.0))
        if not 0.0 <= self.token_noise < 1.0:
            raise ValueError(f"token_noise={self.token_noise} must lie in [0, 1)")

        self.speaker_encoder = SpeakerEncoder(cfg, spec, rngs=rngs) if cfg.speaker == "learnable" else None
        spk_in = {"learnable": cfg.spk_dim, "fixed": 2 * spec.n_mels}.get(cfg.speaker)
        self.spk_proj = None if spk_in is None else dense(rngs, spk_in, d, (None, "embed"), dtype=dtype,
                                                          use_bias=True)
        self.spec = spec

        embed_init = nnx.initializers.normal(1.0)
        self.text_embed = param(rngs, embed_init, (cfg.text_vocab_size, d), ("vocab", "embed"))
        self.audio_embed = param(rngs, embed_init, (self.audio_vocab, d), ("vocab", "embed"))
        self.decoder = Transformer(cfg.num_layers, d, cfg.num_heads, cfg.num_kv_heads, cfg.mlp_dim,
                                   rope_theta=cfg.rope_theta, impl=cfg.attention_impl, dtype=dtype,
                                   scan_layers=bool(cfg.scan_layers), remat=cfg.remat,
                                   lora_rank=int(cfg.get("lora_rank", 0)),
                                   lora_alpha=float(cfg.get("lora_alpha", 16.0)),
                                   dropout=self.dropout, rngs=rngs)
        self.head = dense(rngs, d, self.audio_vocab, ("embed", "vocab"), dtype=dtype)
        # Optional alignment aid (`text_ctc_weight` > 0; training only): CTC from the hidden states that
        # predict the target tokens to the target's text units, `text_ctc_rate` labels a slot. It asks
        # each audio position to know which text unit is being spoken, which a decoder-only model this
        # small otherwise learns slowly from the token loss alone (docs/what_limits_quality.md).
        self.text_ctc_weight = float(cfg.get("text_ctc_weight", 0.0))
        self.text_ctc_rate = int(cfg.get("text_ctc_rate", 2))
        if self.text_ctc_weight:
            self.text_ctc_head = dense(rngs, d, cfg.text_vocab_size * self.text_ctc_rate, ("embed", "vocab"),
                                       dtype=dtype, use_bias=True)
        # Optional alignment aid (`guided_attention_weight` > 0; training only, no parameters): the first
        # `guided_attention_heads` heads of layer `guided_attention_layer` are asked to read the target text
        # along the diagonal (speech_jax/train/guided_attention.py).
        self.guided_attention_weight = float(cfg.get("guided_attention_weight", 0.0))
        self.guided_attention_layer = int(cfg.get("guided_attention_layer", 2)) % cfg.num_layers
        self.guided_attention_heads = int(cfg.get("guided_attention_heads", 2))
        self.guided_attention_sigma = float(cfg.get("guided_attention_sigma", 0.2))
        # Training only: the layout packed into fewer slots (>= 0: room for prompts of this many slots;
        # speech_jax/models/ar_layout.py). The same function of every valid slot, so no checkpoint depends on it.
        self.pack_prompt_slots = int(cfg.get("pack_prompt_slots", -1))

    # --- conditioning ---------------------------------------------------------------------------

    def speaker_embedding(self, ref_audio: jax.Array, ref_len: jax.Array) -> jax.Array:
        """Reference audio [B, T] (zero padded), lengths [B] -> the spk-slot vector [B, d_model]."""
        if self.speaker == "none":
            return jnp.zeros((ref_audio.shape[0], self.d_model), self.dtype)
        if self.speaker == "learnable":
            return self.speaker_slot(self.speaker_encoder(ref_audio, ref_len))
        return self.spk_proj(jax.lax.stop_gradient(mel_statistics(ref_audio, ref_len, self.spec)))

    def speaker_slot(self, v: jax.Array) -> jax.Array:
        """A speaker vector [B, spk_dim] (the speaker encoder's output, or a saved voice) -> [B, d_model].

        A voice (PVC, T2V) is such a v without its recording: both this slot and flow matching read v."""
        if self.speaker != "learnable":
            raise ValueError(f"this AR stage has no learnable speaker encoder (speaker={self.speaker!r}): "
                             "it takes no voice vector")
        return self.spk_proj(v)

    def embed(self, layout: dict, spk: jax.Array) -> jax.Array:
        """Per-slot input vectors [B, S, d]: text, audio (SOS/prompt/target/EOS) or speaker; 0 on padding."""
        kind = layout["kind"][..., None]
        text = jnp.take(self.text_embed[...], layout["text_ids"], axis=0)
        audio = jnp.take(self.audio_embed[...], layout["audio_ids"], axis=0)
        x = (jnp.where(kind == TEXT, text, 0.0) + jnp.where(kind >= AUDIO, audio, 0.0)
             + jnp.where(kind == SPK, spk.astype(jnp.float32)[:, None], 0.0))
        return x.astype(self.dtype)

    def logits(self, h: jax.Array) -> jax.Array:
        return self.head(h).astype(jnp.float32)

    # --- training / teacher forcing ----------------------------------------------------------------

    def hidden(self, layout: dict, spk: jax.Array, probe: int | None = None, dropout_rng: jax.Array | None = None):
        """Layout [B, S] (from `build_layout` or `build_prefix`), spk [B, d] -> final states [B, S, d];
        with `probe` (a layer index) also that layer's attention queries and keys ([B, S, H|K, D]);
        with `dropout_rng` (training) the decoder's residual dropout is on."""
        valid = layout["valid"]
        return self.decoder(self.embed(layout, spk), positions=layout["positions"],
                            mask=causal_mask(valid, valid), causal=True, key_valid=valid, probe=probe,
                            dropout_rng=dropout_rng if self.dropout else None)

    def __call__(self, layout: dict, spk: jax.Array) -> jax.Array:
        """Layout [B, S], spk [B, d] -> logits [B, S, K+2] fp32 (every slot; training needs only the
        loss slots: `logits(hidden(...)[:, slots])`)."""
        return self.logits(self.hidden(layout, spk))

    def text_ctc_logits(self, hidden: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Hidden states [B, S, d] and their mask [B, S] -> CTC logits over text units [B, r·S, V] (fp32)
        and their mask [B, r·S]."""
        b, s, _ = hidden.shape
        logits = self.text_ctc_head(hidden).astype(jnp.float32).reshape(b, s * self.text_ctc_rate, -1)
        return logits, jnp.repeat(mask, self.text_ctc_rate, axis=1)

    # --- KV-cache decoding ----------------------------------------------------------------------

    def init_cache(self, batch: int, max_len: int, dtype=None) -> dict:
        """{"k", "v"} per layer [B, max_len, K, D] (stacked [L, ...] with scan_layers), "valid" [B, max_len]."""
        cache = self.decoder.init_cache(batch, max_len, dtype or self.dtype)
        cache["valid"] = jnp.zeros((batch, max_len), bool)
        return cache

    def prefill(self, prefix: dict, spk: jax.Array, cache: dict) -> tuple[jax.Array, dict]:
        """Runs the prefix layout [B, S0] into cache slots 0..S0-1 -> (logits of its last slot [B, V], cache)."""
        valid = jax.lax.dynamic_update_slice(cache["valid"], prefix["valid"], (0, 0))
        h, kv = self.decoder.extend(self.embed(prefix, spk), prefix["positions"],
                                    {"k": cache["k"], "v": cache["v"]},
                                    causal_mask(prefix["valid"], valid), 0)
        return self.logits(h[:, -1]), dict(kv, valid=valid)

    def decode_step(self, token: jax.Array, position: jax.Array, slot: jax.Array,
                    cache: dict) -> tuple[jax.Array, dict]:
        """Audio token [B] at RoPE position [B], written to cache slot `slot` (scalar) -> (logits [B, V], cache)."""
        b = token.shape[0]
        slot = jnp.asarray(slot, jnp.int32)
        valid = jax.lax.dynamic_update_slice(cache["valid"], jnp.ones((b, 1), bool), (0, slot))
        x = jnp.take(self.audio_embed[...], token, axis=0)[:, None].astype(self.dtype)
        h, kv = self.decoder.extend(x, position[:, None], {"k": cache["k"], "v": cache["v"]},
                                    causal_mask(jnp.ones((b, 1), bool), valid, slot), slot)
        return self.logits(h[:, 0]), dict(kv, valid=valid)


def flops_per_token(cfg: ml_collections.ConfigDict, seq_len: float) -> float:
    """Forward matmul FLOPs of one token that attends to seq_len keys (for MFU; training is ~3x this).

    q/k/v/o projections, attention scores and values over seq_len keys, SwiGLU and the output head.
    Under a causal mask a token of a T-slot sequence attends to T/2 keys on average: pass T/2 to count
    only the unmasked half (MaxText's convention), T to count the whole square. Embedding lookups are
    free; the speaker encoder runs once per reference, not per token, and is left out."""
    d, h, kv = cfg.d_model, cfg.num_heads, cfg.num_kv_heads
    hd = d // h
    proj = 2 * d * hd * (2 * h + 2 * kv)
    attn = 2 * 2 * seq_len * h * hd
    mlp = 2 * 3 * d * cfg.mlp_dim
    head = 2 * d * (cfg.codebook_size + 2)
    return float(cfg.num_layers * (proj + attn + mlp) + head)
