"""What every backend provides: model facts (ModelInfo) and `infer(slot, n)` on ring slots.

Owns the backend protocol and the model facts shared by all backends; it never imports a concrete
backend (they are found through `pipeline.backends.BACKENDS`, by the config's `backend`).

Backends never allocate per call: inputs and outputs live in the preprocess ring's slots, keyed by
tensor name, and `infer` reads rows 0..n-1 of the slot's input and writes the same rows of its
outputs.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from pipeline.config import ModelConfig
    from pipeline.slots import Slot

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model cannot be found or loaded, or does not fit what the config says about it."""


class ModelNotBuilt(ModelLoadError):
    """The model needs a build step (a TensorRT engine) that was not allowed here: `build_engine`
    is off, or the caller (`validate`) never builds."""


class BackendUnavailable(RuntimeError):
    """`infer` could not run this batch now, but the model may come back by itself (a model server
    that is down, restarting or too slow). The inference stage drops the batch's frames (counted as
    `model_unavailable`), marks the model lane unavailable and carries on; any other exception from
    `infer` is a bug or a broken model and ends the run."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output: its name, one batch row's shape, and its dtype."""

    name: str
    shape: tuple[int, ...]  # one batch row: the full shape without the leading batch axis
    dtype: np.dtype


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a loaded model is: its file, input and output tensors, the batches it runs, class names
    and stride.

    Batches: `max_batch` is the largest batch the model runs (None: no limit from the model) and
    `min_batch` the smallest. `min_batch` None means "the same as max_batch": an ONNX export with a
    numeric batch dimension runs exactly that batch (`fixed_batch`), while a TensorRT engine's
    profile (e.g. 1..8) runs any batch in its range.
    """

    path: Path
    input: TensorSpec  # shape (3, H, W)
    outputs: tuple[TensorSpec, ...]
    max_batch: int | None
    class_names: dict[int, str]
    stride: int | None
    min_batch: int | None = None

    @property
    def input_hw(self) -> tuple[int, int]:
        """The model input's (height, width)."""
        return self.input.shape[1], self.input.shape[2]

    @property
    def fixed_batch(self) -> int | None:
        """The one batch the model runs; None when it runs several (dynamic, or a profile range)."""
        if self.max_batch is None or (self.min_batch is not None and self.min_batch != self.max_batch):
            return None
        return self.max_batch

    def batch_text(self) -> str:
        """The batches it runs, for messages: `dynamic`, `fixed 4` or `profile 1..8`."""
        if self.max_batch is None:
            return "dynamic"
        fixed = self.fixed_batch
        return f"fixed {fixed}" if fixed is not None else f"profile {self.min_batch}..{self.max_batch}"

    def batch_problem(self, batch: int) -> str | None:
        """Why the model cannot run batches of `batch` frames (None when it can), for the config's `batch` key."""
        fixed = self.fixed_batch
        if fixed is not None and batch != fixed:
            return (f"model {self.path.name} has a fixed batch of {fixed}, got batch: {batch} "
                    f"(set batch: {fixed}, or export the model with a dynamic batch)")
        if fixed is None and self.max_batch is not None:
            lo = self.min_batch if self.min_batch is not None else 1
            if not lo <= batch <= self.max_batch:
                return (f"model {self.path.name} takes batches {lo}..{self.max_batch} (its engine's profile), got "
                        f"batch: {batch} (set batch within it, or rebuild the engine: build-engine --max-batch {batch})")
        return None



class Backend(Protocol):
    """An inference engine bound to one model. Implementations are registered by the model
    config's `backend` in `pipeline.backends.BACKENDS`."""

    info: ModelInfo

    @classmethod
    def from_config(cls, config: ModelConfig, *, intra_op_threads: int | None = None) -> Backend:
        """Loads the model a `models[]` entry describes.

        Args:
            config: the model's validated config.
            intra_op_threads: CPU threads per inference call, overriding the config's.

        Returns:
            The loaded backend. Raises ModelLoadError saying what to change.
        """
        ...

    def infer(self, slot: Slot, n: int) -> None:
        """Runs rows 0..n-1 of `slot`'s inputs into the same rows of its outputs."""

    def close(self) -> None:
        """Frees what the backend holds (device memory, sessions); called once, after the run."""


def missing_model_message(path: Path) -> str:
    """The ModelLoadError text for a model file that is not there: the ways to fix it."""
    return (
        f"model file not found: {path}. Put the ONNX model at that path, fix the model's 'path' in the "
        f"config, or set VIGIL_SHARED to the folder that holds models/ (default ../shared; see README, "
        f"'Models')."
    )


