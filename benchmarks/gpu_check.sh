#!/usr/bin/env bash
# The GPU path end to end, in one short run (issue 12 step 4): install if needed, then train the
# catalyzer, CCST and KDindex a few epochs each on a stand-in, encode / compress, and print per
# method the device, epochs, s/epoch, vectors/s and peak GPU memory (benchmarks/gpu_check.py).
#
#   benchmarks/gpu_check.sh                      # --device cuda: under 10 minutes on a GPU
#   benchmarks/gpu_check.sh --device cpu --quick # the CPU path: under 2 minutes
#   (other options go to gpu_check.py: --synthetic, --threads N, --methods ccst ...)
#
# Installing: nothing when annrepro, catalyzer, ccst, kdindex, torch and faiss import already.
# Else `pip install -e` of shared/ and the three packages with -c constraints.txt, and torch
# pinned to torch==2.13.0 unless a CUDA build of torch is already installed. On a GPU machine
# install the CUDA wheel of torch 2.13.0 FIRST (e.g. from the PyTorch index for your CUDA
# version, or a local wheel: pip install torch==2.13.0+cu126 ...): an index that serves the CPU
# build (as PIP_FIND_LINKS does on the project's CPU machines) would otherwise give a torch whose
# torch.cuda.is_available() is False, and gpu_check then stops with that one line. The
# constraint torch==2.13.0 accepts a local build such as 2.13.0+cu126. A machine without network
# access needs every package importable (or wheels at hand) before this script runs.
#
# Environment: PYTHON (default python3), ANNREPRO_DATA (the stand-ins: sift-10K, fmnist-1K;
# synthetic ones of the same shapes when absent), GPU_CHECK_TIMEOUT (seconds, default 600).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c "import annrepro, catalyzer, ccst, kdindex, torch, faiss" 2>/dev/null; then
    torch_req=(torch==2.13.0)
    if "$PY" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
        torch_req=()  # a CUDA build is there: keep it (pip would not replace it anyway)
    fi
    echo "gpu_check.sh: installing shared/ and the three packages (${torch_req[*]:-CUDA torch kept})"
    "$PY" -m pip install -c constraints.txt "${torch_req[@]}" \
        -e shared -e packages/catalyzer -e packages/ccst -e packages/kdindex
fi
exec timeout "${GPU_CHECK_TIMEOUT:-600}" "$PY" benchmarks/gpu_check.py "$@"
