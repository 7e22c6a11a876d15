"""KerasHub's image encoders as frozen feature extractors: ``--backbone hub:PRESET``.

PRESET is what ``keras_hub.models.Backbone.from_preset`` takes: a preset name
(``dinov2_base``), a Kaggle handle (``kaggle://keras/dinov2/keras/dinov2_base``), a Hugging
Face one (``hf://...``), or a local folder written by ``save_to_preset`` (how weights reach a
machine without network: save the preset on one that has it, copy the folder). The folder
must hold the preset's image converter too (``image_converter.json``): it does the input
scaling, inside the network, so 0-255 RGB goes in as with every backbone.

The embedding of each family is the one its authors use for linear probes (:data:`FAMILIES`).
A preset is read once (its config, not its weights) to know its family, size and width;
``weights="imagenet"`` loads the preset's own weights (their file's SHA-256 keys the cache),
``"none"`` the same architecture randomly initialised.

A preset folder is what is copied from another machine, so it is checked before KerasHub
reads it: every file in it is a regular file (a link to ``/dev/zero`` or a FIFO is refused, never
read), its JSON files are at most a record's bound and read by the guarded reader, and its sizes
are bounded before anything is built (:mod:`.hub_config`): every key of the config known, every
size a whole number within bounds, and the parameters they make (within 20% of KerasHub's count for
every family here, SigLIP's pooling head most of the gap) at most a bound and, as float32, within the
memory this process can have.
Where the preset's weights load, ``model.weights.h5`` must be of a size those parameters can
have (2 to 4 bytes each, plus the file's own overhead; a CLIP or SigLIP preset with its text tower,
at least the vision tower's): a config that claims another network than its weights is refused
before either is built.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import UsageError, WeightsUnavailableError, first_line
from ..io import RECORD_LIMIT, read_json, what_it_is
from .hub_config import Sizes, check_config, estimate_parameters

PREFIX = "hub:"
INSTALL = "pip install -r requirements-hub.txt"
# Hosts a remote preset downloads from: checked in seconds before KerasHub retries for minutes offline.
HOSTS = {"kaggle": "www.kaggle.com", "hf": "huggingface.co"}


@dataclass(kw_only=True, frozen=True)
class Family:
    """How one KerasHub class's output becomes an embedding.

    Attributes:
        pooling: "cls+mean" (the class token, then the mean of the patch tokens, side by side),
            "cls" (the class token) or "pooled" (the encoder's own pooled output).
        widths: the embedding's width in hidden_dims.
        block: the class of its transformer blocks, what ``finetune.py --unfreeze N`` counts.
        source: where its authors say this is the embedding to probe.
    """

    pooling: str
    widths: int
    block: str
    source: str


FAMILIES = {
    "DINOV2Backbone": Family(
        pooling="cls+mean", widths=2, block="DINOV2Layer",
        source="DINOv2 model card: a linear layer on the class token concatenated with the average of the patch "
               "tokens"),
    "DINOV3Backbone": Family(
        pooling="cls+mean", widths=2, block="DINOV3Layer",
        source="DINOv3, as DINOv2: the class token and the mean patch token"),
    "ViTBackbone": Family(
        pooling="cls", widths=1, block="ViTEncoderBlock",
        source="ViT (Dosovitskiy et al., 2021): linear probes on the class token"),
    "CLIPVisionEncoder": Family(
        pooling="cls", widths=1, block="CLIPEncoderLayer",
        source="CLIP (Radford et al., 2021): linear probes on the image encoder's class token"),
    "CLIPBackbone": Family(
        pooling="cls", widths=1, block="CLIPEncoderLayer",
        source="CLIP (Radford et al., 2021): the vision encoder's class token"),
    "SigLIPVisionEncoder": Family(
        pooling="pooled", widths=1, block="SigLIPEncoderLayer",
        source="SigLIP (Zhai et al., 2023): the vision tower's attention-pooled output"),
    "SigLIPBackbone": Family(
        pooling="pooled", widths=1, block="SigLIPEncoderLayer",
        source="SigLIP: the vision tower's attention-pooled output"),
}
# What the families are called by their authors, for the listing.
NAMES = ("DINOv2", "DINOv3", "ViT", "CLIP", "SigLIP")


def is_hub(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def slug(name: str) -> str:
    """A hub backbone's name as part of file and layer names: the preset's last part and a short hash."""
    preset = name[len(PREFIX):]
    tail = re.sub(r"[^\w.-]+", "-", preset.rstrip("/").rsplit("/", 1)[-1]).strip("-.") or "preset"
    return f"hub-{tail}-{hashlib.sha256(preset.encode()).hexdigest()[:8]}"


def _keras_hub():
    try:
        import keras_hub
    except ModuleNotFoundError:
        raise UsageError(f"hub backbones need KerasHub, which is not installed: run '{INSTALL}'") from None
    return keras_hub


def _is_path(preset: str) -> bool:
    """A preset given as a path (not a preset name or a kaggle:// or hf:// handle)."""
    return "://" not in preset and ("/" in preset or preset.startswith(("~", ".")) or os.path.lexists(preset))


def _check_reachable(preset: str) -> None:
    """A remote preset offline fails in seconds, naming the way on; a path that is no folder says so."""
    if Path(preset).expanduser().is_dir():
        return
    if _is_path(preset):
        try:
            mode = os.stat(Path(preset).expanduser()).st_mode
        except OSError:
            raise UsageError(f"{{backbone}} hub:{preset}: no such folder; give a folder written by save_to_preset, "
                             "or a preset name") from None
        kind = "a file" if stat.S_ISREG(mode) else what_it_is(mode)
        raise UsageError(f"{{backbone}} hub:{preset}: {kind}, not a folder; give the folder save_to_preset wrote")
    scheme = preset.split("://", 1)[0] if "://" in preset else "kaggle"
    host = HOSTS.get(scheme)
    if host is None:
        raise UsageError(f"{{backbone}} hub:{preset}: not a folder, a preset name, kaggle:// or hf:// handle")
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        raise WeightsUnavailableError(
            f"{{backbone}} hub:{preset}: {host} cannot be reached (no network?). On a machine with network, "
            "save it with keras_hub.models.Backbone.from_preset(...).save_to_preset(FOLDER) and its image "
            "converter with keras_hub.layers.ImageConverter.from_preset(...).save_to_preset(FOLDER), copy the "
            "folder here and give hub:FOLDER") from None


def check_files(folder: Path) -> None:
    """Every file of a preset folder is a regular file, and its JSON files at most a record's size.

    Raises:
        UsageError: one is a device, a FIFO, a socket, or a JSON file past the bound.
    """
    for root, dirs, files in os.walk(folder):
        for name in sorted(files + [d for d in dirs if Path(root, d).is_symlink()]):
            path = Path(root, name)
            try:
                st = os.stat(path)
            except OSError as exc:
                raise UsageError(f"{{backbone}} hub:{folder}: its file {path.relative_to(folder)} cannot be read "
                                 f"({exc.strerror or exc})") from None
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{{backbone}} hub:{folder}: its file {path.relative_to(folder)} is not a regular "
                                 f"file but {what_it_is(st.st_mode)}; a preset folder holds the files save_to_preset "
                                 "wrote")
            if name.endswith(".json") and st.st_size > RECORD_LIMIT:
                raise UsageError(f"{{backbone}} hub:{folder}: its {path.relative_to(folder)} is {st.st_size / 1e6:.0f}"
                                 f" MB; a preset's JSON file is a few kilobytes")


def _load_json(preset: str, name: str) -> dict:
    """A preset's JSON file: by the guarded reader from a folder, else KerasHub's (it downloads)."""
    if Path(preset).is_dir():
        return read_json(Path(preset) / name, RECORD_LIMIT)
    from keras_hub.src.utils.preset_utils import load_json

    return load_json(preset, name)


def _config(preset: str) -> dict:
    try:
        config = _load_json(preset, "config.json")
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{{backbone}} hub:{preset}: cannot read its config.json ({first_line(exc, 200)})") from None
    if not isinstance(config, dict):
        raise UsageError(f"{{backbone}} hub:{preset}: its config.json is not a KerasHub config (not an object)")
    return config


@lru_cache(maxsize=32)
def preset_facts(name: str) -> tuple[str, Sizes, str]:
    """(preset, its sizes, its class) of ``hub:PRESET``, from the preset's config (its weights are not read),
    the folder's files checked first.

    Raises:
        UsageError: KerasHub missing, a folder with a file that is not a regular one, or a preset that is not
            an image encoder this toolkit knows or whose sizes are out of bounds.
        WeightsUnavailableError: a remote preset with no network.
    """
    _keras_hub()
    preset = name[len(PREFIX):]
    if not preset:
        raise UsageError("{backbone} hub: give a preset after hub:, e.g. hub:dinov2_base or hub:FOLDER")
    if Path(preset).expanduser().is_dir():
        preset = str(Path(preset).expanduser().resolve())
    _check_reachable(preset)
    if Path(preset).is_dir():
        check_files(Path(preset))
    config = _config(preset)
    cls = str(config.get("registered_name", "")).split(">")[-1]
    if cls not in FAMILIES:
        raise UsageError(f"{{backbone}} hub:{preset} is a {cls or 'preset of unknown class'}; hub backbones are "
                         f"image encoders: {', '.join(sorted(FAMILIES))}")
    return preset, check_config(preset, cls, config), cls


def hub_facts(name: str) -> tuple[str, int, int]:
    """(preset, image size, embedding width) of ``hub:PRESET`` (see :func:`preset_facts`): what its registry
    entry is made of (:func:`features.models.registry.get_spec`)."""
    preset, sizes, cls = preset_facts(name)
    return preset, sizes.image, FAMILIES[cls].widths * sizes.hidden


# model.weights.h5 holds 2 (bfloat16, float16) to 4 (float32) bytes a parameter, plus HDF5's own headers (a few
# kilobytes a weight: 0.2 MB for the 2-block presets of the tests); the estimate is within a few per cent.
WEIGHT_BYTES = (1.4, 6.0)
WEIGHTS_OVERHEAD = 4 << 20
TWO_TOWERS = ("CLIPBackbone", "SigLIPBackbone")  # image and text encoders in one preset


def weights_path(preset: str) -> Path:
    """The preset's weights file (downloaded into KerasHub's cache for a remote one), a regular file of a size
    the parameters its config makes can have.

    Raises:
        WeightsUnavailableError: it cannot be had.
        UsageError: it is not a regular file, or its size disagrees with the config's network.
    """
    from keras_hub.src.utils.preset_utils import get_file

    from ..io import check_regular

    try:
        path = Path(get_file(preset, "model.weights.h5"))
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise WeightsUnavailableError(f"{{backbone}} hub:{preset}: its weights cannot be had "
                                      f"({first_line(exc, 200)})") from None
    try:
        size = check_regular(path)
    except OSError as exc:
        raise UsageError(f"{{backbone}} hub:{preset}: its model.weights.h5 cannot be read ({exc.strerror or exc}); "
                         "copy the preset's folder again") from None
    _, sizes, cls = preset_facts(PREFIX + preset)
    n = estimate_parameters(sizes)
    low, high = WEIGHT_BYTES[0] * n, WEIGHT_BYTES[1] * n + WEIGHTS_OVERHEAD
    if cls in TWO_TOWERS:  # the text tower's weights are in the file too: the vision tower bounds it from below
        high = float("inf")
    expected = f"{low / 1e6:.1f} to {high / 1e6:.1f} MB" if high < float("inf") else f"at least {low / 1e6:.1f} MB"
    if not low <= size <= high:
        raise UsageError(f"{{backbone}} hub:{preset}: its model.weights.h5 is {size / 1e6:.1f} MB, but its config "
                         f"makes a network of about {n:,} parameters ({expected} of "
                         "weights): the config and the weights are of two networks; copy the preset's folder again")
    return path


def _converter(keras_hub, preset: str):
    """The preset's image converter: by its backbone class, or, for a vision tower saved alone (a CLIP or
    SigLIP vision encoder, which KerasHub pairs with no converter class), as its image_converter.json says."""
    try:
        return keras_hub.layers.ImageConverter.from_preset(preset)
    except ValueError:
        import keras

        return keras.saving.deserialize_keras_object(_load_json(preset, "image_converter.json"))


def build(backbone, pooling: str | None):
    """The encoder with the preset's image converter first and its family's pooling last: 0-255 RGB in,
    the embedding out (also for ``pooling=None``: a token sequence has no feature map to pool)."""
    import keras

    keras_hub = _keras_hub()
    spec = backbone.spec
    if pooling == "max":
        raise UsageError(f"{{pooling}} max: {spec.name} pools as its authors do; leave {{pooling}} at avg")
    preset = spec.preset
    try:
        model = keras_hub.models.Backbone.from_preset(preset, load_weights=backbone.weights != "none")
        converter = _converter(keras_hub, preset)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{{backbone}} {spec.name}: cannot load the preset and its image converter "
                         f"({first_line(exc, 200)}); a folder must hold both (save_to_preset of each)") from None
    cls = type(model).__name__
    family = FAMILIES[cls]
    encoder = getattr(model, "vision_encoder", model)
    size = backbone.image_size
    images = keras.Input((size, size, 3), name="images")
    x = converter(images)
    out = encoder({"images": x} if isinstance(encoder.input, dict) else x)
    if family.pooling == "pooled":
        embedding = out
    else:
        registers = int(getattr(encoder, "num_register_tokens", 0) or 0)
        cls_token = out[:, 0]
        if family.pooling == "cls":
            embedding = cls_token
        else:
            patches = keras.ops.mean(out[:, 1 + registers:], axis=1)
            embedding = keras.layers.Concatenate(name="class_and_mean_patch")([cls_token, patches])
    return keras.Model(images, embedding, name=slug(spec.name))


