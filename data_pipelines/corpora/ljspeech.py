"""LJSpeech 1.1: `metadata.csv` (id|transcription|normalized transcription) + `wavs/<id>.wav`; one speaker,
so no test_unseen: validation holds out utterances."""

from __future__ import annotations

import csv

from data_pipelines.corpora.base import CorpusBuilder
from data_pipelines.corpora.process import Utterance

SPEAKER = "LJ"


# Not registered: the name is TFDS's own (its downloading builder), which a process may already have
# loaded; `speech-jax prepare` reaches this class through CORPORA, and reading goes by the built files.
class Ljspeech(CorpusBuilder, skip_registration=True):
    """LJSpeech (Ito and Johnson 2017): one female English speaker, 22.05 kHz."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """Unpacked LJSpeech-1.1:
  <manual_dir>/metadata.csv   LJ001-0001|Printing, in the only sense ...|Printing, in the only sense ...
  <manual_dir>/wavs/LJ001-0001.wav"""
    HOMEPAGE = "https://keithito.com/LJ-Speech-Dataset/"

    def list_utterances(self, root):
        utts = []
        lines = (root / "metadata.csv").read_text(encoding="utf-8").splitlines()
        # Not quoted: transcripts contain '"' that a CSV reader would otherwise pair up.
        for row in csv.reader(lines, delimiter="|", quoting=csv.QUOTE_NONE):
            if not row:
                continue
            utt_id = row[0]
            # The third column spells out numbers and abbreviations; a row without it falls back.
            text = row[2] if len(row) > 2 and row[2].strip() else (row[1] if len(row) > 1 else None)
            utts.append(Utterance(utt_id, SPEAKER, text, str(root / "wavs" / f"{utt_id}.wav"), "en"))
        return utts