def parse_ultralytics_metadata(meta: dict[str, str]) -> tuple[dict[int, str], tuple[int, int] | None, int | None]:
    """Class names, input size (h, w) and stride from Ultralytics' ONNX metadata, where present.
    Raises ModelLoadError naming the key when a value is there but unreadable."""
    names: dict[int, str] = {}
    imgsz: tuple[int, int] | None = None
    stride: int | None = None
    key = ""
    try:
        if "names" in meta:
            key = "names"
            raw = ast.literal_eval(meta[key])
            if isinstance(raw, dict):
                names = {int(k): str(v) for k, v in raw.items()}
            elif isinstance(raw, list):
                names = dict(enumerate(map(str, raw)))
            else:
                raise TypeError(f"expected a dict or list of class names, got {type(raw).__name__}")
        if "imgsz" in meta:
            key = "imgsz"
            raw = ast.literal_eval(meta[key])
            if isinstance(raw, int):
                imgsz = (raw, raw)
            elif isinstance(raw, (list, tuple)) and len(raw) == 2:
                imgsz = (int(raw[0]), int(raw[1]))
            else:
                raise TypeError(f"expected an int or [h, w], got {raw!r}")
        if "stride" in meta:
            key = "stride"
            raw = ast.literal_eval(meta[key])
            stride = int(max(raw)) if isinstance(raw, (list, tuple)) else int(raw)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise ModelLoadError(
            f"unreadable Ultralytics metadata {key!r} = {meta[key][:80]!r}: {exc} "
            f"(re-export the model, or fix that metadata entry)"
        ) from None
    return names, imgsz, stride


def one_image_input(path: Path, names: Sequence[str]) -> None:
    """Raises ModelLoadError unless the model has exactly one input (the image).

    Args:
        path: the model file, for the message.
        names: the model's input names.
    """
    if len(names) != 1:
        raise ModelLoadError(f"{path.name}: expected one image input, got {len(names)}: {list(names)}")


def model_info(path: Path, image_input: tuple[str, Sequence[int | str], np.dtype | None, str],
               metadata: Mapping[str, str], *, input_size: tuple[int, int] | None = None,
               class_names: dict[int, str] | None = None) -> ModelInfo:
    """The ModelInfo of an ONNX detector, the same whichever backend reads it: the image input
    checked (NCHW, 3 channels, float), its height and width from the model, else `input_size`, else
    the Ultralytics `imgsz` metadata; class names from the config, else the metadata.

    Args:
        path: the model file.
        image_input: (name, shape with symbolic dims as strings, numpy dtype or None when not a
            float type, the backend's type name for messages).
        metadata: the ONNX file's metadata_props (key -> string value).
        input_size: [H, W] from the config, for models with a dynamic image size.
        class_names: the config's override of the model's class names.

    Returns:
        The model facts, with no outputs yet: the backend probes those and sets them with
        `dataclasses.replace`. Raises ModelLoadError saying what does not fit.
    """
    name, shape, dtype, type_name = image_input
    if len(shape) != 4:
        raise ModelLoadError(f"{path.name}: expected a 4D NCHW image input, got {name} {list(shape)}")
    if dtype is None:
        raise ModelLoadError(f"{path.name}: expected a float input, got {name} of {type_name}")
    batch_dim, channels, h_dim, w_dim = shape
    if channels != 3:
        raise ModelLoadError(f"{path.name}: expected 3 input channels, got {list(shape)}")
    meta_names, meta_imgsz, stride = parse_ultralytics_metadata(dict(metadata))
    if isinstance(h_dim, int) and isinstance(w_dim, int):
        model_hw = (h_dim, w_dim)
        if input_size is not None and tuple(input_size) != model_hw:
            raise ModelLoadError(
                f"{path.name}: input_size {list(input_size)} does not fit the model's fixed input "
                f"{list(model_hw)} (remove input_size or export the model at that size)"
            )
    elif input_size is not None:
        model_hw = (int(input_size[0]), int(input_size[1]))
    elif meta_imgsz is not None:
        model_hw = meta_imgsz
    else:
        raise ModelLoadError(
            f"{path.name}: input height/width are dynamic and the model has no 'imgsz' metadata: "
            f"set input_size: [H, W] for this model in the config"
        )
    names = class_names or meta_names
    if not names:
        log.warning("%s has no class names in its metadata and none in the config: using numbers", path.name)
    max_batch = batch_dim if isinstance(batch_dim, int) else None
    return ModelInfo(path, TensorSpec(name, (3, *model_hw), np.dtype(dtype)), (), max_batch, names, stride)
