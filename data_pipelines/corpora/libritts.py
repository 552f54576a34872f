"""LibriTTS and LibriTTS-R: `<subset>/<speaker>/<chapter>/<utt>.wav` + `<utt>.normalized.txt`.

The corpus's own subsets become the project's splits: train-* -> train, dev-* -> validation, test-* ->
test_unseen (LibriTTS's dev and test speakers are disjoint from its training speakers)."""

from __future__ import annotations

from etils import epath

from data_pipelines.corpora.base import CorpusBuilder
from data_pipelines.corpora.process import Utterance

_SPLIT_OF_SUBSET = {"train": "train", "dev": "validation", "test": "test_unseen"}
_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other",
            "test-clean", "test-other")


def read_libritts(root: epath.Path) -> list[Utterance]:
    """Every `<id>.wav` of the subsets present (directly under `root` or under `root/LibriTTS*/`)."""
    bases = [root] + sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("LibriTTS"))
    utts = []
    for base in bases:
        for subset in _SUBSETS:
            folder = base / subset
            if not folder.is_dir():
                continue
            split = _SPLIT_OF_SUBSET[subset.split("-")[0]]
            for wav in sorted(folder.glob("*/*/*.wav")):
                speaker = wav.parent.parent.name
                utt_id = wav.name[:-len(".wav")]
                txt = wav.parent / f"{utt_id}.normalized.txt"
                text = txt.read_text(encoding="utf-8") if txt.exists() else None
                utts.append(Utterance(utt_id, speaker, text, str(wav), "en", split))
    return utts


_LAYOUT = """Unpacked LibriTTS{r} tarballs (any subset of them), e.g.
  <manual_dir>/train-clean-100/<speaker>/<chapter>/<speaker>_<chapter>_<...>.wav
                                                  /<speaker>_<chapter>_<...>.normalized.txt
  <manual_dir>/dev-clean/..., <manual_dir>/test-clean/... (or under <manual_dir>/LibriTTS{r}/)."""


class LibrittsR(CorpusBuilder):
    """LibriTTS-R: LibriTTS restored by speech restoration (Koizumi et al. 2023), 24 kHz."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT.format(r="_R")
    HOMEPAGE = "https://www.openslr.org/141/"

    def list_utterances(self, root):
        return read_libritts(root)


# Not registered: the name is TFDS's own (its downloading builder), which a process may already have
# loaded; `speech-jax prepare` reaches this class through CORPORA, and reading goes by the built files.
class Libritts(CorpusBuilder, skip_registration=True):
    """LibriTTS (Zen et al. 2019), 24 kHz."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT.format(r="")
    HOMEPAGE = "https://www.openslr.org/60/"

    def list_utterances(self, root):
        return read_libritts(root)
