"""TFDS builder `espeak_tts`: the embedded multi-speaker corpus, synthesised locally.

Writes array_record files whose features all decode with NumPy, so training reads them with
`tfds.data_source` without importing TensorFlow. With tfds 4.9.10 and array_record, building
does not import TensorFlow either (tfds serialises tf.train.Example with its own protos).
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from data_pipelines.espeak_tts import plan as plan_lib
from data_pipelines.espeak_tts import render
from data_pipelines.espeak_tts import schema
from data_pipelines.espeak_tts.tfds_compat import LocalCodePath

SAMPLE_RATES = (16000, 22050, 24000)  # 16 kHz for CPU-sized configs, 24 kHz for real ones
DEFAULT_SAMPLE_RATE = 16000

_SPECS = {
    # For tests: 8 languages x 4 voices (24 seen, 8 unseen), 3 train utterances per voice.
    "tiny": plan_lib.CorpusSpec(),
    # CPU-friendly default: 56 seen voices x every training sentence (~2.5k utterances).
    "small": plan_lib.CorpusSpec(speakers_per_language=8, train_per_speaker=None,
                                 validation_per_speaker=2, test_per_speaker=6),
    # small + 60 sentences re-mixed from the training words per seen voice (~5.9k utterances): the same
    # validation and test_unseen, many more training sentences (docs/what_limits_quality.md).
    "medium": plan_lib.CorpusSpec(speakers_per_language=8, train_per_speaker=None, mixed_per_speaker=60,
                                  validation_per_speaker=2, test_per_speaker=6),
    # As many utterances as small, spread over 4x the voices (every variant of a language, 10 sentences
    # each): for speaker generalisation, which 7 training voices a language cannot teach.
    "many_voices": plan_lib.CorpusSpec(speakers_per_language=33, train_per_speaker=10,
                                       validation_per_speaker=1, test_per_speaker=6),
    # many_voices' voices and test_unseen, each voice reading 3 of the training sentences and 7 re-mixed from
    # their words: as many utterances again, 6x the distinct sentences (what the AR needs to read new text).
    "varied": plan_lib.CorpusSpec(speakers_per_language=33, train_per_speaker=3, mixed_per_speaker=7,
                                  validation_per_speaker=1, test_per_speaker=6),
    # varied with 4x its utterances (3 training sentences and 37 re-mixed a voice, ~10k utterances, 9.8k distinct
    # sentences): whether more distinct sentences teach the AR to read text it has not seen.
    "varied_large": plan_lib.CorpusSpec(speakers_per_language=33, train_per_speaker=3, mixed_per_speaker=37,
                                        validation_per_speaker=1, test_per_speaker=6),
}
# Style corpora (LoRA style control): small's speakers, splits and sentence pools, 15 training sentences a
# seen voice, every utterance in the style; speaker ids are small's, so references can come from small.
for _style in ("lively", "calm"):
    _SPECS[_style] = plan_lib.CorpusSpec(speakers_per_language=8, train_per_speaker=15, validation_per_speaker=2,
                                         test_per_speaker=6, style=_style)
SIZES = tuple(_SPECS)


@dataclasses.dataclass(eq=False)
class EspeakConfig(tfds.core.BuilderConfig):
    spec: plan_lib.CorpusSpec = dataclasses.field(default_factory=plan_lib.CorpusSpec)
    sample_rate: int = DEFAULT_SAMPLE_RATE


def config_name(size: str, sample_rate: int = DEFAULT_SAMPLE_RATE) -> str:
    """'tiny' at the default rate, else e.g. 'tiny_24000'."""
    return size if sample_rate == DEFAULT_SAMPLE_RATE else f"{size}_{sample_rate}"


def _configs() -> list[EspeakConfig]:
    return [EspeakConfig(name=config_name(size, rate), spec=spec, sample_rate=rate,
                         description=f"{size} corpus at {rate} Hz")
            for size, spec in _SPECS.items() for rate in SAMPLE_RATES]


class EspeakTts(LocalCodePath, tfds.core.GeneratorBasedBuilder):
    """Multi-speaker, multi-language speech synthesised with espeak-ng."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "small"

    def __init__(self, *, file_format: str | None = schema.FILE_FORMAT, **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=schema.features(),
            supervised_keys=None,
            homepage="https://github.com/espeak-ng/espeak-ng",
            description=("Speech synthesised with espeak-ng: voices are language x variant x "
                         "pitch x rate; validation holds out sentences, test_unseen holds out "
                         "speakers and sentences."),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {split: self._generate_examples(utts)
                for split, utts in plan_lib.make_plan(self.builder_config.spec).items()}

    def _generate_examples(self, utts):
        rate = self.builder_config.sample_rate
        for utt, audio in zip(utts, render.render_many(utts, rate)):
            yield utt.utt_id, {
                "audio": audio,
                "sample_rate": rate,
                "text": utt.text,
                "speaker": utt.voice.id,
                "language": utt.voice.language,
                "utt_id": utt.utt_id,
            }
