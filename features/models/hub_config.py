"""A KerasHub preset's config, checked before anything is built: every key known, every size bounded, the
network's parameters estimated and compared with the memory this process can have.

Keras allocates while it builds, before a weight is read: the position embedding (positions x width),
the register tokens (registers x width), a text tower's vocabulary (words x width). So each class's config
may hold only the keys this toolkit knows for it (:data:`KEYS`; a key it does not know is refused, never
passed through), each size is a whole number within :data:`LIMITS`, each image shape within the image size
the toolkit takes, each other setting a plain value; and the parameters all of them make
(:func:`network_parameters`: the vision tower of :func:`estimate_parameters`, its registers and position
table, and a two-tower preset's text tower and projections) are at most :data:`MAX_PARAMETERS` and, as
float32, fit :func:`features.memory.available_memory` (the machine's, or less where the process's own limit,
``ulimit -v`` or its cgroup, is lower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UsageError

# Bounds on a preset's sizes, far past every released encoder (ViT-g and DINOv2-g: 40 layers, width 1,536, MLP
# 6,144; DINOv3 7B: width 4,096, 40 layers; DINOv2 with registers: 4; SigLIP's text tower: 250,000 words of 64
# tokens; CLIP's: 49,408 of 77), checked before anything is built.
LIMITS = {"num_layers": 256, "hidden_dim": 16384, "num_heads": 256, "intermediate_dim": 131072, "mlp_dim": 131072,
          "patch_size": 1024, "tokens": 65536, "num_register_tokens": 1024, "embedding_dim": 16384,
          "vocabulary_size": 1_048_576, "max_sequence_length": 65536, "projection_dim": 16384,
          "intermediate_output_index": 256}
MAX_PARAMETERS = 10_000_000_000  # 40 GB as float32; DINOv3 7B is 6.7 billion
SHAPES = ("image_shape", "position_embedding_shape")  # (height, width, channels)
# Keys every Keras layer's config has, and the plain settings (flags, rates, names) that allocate nothing.
COMMON = {"name", "trainable", "dtype"}
SETTINGS = {"layer_scale_init_value", "use_mask_token", "use_swiglu_ffn", "dropout_rate", "drop_path_rate",
            "antialias_in_interpolation", "apply_layernorm", "data_format", "hidden_activation", "use_gated_mlp",
            "use_query_bias", "use_key_bias", "use_value_bias", "use_proj_bias", "use_mlp_bias", "attention_dropout",
            "layer_norm_eps", "rope_theta", "layer_norm_epsilon", "use_mha_bias", "use_class_token", "use_patch_bias",
            "intermediate_activation"}
_VISION = {"patch_size", "num_layers", "hidden_dim", "num_heads", "image_shape"}
_TEXT = {"vocabulary_size", "embedding_dim", "hidden_dim", "num_layers", "num_heads", "intermediate_dim",
         "intermediate_activation", "max_sequence_length"}
# Each class's keys (keras-hub 0.32's constructors), its own and COMMON.
KEYS = {
    "DINOV2Backbone": _VISION | {"intermediate_dim", "layer_scale_init_value", "num_register_tokens", "use_mask_token",
                                 "use_swiglu_ffn", "dropout_rate", "drop_path_rate", "position_embedding_shape",
                                 "antialias_in_interpolation", "apply_layernorm", "data_format"},
    "DINOV3Backbone": _VISION | {"intermediate_dim", "layer_scale_init_value", "num_register_tokens", "use_mask_token",
                                 "hidden_activation", "use_gated_mlp", "use_query_bias", "use_key_bias",
                                 "use_value_bias", "use_proj_bias", "use_mlp_bias", "attention_dropout",
                                 "drop_path_rate", "layer_norm_eps", "rope_theta", "apply_layernorm", "data_format"},
    "ViTBackbone": _VISION | {"mlp_dim", "dropout_rate", "attention_dropout", "layer_norm_epsilon", "use_mha_bias",
                              "use_mlp_bias", "use_class_token", "use_patch_bias", "data_format"},
    "CLIPVisionEncoder": _VISION | {"intermediate_dim", "intermediate_activation", "intermediate_output_index",
                                    "data_format"},
    "SigLIPVisionEncoder": _VISION | {"intermediate_dim", "intermediate_activation", "layer_norm_epsilon",
                                      "data_format"},
    "CLIPTextEncoder": _TEXT | {"intermediate_output_index"},
    "SigLIPTextEncoder": _TEXT | {"layer_norm_epsilon", "projection_dim"},
    "CLIPBackbone": {"vision_encoder", "text_encoder", "projection_dim"},
    "SigLIPBackbone": {"vision_encoder", "text_encoder"},
}
TOWERS = {"CLIPBackbone": ("CLIPVisionEncoder", "CLIPTextEncoder"),
          "SigLIPBackbone": ("SigLIPVisionEncoder", "SigLIPTextEncoder")}


@dataclass(kw_only=True, frozen=True)
class Sizes:
    """What a preset's config says of its vision tower's size: image, patch, width, depth, heads, MLP width."""

    image: int
    patch: int
    hidden: int
    layers: int
    heads: int
    intermediate: int

    @property
    def tokens(self) -> int:
        return (self.image // self.patch) ** 2


def estimate_parameters(sizes: Sizes) -> int:
    """A ViT-style encoder's parameter count from its sizes: per block attention (4 h^2 + 4 h), MLP
    (2 h m + h + m) and two norms (4 h); the patch embedding (3 p^2 h + h), a class and a position
    embedding per token, a final norm. KerasHub's own count is within a few per cent for DINOv2, ViT and
    CLIP; SigLIP's pooling head adds about a block."""
    h, m, p = sizes.hidden, sizes.intermediate, sizes.patch
    return sizes.layers * _block(h, m) + 3 * p * p * h + h + (sizes.tokens + 1) * h + h + 2 * h


