"""Weights that cannot be right are refused on every load path (sgsr.weight_check), and a run
card is checked against bounds and the tensor shapes before anything is built."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from sgsr import imaging, infer, preflight
from sgsr.config import ConfigError
from sgsr.models import MAX_INT_SETTING, build_model
from sgsr.models.community import canonical_state_dict
from sgsr.warmstart import load_init
from sgsr.weight_check import BadWeightsError, weight_problems
from sgsr.weights import load_model, write_weights

KWARGS = {"n_resblocks": 1, "n_feats": 8}
CARD = {"arch": "edsr_baseline", "model_kwargs": KWARGS, "scale": 2, "weights": "raw"}


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("edsr_baseline", scale=2, **KWARGS)


def _run(folder: Path, state: dict, card: dict | None = None) -> Path:
    return write_weights(folder, state, card or CARD)


def _spoiled(kind: str) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in _tiny().state_dict().items()}
    if kind == "nan":
        return {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    if kind == "inf":
        next(iter(state.values())).view(-1)[0] = float("inf")
        return state
    return {k: (v > 0).to(getattr(torch, kind)) for k, v in state.items()}


@pytest.mark.parametrize("kind", ["nan", "inf", "bool", "int64"])
def test_upscale_refuses_weights_that_cannot_be_trained_ones(tmp_path: Path, kind: str) -> None:
    weights = _run(tmp_path / "run", _spoiled(kind))
    imaging.write_image(tmp_path / "x.png", np.full((6, 6, 3), 90, np.uint8))
    with pytest.raises(BadWeightsError, match=r"model\.safetensors: these weights cannot be"):
        infer.upscale_path(tmp_path / "x.png", tmp_path / "y.png", weights, device="cpu")
    assert not (tmp_path / "y.png").exists()


def test_init_from_and_community_paths_check_the_weights_too(tmp_path: Path) -> None:
    with pytest.raises(BadWeightsError, match=r"train\.init_from: weights\.pth"):
        load_init(_tiny(), _spoiled("bool"), "weights.pth")
    with pytest.raises(BadWeightsError, match=r"x\.pth.*NaN or infinite"):
        canonical_state_dict(_spoiled("nan"), "x.pth")


def test_integer_counters_are_state_not_weights() -> None:
    bn = torch.nn.BatchNorm2d(4).state_dict()
    assert bn["num_batches_tracked"].dtype == torch.int64
    assert weight_problems(bn) == []
    assert weight_problems({"w": torch.zeros(2, dtype=torch.int32)}) == [
        "w: dtype int32, not floating point"
    ]


def test_good_weights_still_load(tmp_path: Path) -> None:
    weights = _run(tmp_path / "run", _tiny().state_dict())
    model, scale = load_model(weights)
    assert scale == 2 and model.sgsr_weights == "raw"


# --- can this model be built within bounds -----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"n_resblocks": 1, "n_feats": 100_000}, "n_feats=100000 is over the limit"),
        ({"n_resblocks": 10_000_000, "n_feats": 8}, "n_resblocks=10000000 is over the limit"),
        ({"n_resblocks": 40, "n_feats": 4000}, "parameters"),
        ({"n_resblocks": 2, "n_feats": 8}, "does not fit the weights"),
    ],
)
def test_a_run_card_that_does_not_describe_its_weights_is_refused_before_building(
    tmp_path: Path, kwargs: dict, words: str
) -> None:
    """The card arrives as data (dvc pull): 100 000 features would allocate 360 GB, ten
    million blocks would hang; each is refused in well under a second, naming the card."""
    weights = _run(tmp_path / "run", _tiny().state_dict())
    card = {**CARD, "model_kwargs": kwargs}
    (tmp_path / "run/run.json").write_text(json.dumps(card))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=rf"run\.json: cannot build the model.*{words}"):
        load_model(weights)
    assert time.perf_counter() - t0 < 30  # nothing was really built


def test_params_refuse_a_model_over_the_bounds_naming_the_key() -> None:
    raw = {
        "models": {"big": {"arch": "edsr_baseline", "n_resblocks": MAX_INT_SETTING + 1}},
        "losses": {"l1": {"l1": 1.0}},
        "experiment": {"models": ["big"], "losses": ["l1"]},
    }
    with pytest.raises(ConfigError, match=r"models\.big\.n_resblocks: n_resblocks=4097 is over"):
        preflight.parse(raw)


def test_a_community_card_without_weights_is_a_message(tmp_path: Path) -> None:
    weights = _run(tmp_path / "run", _tiny().state_dict())
    card = {"arch": "community", "model_kwargs": {}, "scale": 2}
    (tmp_path / "run/run.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"run\.json: cannot build the model.*'weights'"):
        load_model(weights)


def test_a_deeply_nested_card_is_a_message(tmp_path: Path) -> None:
    weights = _run(tmp_path / "run", _tiny().state_dict())
    (tmp_path / "run/run.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"run\.json: not valid JSON"):
        load_model(weights)


_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 64),
        st.sampled_from([10**7, 10**12, 2**63]),
        st.floats(allow_nan=True),
        st.text(max_size=8),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_CARDS = st.fixed_dictionaries(
    {},
    optional={
        "arch": st.sampled_from(["edsr_baseline", "edsr", "rcan", "srresnet", "community", "x:Y"])
        | _VALUES,
        "model_kwargs": st.dictionaries(
            st.sampled_from(
                [
                    "n_resblocks",
                    "n_feats",
                    "n_resgroups",
                    "weights",
                    "res_scale",
                    "rgb_range",
                    "n_colors",
                    "bogus",
                ]
            ),
            _VALUES,
            max_size=4,
        )
        | _VALUES,
        "scale": st.sampled_from([2, 3, 4]) | _VALUES,
        "weights": _VALUES,
    },
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(card=_CARDS)
def test_fuzzed_run_cards_load_or_fail_with_a_message(tmp_path: Path, card: dict) -> None:
    """Any card beside real weights either loads them or raises ValueError/OSError naming the
    file: never another exception, never a hang (bounded sizes), never an import."""
    folder = tmp_path / "run"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in _tiny().state_dict().items()}, str(weights))
    (folder / "run.json").write_text(json.dumps(card, default=str))
    try:
        load_model(weights)
    except (ValueError, OSError) as exc:
        assert str(folder) in str(exc)


def test_a_pickle_refusal_quotes_what_was_refused_not_torch_s_advice(tmp_path: Path) -> None:
    import os

    from sgsr.models.community import CommunityModelError, read_state_dict

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil.pth"
    torch.save({"w": Payload()}, path)
    with pytest.raises(CommunityModelError) as info:
        read_state_dict(path)
    text = str(info.value)
    assert "unsupported GLOBAL posix.getcwd" in text
    assert "Do it only if" not in text and "weights_only` set to `False`" not in text
