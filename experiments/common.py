"""Fields every stage's config shares; a stage config starts from `base_config()` and fills `model`."""
import ml_collections

from speech_jax.sharding import DEFAULT_RULES, FSDP_MIN_BYTES


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = ""  # selects the task in speech_jax.train.tasks

    c.data = ml_collections.ConfigDict(dict(
        name="espeak_tts/tiny",  # TFDS name/config
        data_dir="data",         # where `speech-jax prepare` wrote it
        bpe_model="",            # default: the one `prepare` saved beside the corpus
        text_units="bpe",        # "bpe" (the paper) | "phonemes" (espeak's IPA: a G2P front end)
        phonemes="",             # the phoneme inventory; "" = from the training split at the start
        phoneme_marks=False,     # phonemes keep stress marks and word spaces (prosody, for text input)
        train_split="train",
        eval_split="validation",
        speaker="",              # only this speaker's utterances (e.g. PVC on one voice); "" = every speaker
        exclude_speakers_of=(),  # "corpus:split" names whose speakers this run never reads (e.g. the test
                                 # voices of the corpus a model will be scored on)
        extra_eval_splits=(),    # further splits evaluated alongside (logged as eval_<split>/...)
        sample_rate=16000,
        min_seconds=0.5,
        max_seconds=4.0,
        long_utterances="crop",  # crop | drop: stages that align text with audio (CTC) must drop
        buckets_seconds=(2.0, 4.0),  # batches pad to the smallest bucket that fits (static shapes)
        max_text_len=128,
        ref_seconds=(1.0, 4.0),  # random crop range for the same-speaker reference utterance
        with_reference=True,     # stages with a speaker encoder need a reference utterance
        reference_split="train",  # other splits also draw same-speaker references from here
        reference_corpus="",     # another corpus of the same speaker ids to draw every reference from
                                 # (e.g. a style corpus's neutral speech); "" = this corpus
        extracted="",            # tag of `speech-jax extract` features (tokens, latents) to load; "" = none
        with_latents=False,      # load the Flow-VAE latents (flow matching)
        # False: training batches do not decode the target's audio (its field holds silence of its length), for
        # stages whose training step reads only its tokens and latents (the task's TRAINS_ON_TARGET_AUDIO)
        target_audio=True,
        with_prompt=False,       # one-shot prompt: the reference utterance's transcript and tokens (AR)
        prompt_max_seconds=4.0,  # longer reference utterances give no prompt (the example trains zero-shot)
        batch_size=8,            # global batch
        group_window=8,          # sort windows of this many batches by length (1 = no grouping)
        shuffle_seed=0,
        num_workers=0,           # Grain worker processes (0 = in-process)
        prefetch=2,
    ))

    c.mel = ml_collections.ConfigDict(dict(
        sample_rate=16000, n_fft=1024, hop_length=320, win_length=1024, n_mels=80,
        fmin=0.0, fmax=8000.0, power=1.0, log_floor=1e-5))

    c.model = ml_collections.ConfigDict()

    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", learning_rate=1e-3, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01,
        schedule="cosine",  # cosine | exponential | constant
        warmup_steps=100, decay_steps=0,  # 0 = train.steps
        end_learning_rate_factor=0.1, decay_rate=0.999,  # exponential: lr * decay_rate**step
        clip_norm=1.0,
        # "all": AdamW decays every parameter (checkpoints of earlier runs restore only with this);
        # "matrices": not norms, biases, embeddings, Snake alpha or codebooks (decay_mask.py)
        decay_mask="all",
        # > 0: the train state keeps a moving average of the weights (decay min(ema_decay, n / (n + 10)) after n
        # updates), which evaluation, later stages, synthesis and export read instead of the last step's
        ema_decay=0.0))

    c.train = ml_collections.ConfigDict(dict(
        steps=1000, seed=0, log_every=10, eval_every=500, eval_batches=4,
        ckpt_every=500, keep_checkpoints=3, async_checkpointing=True,
        peak_flops=0.0,   # per-device peak for MFU; 0 = look up (accelerators) or measure a matmul (CPU)
        max_minutes=0.0,  # wall-clock budget of one invocation (0 = none): checkpoint and stop when spent
        # > 0 (with max_minutes): after this many steps, within the warm-up so that no update yet depends on the
        # schedule's length, the loop fits that length to what max_minutes has left at the steps' measured speed,
        # so the learning rate decays as the time runs out; kept in the optimizer state (resumes keep it), and
        # train.steps is only its starting value
        fit_schedule_at=0,
        # > 0: stop (checkpointing) after this step, as a pre-emption would, the schedule as it is: a later run
        # without it goes on (the demo's speed probe is its tokenizer's first steps)
        stop_at_step=0,
        profile=False,
        grad_accum_steps=1,       # micro-batches a step's batch is split into (gradients averaged; accumulate.py)
        metrics_one_behind=True,  # fetch a logged step's metrics after dispatching the next (no stall)
        profile_steps="",         # "start:stop": jax.profiler trace of steps start..stop-1 (0-based) into
                                  # workdir/tensorboard (TensorBoard's profile tab); "" = none
        # Multi-process runs agree every this many steps whether to stop (a SIGTERM on any process, or
        # process 0's max_minutes): one tiny all-gather across processes.
        stop_check_every=1,
        # XLA options of the train/eval programs, "name=value,…" (program.compiler_options); "" = defaults
        compiler_options="",
        # Where XLA's compiled programs are kept for later runs to read back (a resume; "" = off, or JAX's own
        # JAX_COMPILATION_CACHE_DIR): speech_jax/train/compilation_cache.py
        compilation_cache_dir="",
    ))

    # num_devices 0 = every device; otherwise the first N (single process).
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, num_devices=0))
    # fsdp_min_bytes: a state tensor at least this large that the rules leave unsharded over fsdp shards
    # its largest divisible dimension over fsdp; smaller ones stay replicated (speech_jax/sharding.py).
    c.sharding = ml_collections.ConfigDict(dict(rules=DEFAULT_RULES, fsdp_min_bytes=FSDP_MIN_BYTES))
    return c
