#!/usr/bin/env bash
# The first thing to run on a GPU machine: the smoke preset on CUDA with two learner ranks (NCCL, ZeRO-2, bf16
# compute with fp32 master weights) and one sampler, each on a GPU of its own (the sampler shares the learners'
# when there are only two). Prints the plan, then the learners' device and backend, steps/s and weight-sync time.
#
#   bench/gpu_check.sh [--address ADDRESS] [--section.key=value ...]     (extra arguments go to plan and train)
#
# GPU_CHECK_ALLOW_CPU=1 skips the GPU check: with RLTF_DEVICE=cpu and a Ray cluster started with logical GPUs
# (ray start --head --num-gpus=4 ...; --address ...) it runs the same path on a CPU machine, gloo instead of NCCL.
set -euo pipefail
cd "$(dirname "$0")/.."

gpus=$(python -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$gpus" -lt 2 ] && [ -z "${GPU_CHECK_ALLOW_CPU:-}" ]; then
    echo "gpu_check: torch sees $gpus CUDA GPU(s); this check needs 2 or more (two learner ranks on NCCL)." >&2
    echo "On a CPU machine, tests/test_placement_ray.py checks the placement with Ray's logical GPUs." >&2
    exit 2
fi
sampler_gpus=1
if [ "$gpus" -eq 2 ]; then sampler_gpus=0; fi  # both GPUs go to the learner ranks; the sampler runs on the CPU

out=$(mktemp -d /tmp/rltf-gpu-check-XXXX)
settings=(--config smoke --learner.num_ranks=2 --learner.num_gpus=1 --learner.deepspeed_config=zero2_bf16
          --sampler.num_gpus="$sampler_gpus" --run.name=gpu-check --run.output_dir="$out" "$@")

echo "== plan"
python launch.py plan "${settings[@]}"
echo "== train (smoke preset, about 2 minutes)"
started=$(date +%s)
python launch.py train "${settings[@]}"
echo "== result ($(( $(date +%s) - started )) s in all; run directory $out/gpu-check)"
python - "$out/gpu-check/metrics.jsonl" <<'EOF'
import json, statistics, sys

records = [json.loads(line) for line in open(sys.argv[1])]
setup = next(r for r in records if r.get("kind") == "setup")
print(f"learner ranks: backend {setup['backend']}, {setup['precision']}, devices "
      + ", ".join(f"rank {d['rank']}: GPU {','.join(d['gpu_ids']) or '-'} -> {d['assigned_device']} ({d['device']})"
                  for d in setup["learner_devices"]))
rl = [r for r in records if r.get("kind") == "learner"]
steps = [r["step_s"] for r in rl if "step_s" in r]
publish = [r["publish_s"] for r in records if r.get("event") == "publish" and "publish_s" in r]
lag = [r["weight_sync_s"] for r in rl if r.get("weight_sync_s") is not None]
if steps:
    print(f"RL steps: {len(steps)}, {1 / statistics.median(steps):.2f} steps/s (median step {statistics.median(steps):.3f} s)")
if publish:
    print(f"weight publish (learner rank 0): median {statistics.median(publish):.3f} s over {len(publish)} versions")
if lag:
    print(f"weight sync, push to sampler running it: median {statistics.median(lag):.2f} s")
EOF
