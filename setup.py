"""speech_jax: a JAX/Flax reimplementation of MiniMax-Speech."""
from setuptools import find_packages, setup

CORE = [
    "jax>=0.7",
    "flax>=0.12",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "grain>=0.2.12",
    "numpy>=1.26",
    "librosa>=0.10",
    "soundfile>=0.12",
    "soxr>=0.5",
    "ml-collections>=1.0",
    "sentencepiece>=0.2",
    "espeakng-loader>=0.2.4",
    "tensorboardX>=2.6",
    "tqdm>=4.66",
    "array-record>=0.8",
    # Corpora are TFDS builders written to array_record; tfds builds and reads them without TensorFlow.
    "tensorflow-datasets>=4.9.7",
    # Resynthesis evaluation (PESQ, STOI) and the plots written beside evaluations.
    "pesq>=0.0.4",
    "pystoi>=0.4",
    "matplotlib>=3.8",
    # Linear probes of the speaker space (experiments/t2v/measure.py); librosa brings it, we import it.
    "scikit-learn>=1.3",
    # seed-tts-eval's WER (speech-jax evaluate).
    "jiwer>=3.0",
    # The serving bundle: weights as safetensors; jax.export serialises its programs with flatbuffers,
    # which jax does not install.
    "safetensors>=0.4",
    "flatbuffers>=24.3",
    # epath, used by the TFDS builders (tfds and orbax bring it too, but we import it ourselves).
    "etils[epath]>=1.7",
    "absl-py>=1.4",  # absl.flags: Grain's worker processes read them
]

EXTRAS = {
    # libtpu, matched to the installed jax: TPU pods, and `speech-jax compile` for TPU topologies from any host.
    "tpu": ["jax[tpu]>=0.7"],
    # Only for users' own TFDS builders whose features need TensorFlow to encode; ours do not.
    "tf": ["tensorflow-cpu>=2.16"],
    # pytest-xdist: the suite runs on two worker processes (pytest.ini), ~27 % faster on a 2-core machine.
    "dev": ["pytest>=8", "pytest-xdist>=3.5", "filelock>=3.12"],  # filelock: fixtures shared by xdist workers
    # Distributed preparation of the public corpora (speech-jax prepare --beam ...): TFDS's Beam path, run
    # locally with the DirectRunner or on Dataflow / Flink / Spark. It pins protobuf, pillow and others below
    # what the rest may bring; a separate environment avoids the clash.
    "beam": ["apache-beam>=2.60"],
    # ASR (Whisper) and speaker (WavLM) models for `speech-jax evaluate`. A CPU wheel of torch is enough:
    # pip install torch --index-url https://download.pytorch.org/whl/cpu (PyPI's default is a CUDA build).
    "eval": ["transformers>=4.40", "torch>=2.2"],
    # Offline SIM (`--speaker-model resemblyzer`): Resemblyzer ships its voice encoder's weights; it imports
    # pkg_resources, gone from setuptools 81. Install torch==2.13.0 first where only a CPU wheel of it is local.
    "sim": ["resemblyzer>=0.1.4", "setuptools<81", "torch==2.13.0"],
}

setup(
    name="speech_jax",
    version="0.1.0",
    description="MiniMax-Speech in JAX/Flax: zero-shot voice cloning TTS for large-scale pretraining",
    packages=find_packages(include=["speech_jax", "speech_jax.*", "data_pipelines", "data_pipelines.*"]),
    package_data={"data_pipelines": ["espeak_tts/sentences/*.txt"]},
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["speech-jax=speech_jax.cli:main"]},
)
