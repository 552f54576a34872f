"""VCTK 0.92: `wav48_silence_trimmed/<p>/<p>_<n>_mic1.flac` + `txt/<p>/<p>_<n>.txt`. No splits of its own."""

from __future__ import annotations

from data_pipelines.corpora.base import CorpusBuilder
from data_pipelines.corpora.process import Utterance

MIC = "mic1"  # the omni microphone; mic2 is the same speech from a second, small-diaphragm one


# Not registered: the name is TFDS's own (its downloading builder), which a process may already have
# loaded; `speech-jax prepare` reaches this class through CORPORA, and reading goes by the built files.
class Vctk(CorpusBuilder, skip_registration=True):
    """CSTR VCTK 0.92: 110 English speakers with various accents, 48 kHz."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""Unpacked VCTK-Corpus-0.92:
  <manual_dir>/wav48_silence_trimmed/p225/p225_001_{MIC}.flac
  <manual_dir>/txt/p225/p225_001.txt"""
    HOMEPAGE = "https://datashare.ed.ac.uk/handle/10283/3443"

    def list_utterances(self, root):
        utts = []
        for flac in sorted((root / "wav48_silence_trimmed").glob(f"*/*_{MIC}.flac")):
            speaker = flac.parent.name
            utt_id = flac.name[:-len(f"_{MIC}.flac")]
            txt = root / "txt" / speaker / f"{utt_id}.txt"
            # Some recordings (all of p315's, for one) have no transcript: reported as text rejections.
            text = txt.read_text(encoding="utf-8") if txt.exists() else None
            utts.append(Utterance(utt_id, speaker, text, str(flac), "en"))
        return utts