def transformer_blocks(network) -> tuple[list, list, list] | None:
    """A hub network cut where ``finetune.py --unfreeze N`` counts: (before, blocks, after).

    ``blocks`` are the encoder's transformer blocks in order (its family's block class), ``before``
    every weight-holding layer that runs before the first (image converter, patch and position
    embeddings, a pre-norm), ``after`` every one after the last (the final norm, SigLIP's pooling
    head, the pooling). Layers that only contain others (the encoder, ViT's and DINOv2's block
    stacks) are opened, not listed. None for a network that is no hub encoder.
    """
    import keras

    names = {family.block for family in FAMILIES.values()}
    before, blocks, after = [], [], []

    def visit(layer):
        if type(layer).__name__ in names:
            blocks.append(layer)
            return
        inner = layer.layers if isinstance(layer, keras.Model) else getattr(layer, "_layers", [])
        if any(type(sub).__name__ in names for sub in _descendants(layer)):
            for sub in inner:
                visit(sub)
        elif not isinstance(layer, keras.layers.InputLayer):
            (after if blocks else before).append(layer)

    for layer in network.layers:
        visit(layer)
    return (before, blocks, after) if blocks else None


def _descendants(layer):
    for sub in getattr(layer, "_layers", []):
        yield sub
        yield from _descendants(sub)
