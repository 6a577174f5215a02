"""Backbones: any timm model that supports ``features_only``.

The backbone returns the maps of the tapped stages, low level first. For ResNet50 the
default taps (the last three stages) are S3/S4/S5 of the CN-CNN paper: 512/1024/2048
channels at strides 8/16/32.

``pretrained`` is False, True (timm's own source, needs internet) or the path of a local
weights file, which timm loads strictly into the full model (less its classifier) before
the feature wrapper is built (``pretrained_cfg_overlay=dict(state_dict=...)``).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import os

import timm
import torch
from torch import nn

from fusion_lab.errors import UnknownComponentError, WeightsError
from fusion_lab.registries import BACKBONES


def timm_model_names(pattern: str | None = None) -> list[str]:
    """timm architectures matching a wildcard (timm's own ``list_models``)."""
    return timm.list_models(pattern or "*")


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


def build_backbone(
    name: str, pretrained: bool | str = False, out_indices=(-3, -2, -1)
) -> nn.Module:
    """A backbone registered under ``name`` (a user's own), else timm's model of that name.

    A registered backbone is called as ``cls(pretrained=..., out_indices=...)``, the
    contract in ``fusion_lab.registries``.
    """
    if name in BACKBONES:
        return BACKBONES.get(name)(pretrained=pretrained, out_indices=out_indices)
    return TimmBackbone(name, pretrained=pretrained, out_indices=out_indices)


def backbone_problems(name: str, pretrained: bool | str,
                      out_indices: list[int] | tuple[int, ...] = (-3, -2, -1)) -> list[str]:
    """Why a backbone cannot be built, found without building it (empty if it can).

    An unknown name; a weights file that is missing or holds no state dict (read once per
    file); and whatever a registered backbone's own ``check_args`` hook reports.
    """
    if name not in BACKBONES and not timm.is_model(name):
        return [_unknown_backbone(name)]
    if isinstance(pretrained, str):
        if not os.path.isfile(pretrained):
            return [f"pretrained weights file {pretrained!r} not found; give the path of a "
                    f"state dict saved from timm's {name!r}, true (download) or false"]
        st = os.stat(pretrained)
        problem = _weights_file_problem(pretrained, os.path.abspath(pretrained), st.st_mtime_ns,
                                        st.st_size)
        if problem:
            return [problem]
    check = getattr(BACKBONES.get(name), "check_args", None) if name in BACKBONES else None
    return list(check(pretrained, list(out_indices))) if check is not None else []


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
