"""Evaluation: sample programs from a model, grade them in the sandbox, report pass@k (`evaluate`), the
unbiased pass@k estimator and its report tables (`pass_at_k`), and the `launch.py eval` command (`command`)."""
