"""MiniMax-Speech audio tokenizer: Encoder–VQ–Decoder over log-mel, 25 tokens/s, CTC-supervised.

  log-mel (50 Hz) ─conv─▶ strided conv ×½ (25 Hz) ─▶ transformer ─▶ VQ ─┬─▶ CTC head over text units
                                                                       └─▶ transposed conv ×2 (50 Hz)
                                                                           ─▶ transformer ─▶ log-mel
The CTC head reads the *quantised* sequence, so the tokens must carry the linguistic content. Its units
are the stage's text units (BPE pieces or phonemes); `ctc_rate` labels per token let CTC over phonemes,
which come faster than 25 a second in fast speech, read each token as that many CTC frames.
Padded frames are zeroed before every convolution and never attended to, so an utterance gives the
same tokens however much padding its batch has.
"""
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from speech_jax.audio.mel import MelSpec, frame_lengths, log_mel, utterance_normalise
from speech_jax.layers import Conv1d, ConvTranspose1d, Transformer, dense
from speech_jax.models.vq import VectorQuantizer
from speech_jax.sharding import constrain

ACT = ("batch", "length", "embed")


def _masked(x, mask):
    return x * mask[..., None].astype(x.dtype)


class AudioTokenizer(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, spec: MelSpec, *, rngs: nnx.Rngs):
        d, dtype = cfg.d_model, jnp.dtype(cfg.dtype)
        stack = dict(num_layers=cfg.num_layers, d_model=d, num_heads=cfg.num_heads,
                     num_kv_heads=cfg.num_kv_heads, mlp_dim=cfg.mlp_dim, rope_theta=cfg.rope_theta,
                     impl=cfg.attention_impl, dtype=dtype, rngs=rngs,
                     # .get: configs saved before the tokenizer could scan its layers
                     scan_layers=bool(cfg.get("scan_layers", False)), remat=cfg.get("remat", "none"))
        k = cfg.conv_kernel
        # Encoder: 50 Hz mel -> 25 Hz features.
        self.enc_in = Conv1d(spec.n_mels, d, k, dtype=dtype, rngs=rngs)
        self.down = Conv1d(d, d, 4, stride=2, dtype=dtype, rngs=rngs)
        self.encoder = Transformer(**stack)
        self.vq = VectorQuantizer(d, cfg.codebook_size, cfg.code_dim, l2norm=cfg.vq_l2norm,
                                  update=cfg.vq_update, ema_decay=cfg.vq_ema_decay,
                                  dead_ratio=cfg.vq_dead_ratio, data_init=cfg.vq_data_init,
                                  dtype=dtype, rngs=rngs)
        self.ctc_rate = int(cfg.get("ctc_rate", 1))
        if self.ctc_rate < 1:
            raise ValueError(f"model.ctc_rate must be >= 1, got {self.ctc_rate}")
        self.ctc_head = dense(rngs, d, cfg.text_vocab_size * self.ctc_rate, ("embed", "vocab"), dtype=dtype,
                              use_bias=True)
        # Optional CTC on the encoder's output before quantisation: a smooth gradient that makes the features
        # phonetic in a fraction of the steps the straight-through codes need, so the codes cluster phones.
        self.ctc_encoder_weight = float(cfg.get("ctc_encoder_weight", 0.0))
        if self.ctc_encoder_weight:
            self.ctc_encoder_head = dense(rngs, d, cfg.text_vocab_size * self.ctc_rate, ("embed", "vocab"),
                                          dtype=dtype, use_bias=True)
        # Decoder: 25 Hz codes -> 50 Hz mel.
        self.dec_in = Conv1d(d, d, k, dtype=dtype, rngs=rngs)
        self.up = ConvTranspose1d(d, d, 4, stride=2, dtype=dtype, rngs=rngs)
        self.decoder = Transformer(**stack)
        self.mel_out = dense(rngs, d, spec.n_mels, ("embed", None), dtype=dtype, use_bias=True)
        # Optional utterance-level voice for the decoder: the mean and spread of the utterance's own log-mel.
        # What that explains (timbre, mean pitch, loudness) the codes need not carry, so the same words in two
        # voices can share tokens, which an AR model can then predict for a voice it has not heard.
        self.decoder_voice = bool(cfg.get("decoder_voice", False))
        if self.decoder_voice:
            self.voice_proj = dense(rngs, 2 * spec.n_mels, d, (None, "embed"), dtype=dtype, use_bias=True)
        # Optionally the encoder reads each utterance's log-mel normalised over the utterance (CMVN): a voice's
        # tilt and loudness no longer reach the codes (with `decoder_voice` the decoder gets them back).
        self.encoder_utterance_norm = bool(cfg.get("encoder_utterance_norm", False))
        # Training only: each utterance's frequency axis stretched by a factor within 1 ± `vtlp`
        # (speech_jax/audio/vtlp.py), so a few voices a language teach the codes more voices than that.
        self.vtlp = float(cfg.get("vtlp", 0.0))
        if not 0.0 <= self.vtlp < 0.5:
            raise ValueError(f"vtlp={self.vtlp} must lie in [0, 0.5)")
        # Static settings the task's loss reads (loss_fn only receives the model).
        self.spec = spec
        self.mel_mean, self.mel_std = float(cfg.mel_mean), float(cfg.mel_std)
        self.ctc_weight, self.commitment = float(cfg.ctc_weight), float(cfg.commitment)
        self.codebook_weight, self.mel_l2_weight = float(cfg.codebook_weight), float(cfg.mel_l2_weight)
        self.mel_weight = float(cfg.get("mel_weight", 1.0))  # .get: configs saved before the field existed
        self.dtype = dtype

    # --- pieces -------------------------------------------------------------------------------

    def features(self, audio: jax.Array, audio_len: jax.Array):
        """Raw audio [B, T] -> log-mel [B, F, n_mels] (fp32) and its frame mask [B, F]."""
        mel = log_mel(audio, self.spec)
        frames = jnp.arange(mel.shape[1])[None] < frame_lengths(audio_len, self.spec)[:, None]
        return mel, frames

    def encode_frames(self, mel: jax.Array, frame_mask: jax.Array):
        """log-mel [B, F, M] -> encoder output [B, F/2, d] and token mask [B, F/2]."""
        token_mask = frame_mask[:, 1::2]  # token t covers frames 2t, 2t+1: valid iff both are
        x = (mel - self.mel_mean) / self.mel_std
        x = utterance_normalise(x, frame_mask) if self.encoder_utterance_norm else x
        x = _masked(x, frame_mask).astype(self.dtype)
        x = jax.nn.silu(self.enc_in(x))
        x = self.down(_masked(x, frame_mask))
        x = constrain(x, ACT)
        return self.encoder(x, token_mask), token_mask

    def voice(self, mel: jax.Array, frame_mask: jax.Array) -> jax.Array:
        """The decoder's utterance-level condition [B, d]: masked mean and std of the normalised log-mel."""
        x = (mel - self.mel_mean) / self.mel_std
        w = frame_mask[..., None].astype(jnp.float32)
        n = jnp.maximum(w.sum(1), 1.0)
        mean = (x * w).sum(1) / n
        std = jnp.sqrt(jnp.maximum((jnp.square(x - mean[:, None]) * w).sum(1) / n, 1e-6))
        return self.voice_proj(jnp.concatenate([mean, std], -1).astype(self.dtype))

    def decode_codes(self, q: jax.Array, token_mask: jax.Array, frame_mask: jax.Array,
                     voice: jax.Array | None = None) -> jax.Array:
        """Quantised [B, T', d] (+ `voice` [B, d] with `decoder_voice`) -> predicted log-mel [B, 2T', M] (fp32)."""
        x = jax.nn.silu(self.dec_in(_masked(q, token_mask)))
        x = self.up(_masked(x, token_mask))
        if voice is not None:
            x = x + voice[:, None].astype(x.dtype)
        x = constrain(x, ACT)
        x = self.decoder(x, frame_mask)
        return self.mel_out(x).astype(jnp.float32) * self.mel_std + self.mel_mean

    def ctc_logits(self, q: jax.Array, token_mask: jax.Array, head=None):
        """Quantised codes [B, T', d] (or, with the encoder's head, its features) -> CTC logits [B, r·T', V]
        (fp32) and their mask [B, r·T']."""
        b, t, _ = q.shape
        logits = (head or self.ctc_head)(q).astype(jnp.float32).reshape(b, t * self.ctc_rate, -1)
        return logits, jnp.repeat(token_mask, self.ctc_rate, axis=1)

    def text_nll(self, ids: jax.Array, token_mask: jax.Array, labels: jax.Array, label_len: jax.Array) -> jax.Array:
        """How well token ids [B, T'] say a text: the CTC head's negative log-likelihood of `labels` [B, S]
        (the first `label_len` of each row) over them, a label [B]. Rows with too few tokens for their labels
        get optax's log-epsilon floor (about 1e5 in all)."""
        logits, ctc_mask = self.ctc_logits(self.vq.lookup(jnp.maximum(ids, 0)), token_mask)
        label_pad = (jnp.arange(labels.shape[1])[None] >= label_len[:, None]).astype(jnp.float32)
        nll = optax.ctc_loss(logits, 1.0 - ctc_mask.astype(jnp.float32), labels, label_pad, blank_id=0)
        return nll / jnp.maximum(label_len, 1).astype(jnp.float32)

    def __call__(self, mel, frame_mask, *, rng=None, train: bool = False) -> dict:
        h, token_mask = self.encode_frames(mel, frame_mask)
        q, ids, vq_aux = self.vq(h, token_mask, rng=rng, train=train)
        ctc_logits, ctc_mask = self.ctc_logits(q, token_mask)
        voice = self.voice(mel, frame_mask) if self.decoder_voice else None
        out = dict(mel_pred=self.decode_codes(q, token_mask, frame_mask, voice), ctc_logits=ctc_logits,
                   ctc_mask=ctc_mask, ids=ids, token_mask=token_mask, vq=vq_aux)
        if self.ctc_encoder_weight:
            out["ctc_encoder_logits"] = self.ctc_logits(h, token_mask, self.ctc_encoder_head)[0]
        return out


def encode(model: AudioTokenizer, audio: jax.Array, audio_len: jax.Array, spec: MelSpec | None = None):
    """Audio [B, T] (zero padded) -> (token ids [B, T // hop // 2] int32, token mask [B, ...] bool)."""
    if spec is not None and spec != model.spec:
        raise ValueError(f"mel spec {spec} differs from the one the tokenizer was trained with {model.spec}")
    mel, frame_mask = model.features(audio, audio_len)
    h, token_mask = model.encode_frames(mel, frame_mask)
    ids = model.vq.nearest(model.vq.project(h), model.vq.codes())
    return jnp.where(token_mask, ids, 0).astype(jnp.int32), token_mask
