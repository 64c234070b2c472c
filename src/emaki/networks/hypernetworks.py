"""Hypernetworks: A1111 and NovelAI `.pt` files, their modules and the residual MLP (specs §1).

A hypernetwork holds, per context width (768 for the text context of SD 1.x cross-attention,
320/640/1280 for the self-attention widths), a pair of modules transforming the context fed to
`to_k` and `to_v`. Each module computes

    y = x + mlp(x) * strength          (specs §1.4; strength is 1 while training)

where `mlp` is built from the file's `layer_structure`, activation, LayerNorm and dropout
settings exactly as A1111 builds it (§1.3), so A1111 state dicts load without renaming.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import numbers
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from emaki.errors import ModelLoadError, ParamsError
from emaki.files import atomic_write
from emaki.models.hashes import sha256_file
from emaki.models.safe_load import load_pickle
from emaki.networks.embeddings import PROVENANCE_KEY, read_provenance

DEFAULT_LAYER_STRUCTURE = (1.0, 2.0, 1.0)
DEFAULT_SIZES = (768, 320, 640, 1280)
WEIGHT_INITIALIZATIONS = ("Normal", "KaimingUniform", "KaimingNormal", "XavierUniform", "XavierNormal")


def _activation_classes() -> dict[str, type[nn.Module]]:
    """Activation names A1111 accepts (specs §1.3): the named ones, then every class of
    `torch.nn.modules.activation` by lower-cased name. `swish` is Hardswish, not SiLU."""
    named: dict[str, type[nn.Module]] = {
        "linear": nn.Identity,
        "relu": nn.ReLU,
        "leakyrelu": nn.LeakyReLU,
        "elu": nn.ELU,
        "swish": nn.Hardswish,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
    }
    module = torch.nn.modules.activation
    for class_name, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ == module.__name__ and issubclass(cls, nn.Module):
            named[class_name.lower()] = cls
    return named


ACTIVATIONS: dict[str, type[nn.Module]] = _activation_classes()


def dropout_structure_for(layer_structure: Sequence[float], use_dropout: bool,
                          last_layer_dropout: bool) -> list[float]:
    """The dropout structure A1111 derives when a file has none (specs §1.2).

    >>> dropout_structure_for([1, 2, 2, 1], True, False)
    [0, 0.3, 0, 0]
    >>> dropout_structure_for([1, 2, 2, 1], True, True)
    [0, 0.3, 0.3, 0]
    >>> dropout_structure_for([1, 2, 1], False, False)
    [0, 0, 0]
    """
    n = len(layer_structure)
    if not use_dropout:
        return [0] * n
    return [0] + [0.3] * (n - 3) + [0.3 if last_layer_dropout else 0] + [0]


_OLD_NAMES = {"linear1.": "linear.0.", "linear2.": "linear.1."}


def _rename_old_keys(state: Mapping[str, Any]) -> dict[str, Any]:
    """`linear1.*` → `linear.0.*`, `linear2.*` → `linear.1.*` (NovelAI / early A1111 files)."""
    out = {}
    for key, value in state.items():
        for old, new in _OLD_NAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


class HypernetworkModule(nn.Module):
    """`x + mlp(x) * multiplier`, the MLP laid out as A1111's `HypernetworkModule` (specs §1.3).

    For `i` in `range(len(layer_structure) - 1)`: Linear; the activation (unless none/linear,
    or the last layer without `activate_output`); LayerNorm if `add_layer_norm` (after every
    Linear, the last included); Dropout if `dropout_structure[i + 1] > 0`. Parameters are
    `linear.<index>.weight|bias`.
    """

    def __init__(
        self,
        dim: int,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        *,
        layer_structure: Sequence[float] = DEFAULT_LAYER_STRUCTURE,
        activation_func: str | None = None,
        weight_initialization: str = "Normal",
        add_layer_norm: bool = False,
        activate_output: bool = False,
        dropout_structure: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.multiplier = 1.0
        if len(layer_structure) < 2 or layer_structure[0] != 1 or layer_structure[-1] != 1:
            raise ParamsError(
                f"hypernetwork layer_structure must start and end with 1; got {list(layer_structure)}"
            )
        if activation_func not in (None, "linear") and activation_func not in ACTIVATIONS:
            raise ParamsError(
                f"hypernetwork activation {activation_func!r} is unknown; expected one of "
                f"{', '.join(sorted(ACTIVATIONS))}"
            )
        if dropout_structure is not None and len(dropout_structure) != len(layer_structure):
            raise ParamsError(
                f"hypernetwork dropout_structure {list(dropout_structure)} must have as many entries "
                f"as layer_structure {list(layer_structure)}"
            )
        layers: list[nn.Module] = []
        last = len(layer_structure) - 2
        for i in range(len(layer_structure) - 1):
            width_out = int(dim * layer_structure[i + 1])
            layers.append(nn.Linear(int(dim * layer_structure[i]), width_out))
            if activation_func not in (None, "linear") and (i < last or activate_output):
                try:
                    layers.append(ACTIVATIONS[str(activation_func)]())
                except TypeError:
                    raise ParamsError(
                        f"hypernetwork activation {activation_func!r} needs arguments; A1111 cannot build it either"
                    ) from None
            if add_layer_norm:
                layers.append(nn.LayerNorm(width_out))
            if dropout_structure is not None and dropout_structure[i + 1] > 0:
                if not 0 < dropout_structure[i + 1] < 1:
                    raise ParamsError(f"hypernetwork dropout {dropout_structure[i + 1]} is outside (0, 1)")
                layers.append(nn.Dropout(p=float(dropout_structure[i + 1])))
        self.linear = nn.Sequential(*layers)
        if state_dict is not None:
            self.load_state_dict(_rename_old_keys(state_dict))
        else:
            self._initialize(weight_initialization, activation_func, generator)
        self.eval()

    def _initialize(self, how: str, activation_func: str | None, generator: torch.Generator | None) -> None:
        """New-module initialisation (specs §1.3): biases 0; `Normal` is N(0, 0.01) for the
        Linear *and* LayerNorm weights."""
        if how not in WEIGHT_INITIALIZATIONS:
            raise ParamsError(f"weight initialization {how!r}: expected one of {', '.join(WEIGHT_INITIALIZATIONS)}")
        nonlinearity: Literal["leaky_relu", "relu"] = "leaky_relu" if activation_func == "leakyrelu" else "relu"
        with torch.no_grad():
            for layer in self.linear:
                if not isinstance(layer, nn.Linear | nn.LayerNorm):
                    continue
                if how == "Normal":
                    layer.weight.normal_(0.0, 0.01, generator=generator)
                elif isinstance(layer, nn.Linear):
                    if how == "XavierUniform":
                        nn.init.xavier_uniform_(layer.weight, generator=generator)
                    elif how == "XavierNormal":
                        nn.init.xavier_normal_(layer.weight, generator=generator)
                    elif how == "KaimingUniform":
                        nn.init.kaiming_uniform_(layer.weight, nonlinearity=nonlinearity, generator=generator)
                    else:
                        nn.init.kaiming_normal_(layer.weight, nonlinearity=nonlinearity, generator=generator)
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x + mlp(x) * multiplier` (multiplier forced to 1 in training mode), in the
        module's dtype, returned in `x`'s dtype."""
        return self.apply_with_strength(x, 1.0 if self.training else self.multiplier)

    def apply_with_strength(self, x: torch.Tensor, strength: float) -> torch.Tensor:
        """`x + mlp(x) * strength`, computed in the module's dtype, returned in `x`'s dtype."""
        dtype = next(self.parameters()).dtype
        h = x.to(dtype)
        return (h + self.linear(h) * strength).to(x.dtype)


