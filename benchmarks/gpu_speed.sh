#!/usr/bin/env bash
# Issue 11's GPU check in one accelerator run (prepared and tested on CPU; see README).
#
#   bash benchmarks/gpu_speed.sh prepare      # HERE, once: data subset + Keras wheels
#   then, with the device tool, carry [".gpudata", ".whl"] and run:
#   bash benchmarks/gpu_speed.sh run          # THERE: benchmark, then experiments/gpu.toml
#
# prepare: copies a study-sized subset of ../shared/data/dfdc-20k (train 2,000 + validation
#   300 + test 500 faces per class, ~39 MB of 224 px JPEGs) to .gpudata/dfdc-sub, and the
#   wheels the GPU machine lacks (Keras 3.15.1, namex, optree, for its Python 3.12) to .whl;
#   both folders are git-ignored (.gitignore; together < 64 MiB with the tree).
# run: installs the wheels, then (1) benchmarks/train_speed.py --gpu under KERAS_BACKEND=jax
#   and torch, all ten models, against torchvision, within BENCH_S seconds (default 240);
#   (2) python -m ensemble_dfd.base_train --config experiments/gpu.toml under jax on
#   GPU_MODELS (default M6,M2,M9) for what is left of TRAIN_S seconds (default 270; a model
#   that does not finish resumes in a later run: the run folder comes back in $OUT as a tar).
#   Everything is written to $OUT as it comes (train_speed.txt/.jsonl, train.log, gpu.txt).
# CPU rehearsal (what was run to test this script):
#   OUT=/tmp/o PY=.venv/bin/python NO_INSTALL=1 BACKENDS=jax BENCH_S=400 TRAIN_S=300 \
#   SPEED_ARGS="--models M6 --size 32 --n 16 --epochs 1,1" GPU_MODELS=M6 \
#   TRAIN_ARGS="--image-size 32 --limit 16 --epochs-frozen 1 --epochs-finetune 1" \
#   bash benchmarks/gpu_speed.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
SUB=.gpudata/dfdc-sub
PY=${PY:-python3}

prepare() {
    local src=../shared/data/dfdc-20k
    [ -d "$src" ] || { echo "$src is absent" >&2; exit 2; }
    rm -rf "$SUB" && mkdir -p "$SUB"
    for spec in train:2000 validation:300 test:500; do
        split=${spec%%:*}; n=${spec##*:}
        for label in Fake Real; do
            mkdir -p "$SUB/$split/$label"
            mapfile -t files < <(find "$src/$split/$label" -name '*.jpg' | sort | head -n "$n")
            cp "${files[@]}" "$SUB/$split/$label/"
        done
    done
    mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex optree
    du -sh "$SUB" .whl
}

run() {
    : "${OUT:?set OUT to the folder whose files come back}"
    if [ -z "${NO_INSTALL:-}" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
    fi
    export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
    export ENSEMBLE_DFD_COMPILE_CACHE=/tmp/jax-cache
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" || true
    $PY -c "import jax, keras, torch; print(jax.devices(), keras.__version__, \
torch.__version__)" >> "$OUT/gpu.txt" 2>&1 || true
    timeout "${BENCH_S:-240}" $PY benchmarks/train_speed.py --gpu --data "$SUB" \
        --backends "${BACKENDS:-jax,torch}" --budget-s "$(( ${BENCH_S:-240} / 2 - 20 ))" \
        --json "$OUT/train_speed.jsonl" ${SPEED_ARGS:-} 2>&1 | tee "$OUT/train_speed.txt" || true
    KERAS_BACKEND=jax timeout "${TRAIN_S:-270}" $PY -m ensemble_dfd.base_train \
        --config experiments/gpu.toml --data "$SUB" --out runs/gpu \
        --models "${GPU_MODELS:-M6,M2,M9}" ${TRAIN_ARGS:-} 2>&1 | tee "$OUT/train.log" || true
    tar -czf "$OUT/runs_gpu.tar.gz" --exclude='*.keras' runs/gpu 2>/dev/null || true
}

"${1:?usage: gpu_speed.sh prepare|run}"