def _block(h: int, m: int) -> int:
    return 4 * h * h + 4 * h + 2 * h * m + h + m + 4 * h


def _refuse(preset: str, what: str):
    raise UsageError(f"{{backbone}} hub:{preset}: {what}")


def _whole(preset: str, name: str, value, bound: int, *, low: int = 1) -> int:
    if isinstance(value, (list, tuple)) and value:
        value = value[0]  # ViT's patch is (height, width)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= bound:
        _refuse(preset, f"its config's {name} is {value!r}; a preset of this toolkit's families has a whole number "
                        f"from {low} to {bound:,} there")
    return value


def _shape(preset: str, name: str, value) -> tuple[int, int]:
    """(height, width) of an image shape, each within the image size the toolkit takes, 1 to 4 channels."""
    from ..validate import MAX_IMAGE_SIZE

    if not isinstance(value, (list, tuple)) or len(value) != 3:
        _refuse(preset, f"its config's {name} is {str(value)[:80]}; give (height, width, channels)")
    height, width = (_whole(preset, f"{name} {side}", v, MAX_IMAGE_SIZE) for side, v in zip(("height", "width"),
                                                                                             value[:2]))
    _whole(preset, f"{name} channels", value[2], 4)
    return height, width


def _plain(value) -> bool:
    """A setting's value that allocates nothing: a flag, a finite number, a short name, or a dtype's config."""
    if value is None or isinstance(value, (bool, str)) and len(str(value)) <= 200:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return math.isfinite(value)
    return isinstance(value, dict) and len(str(value)) <= 2000


def _checked(preset: str, cls: str, config) -> dict:
    """One class's config with every key known and every value of its kind; sizes bounded."""
    if not isinstance(config, dict):
        _refuse(preset, f"its {cls} config is not an object")
    unknown = sorted(set(config) - KEYS[cls] - COMMON)
    if unknown:
        _refuse(preset, f"its {cls} config holds {', '.join(map(repr, unknown[:5]))}, not a setting this toolkit "
                        "knows for it (a preset of another KerasHub version, or an edited config); save the preset "
                        "again with keras-hub 0.32")
    for key, value in config.items():
        if key in LIMITS and not (value is None and key == "intermediate_output_index"):
            _whole(preset, key, value, LIMITS[key], low=0 if key in ("num_register_tokens",
                                                                     "intermediate_output_index") else 1)
        elif key in SHAPES:
            _shape(preset, key, value)
        elif key not in ("vision_encoder", "text_encoder") and not _plain(value):
            _refuse(preset, f"its config's {key} is {str(value)[:80]}; a flag, a number or a name goes there")
    return config


def _tower(preset: str, config: dict, key: str, cls: str) -> dict:
    """A two-tower preset's encoder config, which must be of the class its family pairs."""
    tower = config.get(key)
    name = tower.get("class_name") if isinstance(tower, dict) else None
    if name != cls:
        _refuse(preset, f"its {key} is {name or 'missing'}, not the {cls} of its family")
    return _checked(preset, cls, tower.get("config"))


def _text_parameters(text: dict) -> int:
    """A text tower's parameters: its word and position tables, its blocks, a projection."""
    e, h = text["embedding_dim"], text["hidden_dim"]
    return (text["vocabulary_size"] + text["max_sequence_length"]) * e + text["num_layers"] * _block(
        h, text["intermediate_dim"]) + h * (text.get("projection_dim") or 0) + 2 * h


