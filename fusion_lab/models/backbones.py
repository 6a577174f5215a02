"""Backbones: any timm model that supports ``features_only``.

The backbone returns the maps of the tapped stages, low level first. For ResNet50 the
default taps (the last three stages) are S3/S4/S5 of the CN-CNN paper: 512/1024/2048
channels at strides 8/16/32.

``pretrained`` is False, True (timm's own source, needs internet), a weights name shipped
with fusion_lab or the path of a local weights file (``fusion_lab.config.weights`` tells them
apart), which timm loads strictly into the full model (less its classifier) before the
feature wrapper is built (``pretrained_cfg_overlay=dict(state_dict=...)``). Registered
backbones (``small_cnn``, a user's own) load a file the same way, strictly, in
``build_backbone``.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import math
import os

import timm
import torch
from torch import nn

from fusion_lab.config.weights import NAMED_WEIGHTS, named_backbone, weights_path
from fusion_lab.errors import FusionLabError, UnknownComponentError, WeightsError
from fusion_lab.registries import BACKBONES


def level_names(reductions: list[int]) -> list[str]:
    """Names of tapped levels from their strides: stride 8 -> 's3', 16 -> 's4', 32 -> 's5'."""
    names = []
    for r in reductions:
        k = math.log2(r)
        names.append(f"s{int(k)}" if k.is_integer() else f"r{r}")
    if len(set(names)) != len(names):  # two taps at one stride: number them instead
        names = [f"l{i}" for i in range(len(reductions))]
    return names


def timm_model_names(pattern: str | None = None) -> list[str]:
    """timm architectures matching a wildcard (timm's own ``list_models``); a pattern with a
    dot also matches pretrained tags (``resnet50.tv*`` -> ``resnet50.tv_in1k``, ...), which
    studies name as backbones."""
    names = timm.list_models(pattern or "*")
    if pattern and "." in pattern:
        names = sorted(set(names) | set(timm.list_models(pattern, pretrained=True)))
    return names


def _read_weights(name: str, path: str) -> dict:
    """A state dict from ``path`` (timm unwraps checkpoints), without ``name``'s classifier."""
    try:
        state = timm.models.load_state_dict(path)
    except Exception as e:  # not a torch file, truncated, pickled code, ...
        raise WeightsError(f"cannot read weights file {path!r}: {type(e).__name__}: {e}") from e
    try:
        classifier = timm.models.get_pretrained_cfg_value(name, "classifier") or ()
    except RuntimeError:
        classifier = ()
    prefixes = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    return {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}


class TimmBackbone(nn.Module):
    """Any timm model with features_only (resnet50, convnext_tiny, regnety_008, ...)."""

    def __init__(
        self,
        name: str,
        pretrained: bool | str = False,
        out_indices: list[int] | tuple[int, ...] = (-3, -2, -1),
    ):
        super().__init__()
        if not timm.is_model(name):
            raise UnknownComponentError(_unknown_backbone(name))
        kwargs: dict = dict(features_only=True, out_indices=tuple(out_indices))
        if isinstance(pretrained, str):
            if not os.path.isfile(pretrained):
                raise WeightsError(
                    f"pretrained weights file {pretrained!r} not found; give the path of a "
                    f"state dict saved from timm's {name!r}, true (download) or false"
                )
            # timm loads a file into a features_only model non-strictly (it drops the
            # classifier and merely logs the rest), so a file of another architecture would
            # load silently, or not at all. Hand timm the state dict less its classifier,
            # with num_classes=0 so that it loads strictly.
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(
                state_dict=_read_weights(name, pretrained), num_classes=0))
        else:
            kwargs.update(pretrained=bool(pretrained))
        try:
            self.body = timm.create_model(name, **kwargs)
        except RuntimeError as e:
            if isinstance(pretrained, str):
                first = str(e).strip().splitlines()
                detail = "; ".join(line.strip()[:240] for line in first[:3])  # keys: a few
                raise WeightsError(
                    f"weights file {pretrained!r} does not fit backbone {name!r}: {detail}"
                ) from e
            raise
        except (OSError, ValueError) as e:
            if pretrained is True:
                raise WeightsError(
                    f"could not fetch pretrained weights for {name!r} from timm's source "
                    f"({type(e).__name__}: {e}); without internet, download them elsewhere "
                    "and set `pretrained:` to the local file's path"
                ) from e
            if isinstance(pretrained, str):
                raise WeightsError(f"cannot read weights file {pretrained!r}: {e}") from e
            raise
        except Exception as e:  # timm raises plain Exceptions for bad out_indices etc.
            if "out_indices" in str(e) or isinstance(e, (IndexError, AssertionError)):
                raise UnknownComponentError(
                    f"backbone {name!r} cannot tap stages {list(out_indices)}: {e}"
                ) from e
            raise
        self.name = name
        self.out_channels: list[int] = list(self.body.feature_info.channels())
        self.reductions: list[int] = list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))

    def param_stages(self) -> list[list[nn.Parameter]]:
        """The backbone's parameters by stage, low first (see ``timm_stages``)."""
        return timm_stages(self.body)