@dataclass
class Hypernetwork:
    """A loaded hypernetwork: its module pairs by context width and A1111's metadata (§1.1)."""

    name: str
    layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]]
    layer_structure: list[float] = field(default_factory=lambda: list(DEFAULT_LAYER_STRUCTURE))
    activation_func: str | None = None
    weight_initialization: str = "Normal"
    is_layer_norm: bool = False
    use_dropout: bool = False
    activate_output: bool = False
    dropout_structure: list[float] = field(default_factory=lambda: [0, 0, 0])
    last_layer_dropout: bool = False
    step: int = 0
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    optional_info: str | None = None
    optimizer_name: str | None = None  # what trained it (A1111 keeps it in the `.optim` sidecar)
    provenance: dict[str, Any] | None = None  # how emaki trained it (`emaki_provenance`), if it did
    path: Path | None = None
    sha256: str | None = None

    @property
    def shorthash(self) -> str | None:
        """A1111's hypernetwork shorthash: sha256 of the file, first 10 hex (specs §6)."""
        return self.sha256[:10] if self.sha256 else None

    @property
    def sizes(self) -> list[int]:
        return sorted(self.layers)

    def modules(self) -> Iterable[HypernetworkModule]:
        for k, v in self.layers.values():
            yield k
            yield v

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Hypernetwork:
        for module in self.modules():
            module.to(device=device, dtype=dtype)
        return self

    @classmethod
    def create(
        cls,
        name: str,
        sizes: Iterable[int] = DEFAULT_SIZES,
        *,
        layer_structure: Sequence[float] = DEFAULT_LAYER_STRUCTURE,
        activation_func: str | None = None,
        weight_initialization: str = "Normal",
        add_layer_norm: bool = False,
        use_dropout: bool = False,
        dropout_structure: Sequence[float] | None = None,
        last_layer_dropout: bool = False,
        activate_output: bool = False,
        generator: torch.Generator | None = None,
    ) -> Hypernetwork:
        """A new hypernetwork with freshly initialised modules, as A1111's "Create" does."""
        structure = [float(x) for x in layer_structure]
        dropout = (list(dropout_structure) if dropout_structure is not None
                   else dropout_structure_for(structure, use_dropout, last_layer_dropout))

        def module(size: int) -> HypernetworkModule:
            return HypernetworkModule(
                size, layer_structure=structure, activation_func=activation_func,
                weight_initialization=weight_initialization, add_layer_norm=add_layer_norm,
                activate_output=activate_output, dropout_structure=dropout, generator=generator)

        layers = {int(size): (module(int(size)), module(int(size))) for size in sizes}
        return cls(name=name, layers=layers, layer_structure=structure, activation_func=activation_func,
                   weight_initialization=weight_initialization, is_layer_norm=add_layer_norm,
                   use_dropout=any(dropout), activate_output=activate_output, dropout_structure=dropout,
                   last_layer_dropout=last_layer_dropout)


