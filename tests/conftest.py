"""Shared fixtures: the tiny corpus, the tiny trained stages and the overfit models, each built once per
test session (across xdist workers), and the order in which the workers take the test files."""

from __future__ import annotations

import atexit
import os
import pickle
import shutil
import tempfile

# One persistent compilation cache per test session: a stage built again with an identical config (resume
# tests, the 8-device trainers of the trained fixtures' stages) reuses the compiled programs.
_XLA_CACHE = tempfile.mkdtemp(prefix="speech_jax_test_xla_cache_")
atexit.register(shutil.rmtree, _XLA_CACHE, True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# Eight host devices, so meshes with data, fsdp and tensor axes run on the CPU; and XLA's cheapest CPU code
# generation: most tests run a few steps of each program, where compiling dominates (a quarter less CPU time
# for the suite). Loops of hundreds of steps ask for optimised code (overfit.OPTIMIZED). XLA's CPU fusion
# emitters cost ~0.1 s of compiling per fusion: the older emitters compile the tiny stages' steps 2-3x
# faster and run the overfit loops as fast. Must precede importing jax; subprocesses (the CLI, multi-process
# jobs) inherit it.
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8",
                                    "--xla_backend_optimization_level=0",
                                    "--xla_llvm_disable_expensive_passes=true",
                                    "--xla_cpu_use_fusion_emitters=false"]).strip()
# With the 'tpu' extra, tests on both xdist workers open libtpu for TPU topologies (AOT compiling) at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import pytest  # noqa: E402

# The files whose shared fixtures take minutes go first, one to each xdist worker (with
# --no-loadscope-reorder, pytest.ini), so that neither worker waits on the other's lock: one builds
# tiny_stages, the other the overfit Flow-VAE and then the overfit tokenizer; the rest keep their order.
FIRST = ("test_stage_training.py", "test_learnability_flow_vae.py", "test_train.py",
         "test_learnability_end_to_end.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """prepare("espeak_tts", config="tiny"): {"name", "data_dir", "corpus_dir", "bpe_model", ...}.

    A few seconds on 2 cores: 32 voices in 8 languages, 112 utterances, 16 kHz.
    """
    from data_pipelines.prepare import prepare

    return shared(tmp_path_factory, "tiny_corpus",
                  lambda: prepare("espeak_tts", str(tmp_path_factory.mktemp("data")), config="tiny"))


@pytest.fixture(scope="session")
def tiny_stages(tiny_corpus, tmp_path_factory):
    """The demo (`speech-jax demo`) run through its training steps on the tiny corpus, every stage
    (and the CTC judge) trained 2 steps at the smallest sizes (tests/stages.py): {"tokenizer", "flow_vae",
    "ar", "flow_matching", "judge": workdir, "extracted": extract()'s metadata, "demo": the Demo's arguments}."""
    from speech_jax.demo import Demo
    from stages import demo_arguments

    def build():
        kwargs = demo_arguments(tiny_corpus, str(tmp_path_factory.mktemp("demo")))
        demo = Demo(**kwargs)
        state = demo.run(stop_after="judge")
        return dict(demo.workdirs, extracted=state["steps"]["extract"]["extracted"], demo=kwargs)

    return shared(tmp_path_factory, "tiny_stages", build)


def shared(tmp_path_factory, name: str, build):
    """`build()` once per test session across xdist workers: the first worker to ask builds it under a
    file lock and pickles the result where every worker's temporary directory sits; the others load it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = root / f"{name}.pickle"
    with FileLock(f"{path}.lock"):
        if path.exists():
            return pickle.loads(path.read_bytes())
        value = build()
        path.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session")
def overfit_tokenizer(tmp_path_factory):
    """tests/overfit.py's tokenizer, trained on the espeak clips (~1 min)."""
    import overfit
    return shared(tmp_path_factory, "overfit_tokenizer", overfit.tokenizer)


@pytest.fixture(scope="session")
def overfit_flow_vae(tmp_path_factory):
    """tests/overfit.py's Flow-VAE, trained on the espeak clips (~1.5 min)."""
    import overfit
    return shared(tmp_path_factory, "overfit_flow_vae", overfit.flow_vae)
