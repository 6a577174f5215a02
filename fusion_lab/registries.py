"""Name -> component registries, one per kind (after timm's and fvcore's registries).

A registry is a dict and a decorator::

    from fusion_lab.registries import FUSIONS

    @FUSIONS.register("my_fusion")
    class MyFusion(nn.Module):
        \"\"\"One line that `fusionlab list` shows.\"\"\"

Contracts per kind (the assembler wires components by shape, never by config):

- BACKBONES: ``cls(pretrained=..., out_indices=...)`` (keyword arguments; the registered
  name picks the class, so it is not passed) -> module returning a list of maps, low
  level first, with ``.out_channels`` (list[int]) and ``.reductions`` (list[int]).
  Optional classmethod ``check_args(pretrained, out_indices) -> list[str]``: problems found
  without building it (e.g. stages it does not have), reported at validation.
  Optional ``.param_stages()`` -> its parameters by stage, low first, each parameter
  once: ``train.backbone_high_lr_stages: k`` trains the last k stages at ``lr_new``.
  Without it, each direct child module that holds parameters is a stage.
  Any other name is a timm model (``fusion_lab.models.backbones.TimmBackbone``), whose
  stages are its ``feature_info`` levels (tapped or not, as far as the model is built):
  level i's stage is its module plus the modules before it that belong to no earlier
  level; for ResNet50 the last stage is ``layer4`` (S5's stage), the ones before it
  ``conv1``..``layer3``. ``small_cnn``: [stem + stages.0], [stages.1], [stages.2].
  ``pretrained`` reaches the class only as a bool; a weights name or file is loaded
  strictly into the built module's state dict by the assembler.
- FUSIONS: ``cls(in_channels: list[int], out_channels: int, **kw)`` -> module mapping the
  list of backbone maps (low level first) to a list of fused maps (low level first),
  with ``.out_channels`` (list[int]).
- ATTENTIONS: ``cls(channels: list[int], **kw)`` -> module mapping the fused maps to
  ``(attended_maps, masks)``, masks a dict of name -> list of tensors (one per level);
  class attribute ``masks``: the names of the masks it returns (``("sa",)`` for spatial
  masks, which ``fusionlab viz`` draws; default none).
- HEADS: ``cls(channels: list[int], num_classes: int, **kw)`` -> module mapping
  ``(fused_maps, attended_maps)`` to a dict of head name -> logits.
- FUSIONS, ATTENTIONS, HEADS may define a static ``check_args(**kw) -> list[str]`` (kw:
  the study's arguments): bad values, one line each, reported when a study is validated.
- PRESETS: plain dicts of model-config fields, registered with ``PRESETS.add``; the
  catalogue names the preset of a config that names none with ``PRESETS.set_default``
  (a plugin may name another: the last declaration wins).
- DATASETS: ``cls(root, **options)``; see ``fusion_lab.data.source`` (including the
  ``check_options`` hook that validation calls, and ``reference_recipe``, the training
  recipe a dataset names; see ``fusion_lab.config.recipes``).
- LAUNCHERS: see ``fusion_lab.orchestrate.launchers`` (which registers the built-in ones
  when imported): ``cls(**options)`` with ``OPTIONS`` (name ->
  (default, help)) and ``launch(job) -> exit code``; where each pending run's training
  executes (this process, a SLURM job array, a Ray cluster).

``**kw`` above stands for the component's own keyword arguments (a study's
``fusion_args``, ``attention_args``, ``head_args``): name them in the signature rather
than taking ``**kwargs``, so that validation can reject a misspelt argument before
anything trains (a class that takes ``**kwargs`` gets no such check).

Lookup of an unknown name raises ``UnknownComponentError`` naming the closest matches and
every valid name. A component may name its paper (``register(name, paper="Tan et al., CVPR
2020")``), which ``fusionlab list`` shows beside its description. A registry may resolve a
whole family of names through one prefix (``add_prefix``: ``timm:se``, ``timm:cbam``, ...
come from one adapter that the catalogue registers). Third-party components load from the ``fusion_lab.components`` entry-point
group and from plugin modules or files a study names (``load_plugins``).
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fusion_lab.errors import FusionLabError, UnknownComponentError

ENTRY_POINT_GROUP = "fusion_lab.components"


def _first_line(doc: str | None) -> str:
    for line in (doc or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def _same_definition(old: Any, new: Any) -> bool:
    """Two objects defined by the same name in the same source file (a plugin file imported
    again under another module name): the same component, not a clash."""
    def where(obj: Any) -> tuple[str, str | None]:
        module = sys.modules.get(getattr(obj, "__module__", ""), None)
        path = getattr(module, "__file__", None)
        return getattr(obj, "__qualname__", ""), str(Path(path).resolve()) if path else None

    return where(old)[1] is not None and where(old) == where(new)


class Registry:
    """Holds the components of one kind by name.

    Args:
        kind: what the registry holds, used in messages ("fusion", "attention", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._docs: dict[str, str] = {}
        self._papers: dict[str, str] = {}
        # prefix -> (names: () -> {full name: None if usable, else why not}, resolve)
        self._prefixes: dict[str, tuple[Callable[[], dict[str, str | None]],
                                         Callable[[str], Any]]] = {}
        self.default: str | None = None  # the name used where a config names none

    def register(self, name: str, description: str | None = None,
                 paper: str | None = None) -> Callable[[Any], Any]:
        """Decorator registering a class or function under ``name`` (``paper``: its source,
        "Author et al., VENUE YEAR", shown by ``fusionlab list``)."""

        def deco(obj: Any) -> Any:
            self.add(name, obj, description, paper)
            return obj

        return deco

    def add(self, name: str, obj: Any, description: str | None = None,
            paper: str | None = None) -> None:
        """Register ``obj`` under ``name``; a duplicate name is an error."""
        if not isinstance(name, str) or not name:
            raise FusionLabError(f"a {self.kind} must be registered under a non-empty name")
        if name in self._items:
            if self._items[name] is obj:
                return  # the same module imported twice (e.g. plugin file + entry point)
            if _same_definition(self._items[name], obj):  # one plugin file imported again
                self._items[name] = obj
                return
            old = self._items[name]
            where = getattr(old, "__module__", "?")
            raise FusionLabError(
                f"{self.kind} '{name}' is already registered (by {where}); "
                f"choose another name for {getattr(obj, '__qualname__', obj)!s}"
            )
        self._items[name] = obj
        if description is None:
            description = _first_line(getattr(obj, "__doc__", None)) if not isinstance(
                obj, dict
            ) else ""
        self._docs[name] = description
        if paper:
            self._papers[name] = paper

    def add_prefix(self, prefix: str, names: Callable[[], dict[str, str | None]],
                   resolve: Callable[[str], Any]) -> None:
        """Resolve every name starting with ``prefix`` (e.g. "timm:") through one adapter.

        Args:
            names: the family's full names, each mapped to None when it can be used or to
                one line saying why not (listed, refused with that line); asked each time,
                so a newer library's names appear without a change here.
            resolve: full name -> the component (the same object for the same name); its
                ``paper`` attribute and first docstring line are what ``list`` shows.
        """
        self._prefixes[prefix] = (names, resolve)

    def _family(self) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for names, _ in self._prefixes.values():
            found.update(names())
        return found

    def _resolver(self, name: Any) -> Callable[[str], Any] | None:
        if not isinstance(name, str):
            return None
        for prefix, (names, resolve) in self._prefixes.items():
            if name.startswith(prefix) and name in (found := names()) and found[name] is None:
                return resolve
        return None

    def set_default(self, name: str) -> None:
        """Declare the registered ``name`` the one a config gets when it names none."""
        if name not in self._items:
            raise FusionLabError(self.unknown_message(name) + f" (declared the default {self.kind})")
        self.default = name

    def get(self, name: str) -> Any:
        """The component registered as ``name``."""
        if name in self._items:
            return self._items[name]
        resolve = self._resolver(name)
        if resolve is None:
            raise UnknownComponentError(self.unknown_message(name))
        return resolve(name)

    def unknown_message(self, name: Any) -> str:
        why = self._family().get(name) if isinstance(name, str) and self._prefixes else None
        if why:
            return f"{self.kind} {name!r} cannot be used: {why}"
        valid_names = self.list()
        close = difflib.get_close_matches(str(name), valid_names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        valid = ", ".join(valid_names) or "(none registered)"
        return f"unknown {self.kind} {name!r}: {hint}valid names: {valid}"

    def describe(self, name: str) -> str:
        if name not in self._docs and self._resolver(name) is not None:
            return _first_line(getattr(self.get(name), "__doc__", None))
        return self._docs.get(name, "")

    def paper(self, name: str) -> str:
        """The paper a component comes from ("Author et al., VENUE YEAR"), or ""."""
        if name not in self._items and self._resolver(name) is not None:
            return getattr(self.get(name), "paper", "") or ""
        return self._papers.get(name, "")

    def refused(self) -> dict[str, str]:
        """Names a prefix family knows but cannot use, each with the reason (for ``list``)."""
        return {n: why for n, why in sorted(self._family().items()) if why}

    def list(self, pattern: str | None = None) -> list[str]:
        """Usable names, sorted (prefix families' included), filtered by a shell-style
        wildcard."""
        family = [n for n, why in self._family().items() if why is None] if self._prefixes else []
        names = sorted({*self._items, *family})
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def in_order(self) -> list[str]:
        """Registered names in the order they were registered (the catalogue's own order)."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items or self._resolver(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.list())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.list()})"


BACKBONES = Registry("backbone")
FUSIONS = Registry("fusion")
ATTENTIONS = Registry("attention")
HEADS = Registry("head")
PRESETS = Registry("preset")
DATASETS = Registry("dataset")
LAUNCHERS = Registry("launcher")

KINDS: dict[str, Registry] = {
    "backbones": BACKBONES,
    "fusions": FUSIONS,
    "attentions": ATTENTIONS,
    "heads": HEADS,
    "presets": PRESETS,
    "datasets": DATASETS,
    "launchers": LAUNCHERS,
}

_loaded_builtin = False
_loaded_entry_points = False
_loaded_plugins: set[str] = set()


def load_builtin() -> None:
    """Import the catalogue (fusion_lab.registry) and the entry-point plugins, once."""
    global _loaded_builtin, _loaded_entry_points
    if not _loaded_builtin:
        importlib.import_module("fusion_lab.registry")
        _loaded_builtin = True
    if not _loaded_entry_points:
        _loaded_entry_points = True

        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except FusionLabError:
                raise
            except Exception as e:  # a broken third-party package must say which
                raise FusionLabError(
                    f"plugin entry point {ep.name!r} ({ep.value}) failed to load: {e}"
                ) from e


def load_plugins(plugins: list[str], base_dir: str | Path | None = None) -> None:
    """Import plugin modules (dotted names) or files (paths ending in .py).

    Relative file paths are resolved against ``base_dir`` (the study file's folder) first,
    then the current directory.
    """
    load_builtin()
    for spec in plugins:
        if spec in _loaded_plugins:
            continue
        if spec.endswith(".py") or "/" in spec or "\\" in spec:
            candidates = [Path(spec)]
            if base_dir is not None and not Path(spec).is_absolute():
                candidates.insert(0, Path(base_dir) / spec)
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                looked = ", ".join(str(p) for p in candidates)
                raise FusionLabError(f"plugin file {spec!r} not found (looked in {looked})")
            # Keyed by the resolved file, not the spec: two studies may both name their own
            # `plugins.py`, and one file may be named by two relative paths.
            resolved = path.resolve()
            if str(resolved) in _loaded_plugins:
                continue
            digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
            mod_name = f"fusion_lab_plugin_{path.stem}_{digest}"
            module_spec = importlib.util.spec_from_file_location(mod_name, resolved)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            try:
                module_spec.loader.exec_module(module)
            except FusionLabError:
                raise
            except Exception as e:
                del sys.modules[mod_name]
                raise FusionLabError(f"plugin file {path} failed to import: {e}") from e
            _loaded_plugins.add(str(resolved))
        else:
            try:
                importlib.import_module(spec)
            except ModuleNotFoundError as e:
                raise FusionLabError(
                    f"plugin module {spec!r} not found ({e}); is it installed or on PYTHONPATH?"
                ) from e
            _loaded_plugins.add(spec)
