"""The speaker-conditioning sweep (`speaker_conditioning.py`) at the demo's scale: the demo's AR
(`experiments/demo/ar.py`: d 128, 4 layers, guided attention, phonemes) for its 700 steps, so the three trials
and their evaluations take about half an hour on a 2-core CPU. Every trial is rendered by the same tokenizer,
flow-matching stage and judge, those of a finished demo directory D:

    speech-jax sweep experiments/sweeps/speaker_conditioning_demo.py --out sweeps/speaker_demo \\
        --param tokenizer=D/workdirs/tokenizer --param flow_matching=D/workdirs/flow_matching \\
        --param judge=D/workdirs/judge --param data_dir=D/data \\
        --config.data.data_dir=D/data --config.data.bpe_model=D/data/espeak_tts/small/1.0.0/bpe.model
"""
import dataclasses

from experiments.sweeps import speaker_conditioning


def get_sweep():
    sweep = speaker_conditioning.get_sweep()
    return dataclasses.replace(sweep, base="experiments/demo/ar.py",
                               params=dict(sweep.params, utterances="16"))
