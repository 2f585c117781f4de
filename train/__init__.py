"""Training: the core that builds a run, warm-starts the learner, loops and finishes (`controller`), where the
learner's batches come from (`sources`), what a run reports (`status`), its log and plots (`run_log`), and the
`launch.py train` command (`command`)."""
