"""The ASR and speaker-embedding models behind WER and SIM: two small interfaces, and adapters to
real models through Hugging Face `transformers` (the optional `eval` extra: transformers + torch).

seed-tts-eval transcribes English with Whisper-large-v3 and Chinese with Paraformer-zh (FunASR),
and embeds speakers with WavLM-large + an ECAPA-TDNN head (UniSpeech's `ecapa_tdnn` checkpoint).
`WhisperTranscriber` covers the first for every language Whisper knows. For SIM, `transformers`
has no ECAPA-TDNN head; its nearest real loader is `WavLMForXVector`, WavLM with an x-vector
(TDNN + statistics pooling) head, e.g. the public checkpoint `microsoft/wavlm-base-plus-sv`.
So `WavLMXVectorEmbedder` gives a WavLM speaker similarity of the same kind, but not the paper's
numbers: compare SIMs only with SIMs from the same checkpoint.

Both adapters load lazily and only from what `from_pretrained` can reach (a local directory, or
the hub when the machine is online), and resample input to the model's rate (16 kHz).

Offline, `ResemblyzerEmbedder` (the optional `sim` extra) gives SIM from Resemblyzer's GE2E voice
encoder, whose weights ship inside its wheel: a d-vector model, not WavLM, so again its SIMs compare
only with its own.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Protocol, runtime_checkable

import numpy as np

from speech_jax.audio.io import check_audio, resample

EXTRA_HINT = "install the evaluation extra: pip install 'speech_jax[eval]' (transformers, torch)"
SIM_EXTRA_HINT = ("install the offline SIM extra: pip install torch==2.13.0 'speech_jax[sim]' (resemblyzer; "
                  "a CPU build of torch is enough)")
RESEMBLYZER = "resemblyzer"  # the speaker-model name that selects ResemblyzerEmbedder

# seed-tts-eval / corpus language codes -> Whisper's language codes.
_WHISPER_LANGUAGE = {"cmn": "zh", "zh-cn": "zh", "zh-tw": "zh", "mandarin": "zh", "chinese": "zh",
                     "cantonese": "yue", "english": "en", "japanese": "ja"}


@runtime_checkable
class Transcriber(Protocol):
    """Speech recognition for WER."""

    def transcribe(self, wav: np.ndarray, sample_rate: int, language: str | None) -> str:
        """The text spoken in mono `wav`; `language` (e.g. 'en', 'zh') when known, else None."""
        ...


@runtime_checkable
class SpeakerEmbedder(Protocol):
    """Speaker embeddings for SIM (cosine between the output's and the prompt's)."""

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """A 1-D embedding of the speaker of mono `wav`."""
        ...


def _require(module: str, hint: str = EXTRA_HINT):
    """Import an optional dependency, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed for this evaluation model ({e}); {hint}") from e


def _load(what: str, loader, path: str, **kwargs):
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise OSError(f"cannot load the {what} from {path!r}: {e}") from e


def _at_rate(wav, sample_rate: int, target_rate: int) -> np.ndarray:
    return resample(check_audio(wav, sample_rate, min_peak=0.0), sample_rate, target_rate)


def whisper_language(language: str | None) -> str | None:
    """Whisper's code for a seed-tts-eval or corpus language code ('cmn' -> 'zh'); None stays None."""
    if language is None:
        return None
    code = language.strip().lower().replace("_", "-")
    return _WHISPER_LANGUAGE.get(code, code.split("-")[0])


