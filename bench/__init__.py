"""Benchmarks and experiments, run as scripts (``python bench/<name>.py``) and using the project only through its
public functions: the sandbox against other harnesses (`sandbox_throughput`), the actor-learner loop's parts
against plain baselines (`loop`, `loop_systems`), and the learning experiment (`learning`, `learning_arms`,
`learning_report`)."""
