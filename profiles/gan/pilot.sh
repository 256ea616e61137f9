#!/bin/sh
# The SGL-weight pilot of the gan profile, on the validation split (docs/training.md, "Choosing a
# weight on the validation split"). Run from anywhere once the start point exists
# (`dvc repro pretrain` here); writes only under pilot/ (not a DVC output) and prints PSNR-Y
# and LPIPS on the validation images for the recipe and for recipe + SGL at each weight.
#   sh profiles/gan/pilot.sh [iterations]        (default 500; seed 0)
set -eu
cd "$(dirname "$0")"
iterations=${1:-500}
start=models/edsr_baseline-l1-x4/model.safetensors
test -f "$start" || { echo "$start not found: run 'dvc repro pretrain' here first" >&2; exit 2; }
mkdir -p pilot/models
ln -sfn ../data pilot/data
ln -sfn ../../models/pretrained pilot/models/pretrained
python - "$iterations" <<'PY'
import sys
import yaml

params = yaml.safe_load(open("params.yaml"))
recipe = params["losses"]["esrgan"]
losses = {"esrgan": recipe}
for tag, w in (("w0001", 0.001), ("w001", 0.01), ("w01", 0.1)):
    losses[f"sgl_{tag}"] = {**recipe, "sgl": {"weight": w, "operator": "hessian", "distance": "l1"}}
params.update(root="../../..", losses=losses)
params["data"]["dir"] = "../" + params["data"]["dir"]
params["experiment"].update(losses=list(losses), replicates=[], baseline="esrgan")
start = "../models/edsr_baseline-l1-x4/model.safetensors"
params["train"].update(iterations=int(sys.argv[1]), init_from=start, milestones=[],
                       checkpoint_every=250, val_every=250)
yaml.safe_dump(params, open("pilot/params.yaml", "w"), sort_keys=False)
PY
sgsr runs --write --params pilot/params.yaml >/dev/null
val=data/prepared/x4/val
for run in $(sgsr runs --params pilot/params.yaml); do
  sgsr train --params pilot/params.yaml --run "$run"
  sgsr upscale "$val/lr" "pilot/sr/$run" --weights "pilot/models/$run/model.safetensors"
  echo "== $run (validation split)"
  sgsr evaluate --sr "pilot/sr/$run" --hr "$val/hr" --scale 4 --metrics psnr,lpips \
    --pretrained models/pretrained
done
