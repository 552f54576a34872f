"""Evaluation: resynthesis metrics (`resynthesis`), speaker-verification EER (`verification`),
and figures / audio written next to a run (`artifacts`). Host-side numpy, no JAX."""