def network_parameters(sizes: Sizes, vision: dict, *, text: dict | None = None, projection: int = 0) -> int:
    """What the whole network holds as Keras builds it: :func:`estimate_parameters`, the register tokens, a
    position table larger than the image needs, and a two-tower preset's text tower and projections."""
    h = sizes.hidden
    n = estimate_parameters(sizes) + (vision.get("num_register_tokens") or 0) * h
    if vision.get("position_embedding_shape"):
        height, width = vision["position_embedding_shape"][:2]
        n += max(0, (height // sizes.patch) * (width // sizes.patch) - sizes.tokens) * h
    if text is not None:
        n += _text_parameters(text) + projection * (h + text["hidden_dim"])
    return n


def check_config(preset: str, cls: str, config: dict) -> Sizes:
    """The preset's vision sizes, every key of its config (and of each tower's) checked, and the network they
    make small enough to build in this process.

    Raises:
        UsageError: a key this toolkit does not know, a size missing, not a whole number or past :data:`LIMITS`,
            an image that is not a whole number of patches, or a network past :data:`MAX_PARAMETERS` or the
            memory this process can have.
    """
    inner = config.get("config")
    if not isinstance(inner, dict):
        _refuse(preset, "its config.json holds no config object")
    inner = _checked(preset, cls, inner)
    text, projection = None, 0
    if cls in TOWERS:
        vision = _tower(preset, inner, "vision_encoder", TOWERS[cls][0])
        text = _tower(preset, inner, "text_encoder", TOWERS[cls][1])
        missing = [k for k in ("vocabulary_size", "embedding_dim", "hidden_dim", "num_layers", "intermediate_dim",
                               "max_sequence_length") if text.get(k) is None]
        if missing:
            _refuse(preset, f"its text encoder's config does not say its {', '.join(missing)}")
        projection = inner.get("projection_dim") or 0
    else:
        vision = inner
    sizes = check_sizes(preset, vision)
    n = network_parameters(sizes, vision, text=text, projection=projection)
    check_memory(preset, n)
    return sizes


def check_memory(preset: str, n: int) -> None:
    """Refuse a network of ``n`` parameters past :data:`MAX_PARAMETERS` or, as float32, past the memory."""
    from ..memory import available_memory

    memory = available_memory()
    if n > MAX_PARAMETERS or 4 * n > memory:
        _refuse(preset, f"its config makes a network of about {n / 1e9:.1f} billion parameters "
                        f"({4 * n / 1e9:.1f} GB as float32), past what this machine can build (at most "
                        f"{MAX_PARAMETERS / 1e9:.0f} billion, and {memory / 1e9:.1f} GB available to this process)")


def check_sizes(preset: str, vision: dict) -> Sizes:
    """The vision tower's sizes, each bounded.

    Raises:
        UsageError: a size missing, not a positive whole number, past :data:`LIMITS`, or an image that is not
            a whole number of patches.
    """
    from ..validate import MAX_IMAGE_SIZE

    shape = vision.get("image_shape")
    if not isinstance(shape, (list, tuple)) or not shape:
        _refuse(preset, "its config does not say its image size (image_shape)")
    missing = [k for k in ("patch_size", "hidden_dim", "num_layers", "num_heads") if k not in vision]
    if missing:
        _refuse(preset, f"its config does not say its {', '.join(missing)}")
    intermediate = vision.get("intermediate_dim", vision.get("mlp_dim"))
    sizes = Sizes(image=_whole(preset, "image size", shape[0], MAX_IMAGE_SIZE),
                  patch=_whole(preset, "patch_size", vision["patch_size"], LIMITS["patch_size"]),
                  hidden=_whole(preset, "hidden_dim", vision["hidden_dim"], LIMITS["hidden_dim"]),
                  layers=_whole(preset, "num_layers", vision["num_layers"], LIMITS["num_layers"]),
                  heads=_whole(preset, "num_heads", vision["num_heads"], LIMITS["num_heads"]),
                  intermediate=_whole(preset, "intermediate_dim", intermediate, LIMITS["intermediate_dim"]))
    if sizes.image % sizes.patch:
        _refuse(preset, f"its image size {sizes.image} is not a whole number of {sizes.patch}-pixel patches")
    positions = vision.get("position_embedding_shape")
    tokens = max(sizes.tokens, (positions[0] // sizes.patch) * (positions[1] // sizes.patch)
                 if isinstance(positions, (list, tuple)) and len(positions) == 3 else 0)
    if tokens > LIMITS["tokens"]:
        _refuse(preset, f"{tokens:,} patches an image, past the {LIMITS['tokens']:,} an encoder of this toolkit's "
                        "families takes")
    return sizes
