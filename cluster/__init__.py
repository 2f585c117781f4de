"""Running on a Ray cluster: the example cluster YAML, the job runtime environment, the Grafana dashboard, the
metric definitions (`cluster.metrics`) and the `scale` / `status` commands that talk to a running job."""