def _short(value: Any) -> str:
    return reprlib.repr(value)


def _numbers(value: Any, field: str, source: str) -> list[float]:
    """The file's `field` as a list of finite numbers, or a `ModelLoadError` naming it."""
    if not isinstance(value, list | tuple) or not all(isinstance(x, numbers.Real) for x in value):
        raise ModelLoadError(f"{source}: {field} must be a list of numbers; the file has {_short(value)}")
    found = [float(x) for x in value]
    if not all(math.isfinite(x) for x in found):
        raise ModelLoadError(f"{source}: {field} must hold finite numbers; the file has {_short(value)}")
    return found


def _flag(data: Mapping[Any, Any], field: str, default: bool, source: str) -> bool:
    value = data.get(field, default)
    if value is None:
        return default
    if not isinstance(value, numbers.Real):
        raise ModelLoadError(f"{source}: {field} must be true or false; the file has {_short(value)}")
    return bool(value)


def _optional_text(data: Mapping[Any, Any], field: str) -> str | None:
    """A descriptive field (checkpoint name, notes): text, else left out (it never changes the output)."""
    value = data.get(field)
    return value if isinstance(value, str) else None


def _step(value: Any, source: str) -> int:
    if value is None:
        return 0
    if isinstance(value, numbers.Real) and math.isfinite(float(value)):
        return int(float(value))
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ModelLoadError(f"{source}: step must be a whole number; the file has {_short(value)}")


def implied_parameters(dim: int, layer_structure: Sequence[float], add_layer_norm: bool) -> int:
    """How many numbers a `HypernetworkModule` of this shape holds (Linear weights and biases,
    LayerNorm weights and biases), computed without building it.

    >>> implied_parameters(768, [1, 2, 1], False)  # 768·1536 + 1536 + 1536·768 + 768
    2361600
    """
    widths = [int(dim * x) for x in layer_structure]
    count = 0
    for width_in, width_out in itertools.pairwise(widths):
        count += width_in * width_out + width_out + (2 * width_out if add_layer_norm else 0)
    return count


def _check_size(size: int, pair: Sequence[Mapping[str, Any]], layer_structure: list[float], add_layer_norm: bool,
                source: str) -> None:
    """Refuse a layer whose structure implies more numbers than its state dicts hold, before
    anything is allocated (a 1 KB file could otherwise ask for gigabytes)."""
    widths = [int(size * x) for x in layer_structure]
    if min(widths) < 1:
        raise ModelLoadError(f"{source}: layer {size}: layer_structure {layer_structure} gives a layer "
                             f"{min(widths)} wide; every layer needs a width of at least 1")
    implied = implied_parameters(size, layer_structure, add_layer_norm)
    for state in pair:
        held = sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor))
        if implied > held:
            raise ModelLoadError(f"{source}: layer {size} does not fit layer_structure {layer_structure}: it "
                                 f"implies {implied:,} parameters per module; the file holds {held:,}")


