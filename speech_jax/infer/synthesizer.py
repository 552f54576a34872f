"""Zero-shot and one-shot synthesis: text + a reference voice -> waveform (MiniMax-Speech inference).

  reference ─▶ speaker encoders ─▶ v_ar, v_fm   (a saved voice v: v_ar = the AR's projection of v, v_fm = v,
                                                 or the voice's own v_fm where flow matching trained its encoder)
  (one-shot, or zero-shot with an acoustic prompt: reference ─▶ tokenizer ─▶ prompt tokens;
   reference ─▶ Flow-VAE encoder ─▶ prompt latent; only one-shot puts the prompt tokens in the AR's context)
  text ─split─▶ sentences ─text units (BPE, or phonemes of the given language)─▶ AR (v_ar [+ prompt text, prompt tokens]) ─▶ tokens
  [prompt tokens] tokens ×2 + v_fm [+ prompt latent] ─▶ flow matching ODE ─▶ z ─▶ Flow-VAE decoder ─▶ wav
  (the prompt's part of the waveform is cut off)

The host-side algorithm lives here once; the arrays are computed by a `ProgramBackend`
(`speech_jax.infer.backend`): jitted in memory (`from_workdirs`) or deserialised StableHLO
(`from_bundle`). Sentences are synthesised in batches of up to `max_batch`, each batch from its own
key folded out of the seed, and joined with `pause_seconds` of silence. With `candidates` n > 1 the AR
samples n token sequences a sentence and keeps the one the tokenizer's CTC head reads as the text most
likely (best of n; the tokenizer's own text units, `score_units`); flow matching renders that one only. With
`ctc_guidance` w > 0 the same head steers every sampling step (speech_jax/infer/ctc_guidance.py).
"""
from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from speech_jax.audio.io import check_audio, load_audio, resample
from speech_jax.infer.backend import COMPONENTS, ProgramBackend, Spec, Template, jit_programs
from speech_jax.infer.text_split import split_text

MIN_REFERENCE_SECONDS = 0.5
# The AR's sampling temperature unless one is given. Behind the same flow matching, on varied_large's unseen
# voices (48 lines, three seeds each), the long recipe reads at judge CER 0.172 / 0.169 / 0.155 / 0.153 / 0.161 at
# T = 1 / 0.8 / 0.6 / 0.45 / 0.3, and the 30-minute demo at 0.778 / 0.745 at T = 1 / 0.6 (two seeds)
# (docs/what_limits_quality.md, "The AR's sampling temperature").
TEMPERATURE = 0.6
# Zero-shot: whether the reference's tokens and latent prompt flow matching (`Synthesizer.synthesize`). The AR's
# tokens stay the same; on the long recipe's 48 unseen lines (two seeds) the clones' SIM rose from 89-91 % to 97 %
# of the ground truth's and their median F0 came from about 5 to 1.4 semitones of the prompt's, for judge CER 8.8 %
# against 7.8 % (docs/what_limits_quality.md, "Zero-shot with an acoustic prompt").
ACOUSTIC_PROMPT = True
# The scale of flow matching's starting noise unless one is given (1: N(0, I), as it trains).
FM_TEMPERATURE = 1.0
# CTC guidance's bonus for each text unit said, in nats (`Synthesizer.synthesize(ctc_progress=...)`): without it the
# prefix likelihood prefers pauses, which are always consistent with the text (speech_jax/infer/ctc_guidance.py).
CTC_PROGRESS = 4.0


@dataclasses.dataclass
class Synthesis:
    """What `Synthesizer.run` produced: the joined waveform and, per text piece, its generated tokens."""

    wav: np.ndarray           # float32 [T] at sample_rate
    sample_rate: int
    pieces: list[str]         # the text, split as synthesised
    tokens: list[np.ndarray]  # generated audio tokens of each piece (prompt excluded)
    prompt_tokens: int        # prompt tokens in the AR's context (one-shot; 0: zero-shot)


