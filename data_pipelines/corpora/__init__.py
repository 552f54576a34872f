"""Public corpora read from their published layouts in a local `manual_dir`. Importing this package
registers the builders; CORPORA maps each `speech-jax prepare --dataset` name to its builder."""

from data_pipelines.corpora.base import (COUNTS_NAME, REPORT_NAME, CorpusBuilder, CorpusConfig, make_config,
                                         merge_reports)
from data_pipelines.corpora.process import Utterance
from data_pipelines.corpora.emilia import Emilia
from data_pipelines.corpora.kaldi import Kaldi
from data_pipelines.corpora.libritts import Libritts, LibrittsR
from data_pipelines.corpora.ljspeech import Ljspeech
from data_pipelines.corpora.vctk import Vctk

__all__ = ["CORPORA", "COUNTS_NAME", "REPORT_NAME", "CorpusBuilder", "CorpusConfig", "Utterance", "make_config", "merge_reports",
           "Emilia", "Kaldi", "Libritts", "LibrittsR", "Ljspeech", "Vctk"]

CORPORA = {cls.name: cls for cls in (LibrittsR, Libritts, Vctk, Ljspeech, Kaldi, Emilia)}