class WhisperTranscriber:
    """Whisper through `transformers` (WhisperProcessor + WhisperForConditionalGeneration).

    Greedy decoding of the first 30 s (Whisper's window; seed-tts-eval utterances are shorter), up
    to `max_new_tokens` or the checkpoint's generation config's limit.
    The language is forced when given and the checkpoint is multilingual and knows it; otherwise
    Whisper detects it.
    """

    def __init__(self, model_name_or_path: str = "openai/whisper-large-v3", device: str = "cpu",
                 *, max_new_tokens: int | None = None):
        transformers = _require("transformers")
        self.torch = _require("torch")
        self.processor = _load("Whisper processor", transformers.WhisperProcessor, model_name_or_path)
        self.model = _load("Whisper model", transformers.WhisperForConditionalGeneration,
                           model_name_or_path).to(device).eval()
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.name = model_name_or_path

    @property
    def sample_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    def _language_kwargs(self, language: str | None) -> dict:
        code = whisper_language(language)
        gen = self.model.generation_config
        known = getattr(gen, "lang_to_id", None) or {}
        if code is None or not getattr(gen, "is_multilingual", False) or f"<|{code}|>" not in known:
            return {}
        return {"language": code, "task": "transcribe"}

    def transcribe(self, wav: np.ndarray, sample_rate: int, language: str | None = None) -> str:
        audio = _at_rate(wav, sample_rate, self.sample_rate)
        features = self.processor(audio, sampling_rate=self.sample_rate, return_tensors="pt")
        with self.torch.no_grad():
            limit = {} if self.max_new_tokens is None else {"max_new_tokens": self.max_new_tokens}
            ids = self.model.generate(features.input_features.to(self.device), **limit,
                                      **self._language_kwargs(language))
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    def __repr__(self) -> str:
        return f"WhisperTranscriber({self.name!r})"


class WavLMXVectorEmbedder:
    """WavLM + x-vector head (`WavLMForXVector`) speaker embeddings through `transformers`.

    Stands in for seed-tts-eval's WavLM-large + ECAPA-TDNN, which transformers cannot load (see the
    module docstring): same backbone family, a different head, so different SIM values.
    """

    def __init__(self, path: str = "microsoft/wavlm-base-plus-sv", device: str = "cpu"):
        transformers = _require("transformers")
        self.torch = _require("torch")
        self.feature_extractor = _load("WavLM feature extractor", transformers.AutoFeatureExtractor,
                                       path)
        self.model = _load("WavLM x-vector model", transformers.WavLMForXVector, path).to(device).eval()
        self.device = device
        self.name = path

    @property
    def sample_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = _at_rate(wav, sample_rate, self.sample_rate)
        inputs = self.feature_extractor(audio, sampling_rate=self.sample_rate, return_tensors="pt")
        # One unpadded utterance: its attention mask is all ones, so it is left out.
        with self.torch.no_grad():
            out = self.model(inputs.input_values.to(self.device))
        return out.embeddings[0].float().cpu().numpy()

    def __repr__(self) -> str:
        return f"WavLMXVectorEmbedder({self.name!r})"


# The name the seed-tts-eval protocol gives its SIM model; with transformers it is the x-vector head.
WavLMEcapaEmbedder = WavLMXVectorEmbedder


class ResemblyzerEmbedder:
    """Resemblyzer's voice encoder (GE2E LSTM d-vectors, 256-d, unit norm), on the CPU by default.

    Its own preprocessing (loudness normalisation, webrtcvad silence trimming) runs first, as its
    authors score. Loading it needs no network: the weights are part of the package.
    """

    sample_rate = 16000  # resemblyzer's hparams.sampling_rate

    def __init__(self, device: str = "cpu"):
        resemblyzer = _require("resemblyzer", SIM_EXTRA_HINT)
        self._preprocess = resemblyzer.preprocess_wav
        self.encoder = resemblyzer.VoiceEncoder(device=device, verbose=False)

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = self._preprocess(_at_rate(wav, sample_rate, self.sample_rate), source_sr=self.sample_rate)
        if audio.size == 0:
            raise ValueError("no speech left after Resemblyzer's silence trimming")
        return np.asarray(self.encoder.embed_utterance(audio), np.float32)

    def __repr__(self) -> str:
        return "ResemblyzerEmbedder()"


def resemblyzer_available() -> bool:
    """Whether `ResemblyzerEmbedder` can load (the `sim` extra is installed)."""
    return importlib.util.find_spec("resemblyzer") is not None


def load_embedder(speaker_model: str | None):
    """`resemblyzer` -> ResemblyzerEmbedder; any other name or path -> a WavLM x-vector checkpoint; None -> None."""
    if not speaker_model:
        return None
    if speaker_model == RESEMBLYZER:
        return ResemblyzerEmbedder()
    return WavLMXVectorEmbedder(speaker_model)


def load_scorers(whisper: str | None = None, speaker_model: str | None = None):
    """(transcriber, embedder) for `seed_tts.evaluate` from checkpoint names or paths ("resemblyzer" for
    the offline speaker model); None where not given."""
    return WhisperTranscriber(whisper) if whisper else None, load_embedder(speaker_model)