def _find_module(body: nn.Module, name: str, modules: dict[str, int]) -> str | None:
    """The name under which timm's feature wrapper holds the module ``name`` reports."""
    flat = name.replace(".", "_")  # FeatureListNet flattens "stages.0" into "stages_0"
    for cand in (name, flat, f"model.{name}", f"model.{flat}"):  # FeatureGetterNet: model.
        if cand in modules:
            return cand
    return None


def timm_stages(body: nn.Module) -> list[list[nn.Parameter]]:
    """A timm ``features_only`` model's parameters split into stages, low first.

    The rule: the stages are the feature levels of ``body.feature_info`` (all of them,
    tapped or not, as far as the model was built); level i's stage is its module
    (``feature_info`` "module", e.g. ``layer4``) plus every module before it, in the
    model's module order, that belongs to no earlier level (stems, downsampling blocks
    between two reported levels); anything after the last level's module joins the last
    stage. ResNet50: [conv1 bn1 act1], [maxpool layer1], [layer2], [layer3], [layer4];
    EfficientNet-B0's last stage is blocks.5 + blocks.6.
    """
    modules = {n: i for i, (n, _) in enumerate(body.named_modules())}
    found = [_find_module(body, f["module"], modules) for f in body.feature_info.info]
    levels = [(modules[n], n) for n in found if n is not None]
    if not levels:
        raise FusionLabError(
            f"cannot split {type(body).__name__} into stages: none of its feature_info modules "
            f"({[f['module'] for f in body.feature_info.info]}) is one of its modules")
    stages: list[list[nn.Parameter]] = [[] for _ in levels]
    for pname, param in body.named_parameters():
        owner = pname.rsplit(".", 1)[0] if "." in pname else ""
        pos = modules.get(owner, 0)
        idx = len(levels) - 1  # after the last level's module: the last stage
        for i, (start, lname) in enumerate(levels):
            if pname.startswith(lname + ".") or pos <= start:
                idx = i
                break
        stages[idx].append(param)
    return stages


def build_backbone(
    name: str, pretrained: bool | str = False, out_indices=(-3, -2, -1)
) -> nn.Module:
    """A backbone registered under ``name`` (a user's own), else timm's model of that name.

    ``pretrained`` may be a weights name (``fusion_lab.config.weights``) or a file path. Registered
    backbones take ``(pretrained, out_indices)`` and follow the contract in
    ``fusion_lab.registries``; they never see a file: they are built with
    ``pretrained=False`` and the file is loaded strictly into their state dict here.
    """
    if isinstance(pretrained, str):
        pretrained = str(weights_path(pretrained))
    if name not in BACKBONES:
        return TimmBackbone(name, pretrained=pretrained, out_indices=out_indices)
    if not isinstance(pretrained, str):
        return BACKBONES.get(name)(pretrained=pretrained, out_indices=out_indices)
    backbone = BACKBONES.get(name)(pretrained=False, out_indices=out_indices)
    load_weights(backbone, name, pretrained)
    return backbone


