"""The Ray actors of the RL runtime: samplers (`sampler`), the online buffer (`buffer`), and the fleet manager that
adds, removes, restarts and scales samplers and sandbox workers (`fleet`)."""
