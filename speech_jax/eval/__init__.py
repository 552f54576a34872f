"""Evaluation: resynthesis metrics (`resynthesis`), speaker-verification EER (`verification`), figures
and audio written next to a run (`artifacts`), and the seed-tts-eval protocol (`seed_tts`: WER, SIM,
with MCD-DTW and duration ratio from `mcd` against espeak ground truth; ASR/speaker models in `models`;
the offline CTC judge's transcriber in `judge`), and greedy CTC decoding with error rates (`cer`)."""
