"""The paper's speaker-conditioning ablation (MiniMax-Speech table 3): the AR stage with the jointly trained
speaker encoder (learnable), a frozen speaker embedding (fixed: the reference's log-mel statistics, our
stand-in for a pretrained verification model) or none (the voice from the one-shot prompt only), each scored
zero-shot and one-shot with SIM and the judge's CER through `speech-jax evaluate`.

Every run renders audio with the same tokenizer and flow-matching stage (`--param tokenizer=…
flow_matching=…`; the flow-matching stage's own speaker encoder comes from a learnable AR run), so only the
AR's conditioning differs. Training-time rows add the teacher-forced token accuracy and the speaker EER of
unseen speakers (learnable runs only).

    speech-jax sweep experiments/sweeps/speaker_conditioning.py --out sweeps/speaker \\
        --param tokenizer=workdirs/tokenizer_small --param flow_matching=workdirs/flow_matching_small \\
        --param judge=workdirs/judge_small --config.data.data_dir=data
"""
from speech_jax.sweep import Evaluation, Sweep


def _evaluate(mode: str) -> Evaluation:
    return Evaluation(mode, (
        "evaluate", "--from-corpus", "{corpus}", "--data-dir", "{data_dir}", "--split", "test_unseen",
        "--limit", "{utterances}", "--mode", mode, "--tokenizer", "{tokenizer}", "--ar", "{workdir}",
        "--flow-matching", "{flow_matching}", "--judge", "{judge}", "--speaker-model", "{speaker_model}",
        "--seed", "{seed}", "--out", "{out}"))


def get_sweep() -> Sweep:
    return Sweep(
        base="experiments/ar/small.py",
        trials=({"model.speaker": "learnable"},
                {"model.speaker": "fixed"},
                # without a speaker vector only the prompt carries the voice (ablations/speaker_none.py)
                {"model.speaker": "none", "model.one_shot_prob": 1.0}),
        seeds=(0,),
        metrics=("loss", "eval/token_accuracy", "eval_test_unseen/token_accuracy", "eval_test_unseen/speaker_eer",
                 "zero_shot/sim", "zero_shot/judge_cer", "one_shot/sim", "one_shot/judge_cer"),
        curves=("loss", "eval/token_accuracy"),
        evaluations=(_evaluate("zero_shot"), _evaluate("one_shot")),
        params=dict(corpus="espeak_tts/small", data_dir="data", utterances="24", judge="workdirs/judge_small",
                    speaker_model="resemblyzer", tokenizer="workdirs/tokenizer_small",
                    flow_matching="workdirs/flow_matching_small"))