def hypernetwork_from_state(data: Mapping[Any, Any], name: str, *, source: str = "hypernetwork") -> Hypernetwork:
    """Build a `Hypernetwork` from the dict saved in a `.pt` file, with A1111's loader
    defaults for missing keys (specs §1.2). Only int keys are layers. Every field is checked
    (a bad one is a `ModelLoadError` naming it) before any module is built."""
    stored_structure = data.get("layer_structure")
    if stored_structure is None or (isinstance(stored_structure, list | tuple) and not stored_structure):
        stored_structure = DEFAULT_LAYER_STRUCTURE
    layer_structure = _numbers(stored_structure, "layer_structure", source)
    activation_func = data.get("activation_func")
    if activation_func is not None and not isinstance(activation_func, str):
        raise ModelLoadError(f"{source}: activation_func must be a name; the file has {_short(activation_func)}")
    is_layer_norm = _flag(data, "is_layer_norm", False, source)
    weight_initialization = _optional_text(data, "weight_initialization") or "Normal"
    last_layer_dropout = _flag(data, "last_layer_dropout", False, source)
    if data.get("dropout_structure") is not None:
        dropout_structure = _numbers(data["dropout_structure"], "dropout_structure", source)
        use_dropout = any(dropout_structure)
    else:
        use_dropout = _flag(data, "use_dropout", False, source)
        dropout_structure = dropout_structure_for(layer_structure, use_dropout, last_layer_dropout)
    activate_output = _flag(data, "activate_output", True, source)
    step = _step(data.get("step"), source)
    layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]] = {}
    for size, pair in data.items():
        if type(size) is not int:
            continue
        if not isinstance(pair, list | tuple) or len(pair) != 2 or not all(isinstance(p, Mapping) for p in pair):
            raise ModelLoadError(f"{source}: layer {size} is not a (key, value) pair of state dicts")
        _check_size(size, pair, layer_structure, is_layer_norm, source)
        try:
            layers[size] = tuple(  # type: ignore[assignment]
                HypernetworkModule(size, state, layer_structure=layer_structure, activation_func=activation_func,
                                   add_layer_norm=is_layer_norm, activate_output=activate_output,
                                   dropout_structure=dropout_structure)
                for state in pair
            )
        except ParamsError as e:
            raise ModelLoadError(f"{source}: {e}") from None
        except (RuntimeError, TypeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"{source}: layer {size} does not fit layer_structure {layer_structure}, "
                f"activation {activation_func!r}, layer norm {is_layer_norm} ({first})"
            ) from None
    if not layers:
        raise ModelLoadError(f"{source}: not a hypernetwork (no layers keyed by width such as 768 or 320)")
    stored_name = data.get("name")
    return Hypernetwork(
        name=stored_name if isinstance(stored_name, str) and stored_name else name,
        layers=layers,
        layer_structure=layer_structure,
        activation_func=activation_func,
        weight_initialization=weight_initialization,
        is_layer_norm=is_layer_norm,
        use_dropout=use_dropout,
        activate_output=activate_output,
        dropout_structure=dropout_structure,
        last_layer_dropout=last_layer_dropout,
        step=step,
        sd_checkpoint=_optional_text(data, "sd_checkpoint"),
        sd_checkpoint_name=_optional_text(data, "sd_checkpoint_name"),
        optional_info=_optional_text(data, "optional_info"),
        provenance=read_provenance(data.get(PROVENANCE_KEY)),
    )


def load_hypernetwork(path: str | Path) -> Hypernetwork:
    """A hypernetwork `.pt` (A1111 or NovelAI), loaded with restricted unpickling (§1.1-1.2, §1.6)."""
    path = Path(path)
    data = load_pickle(path)
    if not isinstance(data, Mapping):
        raise ModelLoadError(f"{path}: not a hypernetwork (expected a dict, found {type(data).__name__})")
    hypernetwork = hypernetwork_from_state(data, path.stem, source=str(path))
    hypernetwork.path = path
    hypernetwork.sha256 = sha256_file(path)
    return hypernetwork


def hypernetwork_state(hn: Hypernetwork) -> dict[Any, Any]:
    """The dict A1111 v1.10.1 writes (specs §1.1): plain containers and tensors only."""
    state: dict[Any, Any] = {}
    for size, (k, v) in sorted(hn.layers.items()):
        state[int(size)] = (_plain_state(k), _plain_state(v))
    state.update({
        "step": int(hn.step),
        "name": hn.name,
        "layer_structure": list(hn.layer_structure),
        "activation_func": hn.activation_func,
        "is_layer_norm": bool(hn.is_layer_norm),
        "weight_initialization": hn.weight_initialization,
        "sd_checkpoint": hn.sd_checkpoint,
        "sd_checkpoint_name": hn.sd_checkpoint_name,
        "activate_output": bool(hn.activate_output),
        "use_dropout": bool(hn.use_dropout),
        "dropout_structure": list(hn.dropout_structure),
        "last_layer_dropout": bool(hn.dropout_structure[-2] != 0) if len(hn.dropout_structure) >= 2 else False,
        "optional_info": hn.optional_info,
    })
    if hn.provenance is not None:
        state[PROVENANCE_KEY] = json.dumps(hn.provenance, sort_keys=True)
    return state


def _plain_state(module: HypernetworkModule) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in module.state_dict().items()}


def save_hypernetwork(hn: Hypernetwork, path: str | Path) -> Path:
    """Write `hn` as an A1111 hypernetwork `.pt` (atomically: temp file, then rename)."""
    path = Path(path)
    state = hypernetwork_state(hn)
    with atomic_write(path) as tmp:
        torch.save(state, tmp)
    return path

