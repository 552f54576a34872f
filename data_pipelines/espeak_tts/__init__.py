"""The embedded espeak-ng corpus. Importing this package registers the `espeak_tts` builder."""

from data_pipelines.espeak_tts.builder import EspeakTts, config_name  # noqa: F401  (registers)
