"""Inference: AR token sampling and KV-cache decoding, ODE solvers for flow matching, synthesis."""