def load_weights(module: nn.Module, name: str, path: str) -> None:
    """Load a weights file strictly into a registered backbone; a misfit is one WeightsError."""
    if not os.path.isfile(path):
        raise WeightsError(f"pretrained weights file {path!r} not found; give the path of a "
                           f"state dict saved from backbone {name!r}, true or false")
    state = _read_weights(name, path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = "; ".join(line.strip()[:240] for line in first[:3])
        raise WeightsError(f"weights file {path!r} does not fit backbone {name!r}: {detail}") from e


def backbone_problems(name: str, pretrained: bool | str,
                      out_indices: list[int] | tuple[int, ...] = (-3, -2, -1)) -> list[str]:
    """Why a backbone cannot be built, found without building it (empty if it can).

    An unknown name; a weights name that is unknown or meant for another backbone; a
    weights file that is missing or holds no state dict (read once per file); and whatever
    a registered backbone's own ``check_args`` hook reports.
    """
    if name not in BACKBONES and not timm.is_model(name):
        return [_unknown_backbone(name)]
    if isinstance(pretrained, str):
        problem = _weights_problem(name, pretrained)
        if problem:
            return [problem]
    if name not in BACKBONES:
        problem = _timm_tap_problem(name, tuple(out_indices))
        return [problem] if problem else []
    check = getattr(BACKBONES.get(name), "check_args", None)
    if check is None:
        return []
    # a registered backbone never sees a weights file: it is built with pretrained=False
    # and the file is loaded into it by build_backbone
    return list(check(False if isinstance(pretrained, str) else pretrained, list(out_indices)))


@functools.lru_cache(maxsize=64)
def _timm_tap_problem(name: str, out_indices: tuple[int, ...]) -> str | None:
    """Why timm's ``name`` cannot give the feature levels ``out_indices`` (None if it can).

    Found by building the model on the meta device (no memory, no weights: hundredths of a
    second), so a study learns it before any run trains rather than as a failed run.
    """
    try:
        with torch.device("meta"):
            timm.create_model(name, features_only=True, out_indices=out_indices)
        return None
    except Exception as e:  # timm: IndexError, AssertionError, RuntimeError, plain Exception
        why = f"{type(e).__name__}: {e}"
    try:
        with torch.device("meta"):
            n = len(timm.create_model(name, features_only=True).feature_info)
    except Exception:  # no features_only at all: timm's own message says so
        return f"backbone {name!r} cannot serve as a multi-level backbone ({why})"
    return (f"backbone {name!r} cannot tap stages {list(out_indices)}: it has {n} feature "
            f"levels (model.out_indices from 0..{n - 1}, or -{n}..-1)")


def _weights_problem(name: str, pretrained: str) -> str | None:
    """A weights name or file that cannot start backbone ``name`` (None if it can)."""
    try:
        path = weights_path(pretrained)
    except WeightsError as e:
        return str(e)
    meant_for = named_backbone(pretrained)
    if meant_for is not None and meant_for != name:
        return (f"pretrained weights {pretrained!r} are for backbone {meant_for!r}, "
                f"not {name!r}")
    if not path.is_file():
        if meant_for is not None:
            return (f"the shipped weights {pretrained!r} are missing ({path}); reinstall "
                    "fusion_lab or rebuild them (`make weights`; docs/weights.md)")
        return (f"pretrained weights file {pretrained!r} not found; give the path of a state "
                f"dict saved from {name!r}, a weights name ({', '.join(NAMED_WEIGHTS)}), "
                "true (download) or false")
    st = path.stat()
    return _weights_file_problem(pretrained, str(path.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _weights_file_problem(shown: str, path: str, mtime_ns: int, size: int) -> str | None:
    """Whether a weights file reads as a state dict (name -> tensor); cached per version
    of the file (its path, modification time and size)."""
    what = (f"weights file {shown!r} holds no state dict (a mapping of parameter names to "
            "tensors, as torch.save(model.state_dict(), path) writes)")
    try:
        state = timm.models.load_state_dict(path)
    except AttributeError:  # timm unwraps a mapping: a list or a tensor has no .items()
        return what
    except Exception as e:  # not a torch file, truncated, pickled code, ...
        return f"cannot read weights file {shown!r}: {type(e).__name__}: {e}"
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                            for k, v in state.items()):
        return what
    return None


def _unknown_backbone(name: str) -> str:
    """The message for a name that is neither registered nor one of timm's models."""
    names = [*BACKBONES.list(), *timm.list_models()]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    if not close:
        close = fnmatch.filter(names, f"*{name[:4]}*")[:5]
    hint = f" (similar: {', '.join(close)})" if close else ""
    return (f"unknown backbone {name!r}{hint}; `fusionlab list backbones PATTERN` "
            "lists timm's models")