@dataclasses.dataclass
class _Prompt:
    """The reference, encoded once per call: speaker vectors and (one-shot) the in-context prompt."""

    ar_spk: np.ndarray        # [d_model]
    fm_spk: np.ndarray        # [spk_dim]
    text_ids: np.ndarray      # [n] prompt text ids in the AR's context (empty: zero-shot)
    tokens: np.ndarray        # [n_p] prompt tokens in the AR's context (empty: zero-shot)
    fm_tokens: np.ndarray     # [n_f] flow matching's prompt tokens (the reference's, or empty)
    latent: np.ndarray        # [2 n_f, D] flow matching's prompt latent


class Synthesizer:
    def __init__(self, backend: ProgramBackend, text_units, *, score_units=None, max_batch: int = 4,
                 pause_seconds: float = 0.2):
        """`text_units`: the AR stage's (`speech_jax.text.units`): BPE, or phonemes, which need a language;
        `score_units`: the tokenizer stage's, which its CTC head reads (None: no best-of-n)."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.backend, self.text_units, self.score_units = backend, text_units, score_units
        self.max_batch, self.pause_seconds = int(max_batch), float(pause_seconds)

    @property
    def spec(self) -> Spec:
        return self.backend.spec

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    # --- construction -------------------------------------------------------------------------------

    @classmethod
    def from_workdirs(cls, tokenizer: str, ar: str, flow_matching: str, *, max_new_tokens: int | None = None,
                      **kwargs) -> "Synthesizer":
        """From the trained stages' workdirs. max_new_tokens: default the AR stage's longest training
        utterance (data.max_seconds)."""
        from speech_jax.text import units
        templates, weights, spec, text_units, configs = load_stages(tokenizer, ar, flow_matching, max_new_tokens)
        return cls(ProgramBackend(spec, weights, jit_programs(templates)), text_units,
                   score_units=units.from_config(configs["tokenizer"].data), **kwargs)

    @classmethod
    def from_bundle(cls, path: str, **kwargs) -> "Synthesizer":
        from speech_jax.export import load_bundle
        return load_bundle(path, **kwargs)

    # --- inputs -------------------------------------------------------------------------------------

    @property
    def needs_language(self) -> bool:
        """Whether `synthesize` needs the text's language (a phoneme front end reads text per language)."""
        return self.text_units.needs_language

    def encode(self, text: str, language: str | None = None) -> list[int]:
        """The AR's text ids of `text`."""
        if self.needs_language and not language:
            raise ValueError("this model reads phonemes: give the text's language (an espeak name, e.g. 'en')")
        return self.text_units.encode(text, language)

    def split(self, text: str | list[str], language: str | None = None) -> list[str]:
        """Text (or a list of texts, spoken in order) -> pieces of at most `spec.text_len` text ids."""
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise ValueError("no text to synthesise (empty list)")
        count = lambda s: len(self.encode(s, language))  # noqa: E731
        return [p for t in texts for p in split_text(t, count, self.spec.text_len)]

    def load_reference(self, reference, reference_sample_rate: int | None = None) -> np.ndarray:
        """A path or an array ([frames] or [frames, channels], any rate) -> float32 mono at the model's
        rate. Raises AudioError (a ValueError) on unreadable, empty, NaN, silent or too short audio."""
        sr = self.sample_rate
        if isinstance(reference, (str, os.PathLike)):
            audio, _ = load_audio(reference, target_sr=sr, min_seconds=MIN_REFERENCE_SECONDS)
            return audio
        if reference_sample_rate is None:
            raise ValueError("an array reference needs reference_sample_rate")
        audio = check_audio(reference, reference_sample_rate, "reference", min_seconds=MIN_REFERENCE_SECONDS)
        return resample(audio, reference_sample_rate, sr)

    def load_voice(self, voice):
        """A voice file's path, a `Voice` or an array [spk_dim] -> a `Voice`, checked against the model."""
        from speech_jax.infer.voice import Voice, load_voice
        if isinstance(voice, (str, os.PathLike)):
            return load_voice(os.fspath(voice), spk_dim=self.spec.spk_dim)
        voice = voice if isinstance(voice, Voice) else Voice(np.asarray(voice, np.float32))
        if self.spec.fm_speaker_encoder == "trained" and voice.v_fm is None:
            raise ValueError("this flow matching stage trained a speaker encoder of its own: a voice needs its "
                             "vector too (`v_fm`; `speech-jax pvc --flow-matching` writes it), and this one "
                             f"has the AR's only ({voice.metadata.get('made_by', 'a bare vector')})")
        for v in (voice.v, voice.flow_matching_vector):
            v = np.asarray(v, np.float32)
            if v.shape != (self.spec.spk_dim,) or not np.all(np.isfinite(v)):
                raise ValueError(f"a voice is a finite vector [{self.spec.spk_dim}] (this model's spk_dim), "
                                 f"got shape {v.shape}")
        return voice

    def _voice_prompt(self, backend: ProgramBackend, voice) -> _Prompt:
        """A saved voice in place of a reference: zero-shot, no recording to encode."""
        ar_spk, fm_spk = backend.voice(np.asarray(voice.v, np.float32)[None])
        if voice.v_fm is not None:  # flow matching's own vector (PVC fits the AR's only)
            _, fm_spk = backend.voice(np.asarray(voice.v_fm, np.float32)[None])
        none = np.zeros((0,), np.int32)
        return _Prompt(ar_spk[0], fm_spk[0], none, none, none, np.zeros((0, backend.spec.latent_dim), np.float32))

    def _prompt(self, backend: ProgramBackend, ref: np.ndarray, prompt_text: str | None,
                language: str | None, acoustic_prompt: bool) -> _Prompt:
        spec = backend.spec
        n = len(ref)
        if n > spec.ref_samples:
            if prompt_text is not None:
                raise ValueError(
                    f"the one-shot reference is {n / spec.sample_rate:.2f} s; prompts of at most "
                    f"{spec.ref_samples / spec.sample_rate:.2f} s fit this model (the transcript must cover "
                    "the whole reference): trim it, or leave out prompt_text for zero-shot")
            n = spec.ref_samples  # zero-shot: the speaker encoders read the first R samples
        audio = np.zeros((1, spec.ref_samples), np.float32)
        audio[0, :n] = ref[:n]
        length = np.asarray([n], np.int32)
        ar_spk, fm_spk = backend.speaker(audio, length)
        none = np.zeros((0,), np.int32)
        if prompt_text is None and not acoustic_prompt:
            return _Prompt(ar_spk[0], fm_spk[0], none, none, none, np.zeros((0, spec.latent_dim), np.float32))
        ids = none if prompt_text is None else np.asarray(self.encode(prompt_text, language), np.int32)
        if len(ids) > spec.text_len:
            raise ValueError(f"prompt_text has {len(ids)} text ids; at most {spec.text_len} fit this model")
        # The reference's tokens and latent need no transcript: the tokenizer and the Flow-VAE encoder read them
        # from the audio alone, so zero-shot can prompt flow matching with them too (CosyVoice's cross-lingual
        # mode does the same); only one-shot puts them in the AR's context, beside their transcript.
        tokens, token_mask = backend.tokenize(audio, length)
        n_p = int(np.sum(token_mask[0]))
        tokens = np.asarray(tokens[0, :n_p], np.int32)
        latent = backend.vae_encode(audio, length)[0, :2 * n_p]
        return _Prompt(ar_spk[0], fm_spk[0], ids, none if prompt_text is None else tokens, tokens, latent)

    # --- synthesis ----------------------------------------------------------------------------------

    def synthesize(self, text: str | list[str], reference=None, *, voice=None,
                   reference_sample_rate: int | None = None,
                   prompt_text: str | None = None, language: str | None = None, seed: int = 0,
                   temperature: float = TEMPERATURE, top_k: int = 25, top_p: float = 0.8, cfg_weight: float = 0.7,
                   fm_steps: int = 10, candidates: int = 1, acoustic_prompt: bool = ACOUSTIC_PROMPT,
                   ctc_guidance: float = 0.0, ctc_progress: float = CTC_PROGRESS,
                   fm_temperature: float = FM_TEMPERATURE) -> np.ndarray:
        """float32 waveform at `sample_rate` speaking `text` in the reference's voice.

        Zero-shot: `reference` only (a file, read at its own rate, or an array with
        `reference_sample_rate`); a reference longer than `spec.ref_samples` is cropped to its start.
        One-shot: also `prompt_text`, the reference's transcript: it and the reference's tokens go into
        the AR context, the reference's latent is the flow-matching prompt, and the output excludes the
        prompt; the whole reference must fit `spec.ref_samples`. `acoustic_prompt` (zero-shot with a
        reference): the reference's tokens and latent prompt flow matching as in one-shot, while the AR sees
        the speaker vector only; False: flow matching too sees only the speaker vector. Saved voice:
        `voice` (a voice file, a `Voice` or a vector [spk_dim], e.g. from `speech-jax pvc`) instead of
        `reference`, zero-shot (no recording, no acoustic prompt).
        A list of texts is spoken in order, as one waveform. `language` (an espeak name such as 'en') is
        needed when the model reads phonemes (`needs_language`); the prompt text is read in it too. top_k
        and fm_steps are static (a bundle serves only its exported values). `candidates` n > 1: best of n
        AR samples by the tokenizer's reading of them (n times the AR's work). `ctc_guidance` w > 0: every AR
        step adds w times how well each code continues the text, as the tokenizer's CTC head reads it, to
        the code's logit (0: the paper's sampling), with `ctc_progress` nats for each text unit a code says.
        `fm_temperature` scales flow matching's starting noise (1: N(0, I), the paper's). Same seed, same audio."""
        return self.run(text, reference, voice=voice, reference_sample_rate=reference_sample_rate,
                        prompt_text=prompt_text, language=language, seed=seed, temperature=temperature,
                        top_k=top_k, top_p=top_p, cfg_weight=cfg_weight, fm_steps=fm_steps,
                        candidates=candidates, acoustic_prompt=acoustic_prompt, ctc_guidance=ctc_guidance,
                        ctc_progress=ctc_progress, fm_temperature=fm_temperature).wav

    def run(self, text, reference=None, *, voice=None, reference_sample_rate=None, prompt_text=None,
            language=None, seed: int = 0, temperature: float = TEMPERATURE, top_k: int = 25, top_p: float = 0.8,
            cfg_weight: float = 0.7, fm_steps: int = 10, candidates: int = 1,
            acoustic_prompt: bool = ACOUSTIC_PROMPT, ctc_guidance: float = 0.0,
            ctc_progress: float = CTC_PROGRESS, fm_temperature: float = FM_TEMPERATURE) -> Synthesis:
        """`synthesize`, returning the pieces and tokens as well (`Synthesis`)."""
        if not temperature > 0 or not 0 < top_p <= 1 or top_k < 0 or fm_steps < 1 or not cfg_weight >= 0:
            raise ValueError(f"need temperature > 0, 0 < top_p <= 1, top_k >= 0, fm_steps >= 1 and cfg_weight >= 0; "
                             f"got {temperature}, {top_p}, {top_k}, {fm_steps}, {cfg_weight}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        if not fm_temperature >= 0:
            raise ValueError(f"fm_temperature must be >= 0, got {fm_temperature}")
        if not (ctc_guidance >= 0 and ctc_progress >= 0):
            raise ValueError(f"ctc_guidance and ctc_progress must be >= 0, got {ctc_guidance}, {ctc_progress}")
        if (candidates > 1 or ctc_guidance) and self.score_units is None:
            raise ValueError("best-of-n (candidates > 1) and CTC guidance need the tokenizer's text units to score "
                             "with: this synthesizer has none (a bundle exported before they were saved: export it "
                             "again)")
        backend = self.backend.configured(top_k=int(top_k), fm_steps=int(fm_steps))
        if (reference is None) == (voice is None):
            raise ValueError("give either a reference recording or a saved voice (exactly one of reference, voice)")
        if voice is not None and prompt_text is not None:
            raise ValueError("prompt_text is the reference's transcript (one-shot): a saved voice has no recording")
        pieces = self.split(text, language)
        if voice is not None:
            prompt = self._voice_prompt(backend, self.load_voice(voice))
        else:
            prompt = self._prompt(backend, self.load_reference(reference, reference_sample_rate), prompt_text,
                                  language, acoustic_prompt)
        key = jax.random.key(seed)
        wavs, tokens = [], []
        for i in range(0, len(pieces), self.max_batch):
            chunk = pieces[i:i + self.max_batch]
            k_ar, k_fm = jax.random.split(jax.random.fold_in(key, i // self.max_batch))
            gen = self._generate(backend, chunk, language, prompt, k_ar, temperature, top_p, candidates,
                                 (ctc_guidance, ctc_progress))
            tokens += gen
            wavs += self._render(backend, gen, prompt, k_fm, cfg_weight, fm_temperature)
        pause = np.zeros(int(round(self.pause_seconds * self.sample_rate)), np.float32)
        joined = [part for w in wavs for part in (pause, w)][1:]
        return Synthesis(np.concatenate(joined).astype(np.float32), self.sample_rate, pieces, tokens,
                         len(prompt.tokens))

    def _generate(self, backend, pieces, language, prompt: _Prompt, key, temperature, top_p,
                  candidates: int = 1, guidance: tuple[float, float] = (0.0, 0.0)) -> list[np.ndarray]:
        """AR tokens of each piece (batched), prompt excluded: of `candidates` samples a piece, the one the
        tokenizer's CTC head reads as the piece's text most likely; `guidance`: CTC guidance's (weight,
        progress), weight 0 for none."""
        if candidates > 1:
            rows = self._generate(backend, [p for p in pieces for _ in range(candidates)], language, prompt, key,
                                  temperature, top_p, guidance=guidance)
            nll = self._score(backend, rows, [p for p in pieces for _ in range(candidates)], language)
            best = nll.reshape(len(pieces), candidates).argmin(1)
            return [rows[i * candidates + int(j)] for i, j in enumerate(best)]
        spec, b = backend.spec, len(pieces)
        text_ids = np.zeros((b, spec.text_len), np.int32)
        text_len = np.zeros((b,), np.int32)
        for row, piece in enumerate(pieces):
            ids = self.encode(piece, language)
            text_ids[row, :len(ids)], text_len[row] = ids, len(ids)
        tile = lambda a, n: np.tile(np.pad(a, (0, n - len(a)))[None], (b, 1)).astype(np.int32)  # noqa: E731
        count = lambda a: np.full((b,), len(a), np.int32)  # noqa: E731
        arrays = (text_ids, text_len, tile(prompt.text_ids, spec.text_len), count(prompt.text_ids),
                  tile(prompt.tokens, spec.prompt_tokens), count(prompt.tokens),
                  np.tile(prompt.ar_spk[None], (b, 1)), np.asarray(jax.random.key_data(key)),
                  np.float32(temperature), np.float32(top_p))
        if guidance[0]:
            labels, label_len = self._score_labels(spec, pieces, language)
            out, lengths = backend.ar_generate_guided(*arrays, labels, label_len, *np.float32(guidance))
        else:
            out, lengths = backend.ar_generate(*arrays)
        return [np.asarray(out[row, :lengths[row]], np.int32) for row in range(b)]

    def _score(self, backend, rows: list[np.ndarray], pieces: list[str], language) -> np.ndarray:
        """[len(rows)]: the tokenizer CTC head's negative log-likelihood of each piece's text, a label, over
        its tokens. Labels beyond the bucket are cut (the scores then compare the pieces' beginnings)."""
        spec, b = backend.spec, len(rows)
        tokens = np.full((b, spec.max_new_tokens), -1, np.int32)
        lengths = np.zeros((b,), np.int32)
        for row, gen in enumerate(rows):
            tokens[row, :len(gen)], lengths[row] = gen, len(gen)
        return np.asarray(backend.score_text(tokens, lengths, *self._score_labels(spec, pieces, language)))

    def _score_labels(self, spec, pieces: list[str], language) -> tuple[np.ndarray, np.ndarray]:
        """Each piece's text in the tokenizer's units [B, S] and their counts [B] (cut at S)."""
        labels = np.zeros((len(pieces), spec.score_text_len), np.int32)
        label_len = np.zeros((len(pieces),), np.int32)
        for row, piece in enumerate(pieces):
            ids = self.score_units.encode(piece, language)[:spec.score_text_len]
            labels[row, :len(ids)], label_len[row] = ids, len(ids)
        return labels, label_len

    def _render(self, backend, generated, prompt: _Prompt, key, cfg_weight, temperature) -> list[np.ndarray]:
        """Flow matching and the Flow-VAE decoder over [prompt tokens, generated tokens] per row; the
        waveform of the generated part of each."""
        spec, b = backend.spec, len(generated)
        f, d, n_p = spec.frames, spec.latent_dim, len(prompt.fm_tokens)
        tokens = np.zeros((b, f // 2), np.int32)
        frame_mask = np.zeros((b, f), bool)
        prompt_latent = np.zeros((b, f, d), np.float32)
        prompt_mask = np.zeros((b, f), bool)
        for row, gen in enumerate(generated):
            n = n_p + len(gen)
            tokens[row, :n] = np.concatenate([prompt.fm_tokens, gen])
            frame_mask[row, :2 * n] = True
            prompt_latent[row, :2 * n_p] = prompt.latent
            prompt_mask[row, :2 * n_p] = True
        x0 = temperature * np.asarray(jax.random.normal(key, (b, f, d), jnp.float32))
        z = backend.fm_sample(x0, tokens, frame_mask, np.tile(prompt.fm_spk[None], (b, 1)), prompt_latent,
                              prompt_mask, np.float32(cfg_weight))
        wav = backend.vae_decode(z, frame_mask)
        hop = spec.hop
        return [np.asarray(wav[row, 2 * n_p * hop:2 * (n_p + len(gen)) * hop], np.float32)
                for row, gen in enumerate(generated)]


def load_stages(tokenizer: str, ar: str, flow_matching: str, max_new_tokens: int | None = None,
                steps: dict[str, int] | None = None):
    """(templates, weights, spec, text units, configs) of the three trained stages, checked to fit together;
    each stage's latest checkpoint, or the step `steps` names for it (e.g. {"ar": 1000}). `ar` may be a
    style stage's workdir: its AR with the style's adapters merged in."""
    from speech_jax.infer.style import styled_ar
    from speech_jax.text import units
    from speech_jax.train.restore import load_model, read_config

    configs, templates, weights = {}, {}, {}
    for name, workdir in zip(COMPONENTS, (tokenizer, ar, flow_matching)):
        step = (steps or {}).get(name)
        if name == "ar" and read_config(workdir, step).stage == "style":
            configs[name], model = styled_ar(workdir, step)
        else:
            configs[name], model = load_model(workdir, name, step)
        templates[name], weights[name] = Template.split(model)
        if name == "flow_matching":
            vae_hop = int(model.frozen.vae.hop)
    tok, arc, fm = (configs[c] for c in COMPONENTS)
    sr, hop = int(fm.data.sample_rate), int(fm.mel.hop_length)
    for name, c in configs.items():
        if int(c.mel.sample_rate) != sr or int(c.mel.hop_length) != hop:
            raise ValueError(f"the {name} stage's mel ({c.mel.sample_rate} Hz, hop {c.mel.hop_length}) differs "
                             f"from the flow-matching stage's ({sr} Hz, hop {hop})")
    if vae_hop != hop:
        raise ValueError(f"the Flow-VAE's hop {vae_hop} differs from the mel hop {hop}")
    codebooks = {c: int(configs[c].model.codebook_size) for c in COMPONENTS}
    if len(set(codebooks.values())) != 1:
        raise ValueError(f"the stages use different audio codebooks: {codebooks}")
    n = max_new_tokens or math.ceil(float(arc.data.max_seconds) * sr / (2 * hop))
    text_units = units.from_config(arc.data)
    min_ratio, max_ratio = text_units.token_ratios
    spec = Spec(sample_rate=sr, hop=hop, latent_dim=int(fm.model.latent_dim), codebook_size=codebooks["ar"],
                d_model=int(arc.model.d_model), spk_dim=int(fm.model.spk_dim),
                text_len=int(arc.data.max_text_len), score_text_len=int(tok.data.max_text_len),
                prompt_tokens=math.ceil(float(arc.data.prompt_max_seconds) * sr / (2 * hop)),
                max_new_tokens=int(n), fm_method=str(fm.model.eval_method), fm_grid=str(fm.model.eval_grid),
                min_ratio=float(min_ratio), max_ratio=float(max_ratio),
                fm_speaker_encoder=str(fm.model.get("speaker_encoder", "frozen")))
    return templates, weights, spec, text_units, configs
