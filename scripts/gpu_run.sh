#!/usr/bin/env bash
# The gpu preset end to end on the GPU machine (../shared/gpu/README.md) in one command:
# install the carried wheels, benchmark the dream beside collection (which runs on the
# CPU workers), run the pipeline until it ends or the deadline, export the agent, and
# pack what comes back (at most 8 files of 16 MiB) under $OUT.
#
#   device:  bash scripts/gpu_run.sh [DEADLINE_S [run_pipeline.py args]]   (carry .whl)
#   CPU dry run:  OUT=/tmp/gpu_out RUN=/tmp/gpu_run PYTHON="uv run python" BENCH=0 \
#                 bash scripts/gpu_run.sh 300 --preset smoke
#
# DEADLINE_S (default 580) counts from the start; the pipeline is stopped at it, and the
# same command resumes it while the machine (and runs/gpu) is still there.
set -uo pipefail
deadline=${1:-580}
shift || true
pipeline_args=("$@")
[ ${#pipeline_args[@]} -eq 0 ] && pipeline_args=(--preset gpu)
out=${OUT:-gpu_out}
run=${RUN:-runs/gpu}
py=${PYTHON:-python3}
mkdir -p "$out"
exec > >(tee -a "$out/gpu_run.log") 2>&1

# The image's python3 plus the carried wheels (PYTHON=... runs another interpreter).
if [ "$py" = python3 ] && compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=src:/tmp/site
fi
# TF32 on the GPU's matmuls and convolutions (V, M, the dream); the CPU is unaffected.
export JAX_DEFAULT_MATMUL_PRECISION=tensorfloat32
left() { echo $((deadline - SECONDS)); }

$py -c "import jax; print('devices:', jax.devices())" || exit 1
nproc; free -g | head -2

# The dream benchmark on the accelerator while collection keeps the CPU workers busy
# (BENCH=0 skips it).
bench=
if [ "${BENCH:-1}" = 1 ]; then
  timeout 150 $py benchmarks/dream.py --horizon 100 --batches 4096 16384 65536 \
    --chunks --loop-population 16 --repeats 3 --generation-presets gpu full \
    > "$out/bench_dream.txt" 2>&1 &
  bench=$!
fi

setsid $py run_pipeline.py --run "$run" --no-progress "${pipeline_args[@]}" \
  > "$out/pipeline.log" 2>&1 &
pipeline=$!
while kill -0 $pipeline 2>/dev/null && [ "$(left)" -gt 45 ]; do sleep 5; done
if kill -0 $pipeline 2>/dev/null; then
  echo "deadline: stopping the pipeline at $SECONDS s"
  kill -TERM -- -$pipeline 2>/dev/null
  sleep 10
  kill -KILL -- -$pipeline 2>/dev/null
fi
wait $pipeline; echo "pipeline exit: $? at $SECONDS s"
if [ -n "$bench" ]; then
  wait $bench; cp benchmarks/results/dream_*.json "$out/"
fi
tail -5 "$out/pipeline.log"

# Training throughput with what time is left (V's two lowerings, M).
if [ "${BENCH:-1}" = 1 ] && [ "$(left)" -gt 90 ]; then
  timeout $(( $(left) - 60 )) $py benchmarks/train.py --models vae,rnn --vae-batch 100 \
    --steps 10 --repeats 3 --vae-variants lax,ours > "$out/bench_train.txt" 2>&1
  cp benchmarks/results/train_*.json "$out/" 2>/dev/null
fi
if compgen -G "$run/eval/round*_agent.json" > /dev/null; then
  $py scripts/export_agent.py --run "$run" --out "$out/pretrained" &&
    tar -czf "$out/pretrained.tar.gz" -C "$out" pretrained && rm -r "$out/pretrained"
fi
# Everything but episodes, latents and checkpoints: report, config, seeds, markers
# with stage times, metrics, curves, evaluation JSON.
tar -czf "$out/run_summary.tar.gz" --exclude=data --exclude=latents --exclude=ckpt \
  --exclude='*.npz' "$run"
ls -la "$out"
echo "done at $SECONDS s"
