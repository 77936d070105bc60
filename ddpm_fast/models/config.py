"""UNetConfig: the shape of a DDPM U-Net, its presets, and the translation from a diffusers UNet2DModel config.

Field names follow diffusers' UNet2DModel where the meaning is the same, so a reader of either can read both.
Attention placement is per level: ``down_attention[i]`` for down block i, ``up_attention[i]`` for up block i (up
blocks run from the lowest resolution back up, as in diffusers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence

SCALE_SHIFT_MODES = ("default", "scale_shift")


@dataclass(frozen=True)
class UNetConfig:
    sample_size: int = 32
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 256, 256)  # widths per level
    layers_per_block: int = 2  # residual blocks per down level (up levels have one more)
    down_attention: tuple[bool, ...] = (False, True, False, False)
    up_attention: tuple[bool, ...] = (False, False, True, False)
    mid_block: bool = True  # resnet, attention, resnet at the lowest resolution
    mid_attention: bool = True
    attention_head_dim: Optional[int] = None  # None: one head as wide as the block
    norm_num_groups: int = 32
    attn_norm_num_groups: Optional[int] = None  # the mid attention's groups (None: see mid_attention_norm_groups)
    norm_eps: float = 1e-6
    dropout: float = 0.0
    resnet_time_scale_shift: str = "default"  # "scale_shift": FiLM conditioning as in improved DDPM
    time_embedding_dim: Optional[int] = None  # None: 4 × block_out_channels[0]
    flip_sin_to_cos: bool = False
    freq_shift: int = 1
    downsample_padding: int = 0  # 0: pad right/bottom by one, then a stride-2 conv (the original DDPM)
    mid_block_scale_factor: float = 1.0
    center_input_sample: bool = False
    num_class_embeds: Optional[int] = None  # class conditioning: an embedding added to the time embedding

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------------- checks

    def validate(self) -> None:
        def positive_int(name: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive int, got {value!r}")

        for name in ("sample_size", "in_channels", "out_channels", "layers_per_block", "norm_num_groups"):
            positive_int(name, getattr(self, name))
        if not self.block_out_channels:
            raise ValueError("UNetConfig.block_out_channels must name at least one level")
        for width in self.block_out_channels:
            positive_int("block_out_channels", width)
            if width % self.norm_num_groups:
                raise ValueError(f"UNetConfig.block_out_channels: width {width} is not divisible by "
                                 f"norm_num_groups={self.norm_num_groups}")
        levels = len(self.block_out_channels)
        for name in ("down_attention", "up_attention"):
            if len(getattr(self, name)) != levels:
                raise ValueError(f"UNetConfig.{name} needs one entry per level ({levels}), got {getattr(self, name)}")
        if self.attention_head_dim is not None:
            positive_int("attention_head_dim", self.attention_head_dim)
            for level, width in enumerate(self.block_out_channels):
                uses_attention = self.down_attention[level] or self.up_attention[levels - 1 - level] or (
                    level == levels - 1 and self.mid_block and self.mid_attention)
                if uses_attention and width % self.attention_head_dim:
                    raise ValueError(f"UNetConfig.attention_head_dim={self.attention_head_dim} does not divide "
                                     f"the width {width} of an attention level")
        if self.attn_norm_num_groups is not None:
            positive_int("attn_norm_num_groups", self.attn_norm_num_groups)
        if self.resnet_time_scale_shift not in SCALE_SHIFT_MODES:
            raise ValueError(f"UNetConfig.resnet_time_scale_shift must be one of {SCALE_SHIFT_MODES}, "
                             f"got {self.resnet_time_scale_shift!r}")
        if self.downsample_padding not in (0, 1):
            raise ValueError(f"UNetConfig.downsample_padding must be 0 or 1, got {self.downsample_padding!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.norm_eps > 0:
            raise ValueError(f"UNetConfig.norm_eps must be positive, got {self.norm_eps!r}")
        if self.time_embedding_dim is not None:
            positive_int("time_embedding_dim", self.time_embedding_dim)
        if self.num_class_embeds is not None:
            positive_int("num_class_embeds", self.num_class_embeds)
        if self.block_out_channels[0] < 2:
            raise ValueError("UNetConfig.block_out_channels[0] must be at least 2 (sinusoidal embedding width)")

    # --------------------------------------------------------------------------------------------- derived

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images this model was configured for: in_channels and the square sample_size."""
        return (self.in_channels, self.sample_size, self.sample_size)

    @property
    def spatial_factor(self) -> int:
        """What H and W must be multiples of: each level but the last halves them, and the up path concatenates
        its upsampled maps with the down path's skips, which only line up when every halving was exact."""
        return 2 ** (len(self.block_out_channels) - 1)

    def check_spatial(self, height: int, width: int, name: str = "sample") -> None:
        """ValueError naming `name` unless height and width are multiples of spatial_factor (metadata only)."""
        factor = self.spatial_factor
        if height % factor or width % factor:
            raise ValueError(f"{name}: H and W must be multiples of {factor} for this U-Net "
                             f"({len(self.block_out_channels)} levels), got {height}x{width}")

    @property
    def time_embed_dim(self) -> int:
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    @property
    def mid_attention_norm_groups(self) -> Optional[int]:
        # As diffusers: attn_norm_num_groups applies to the mid block's attention only (down/up attentions use
        # norm_num_groups), and under scale_shift that attention has no GroupNorm unless attn_norm_num_groups is set.
        if self.attn_norm_num_groups is not None:
            return self.attn_norm_num_groups
        return self.norm_num_groups if self.resnet_time_scale_shift == "default" else None

    @staticmethod
    def attention_at(sample_size: int, num_levels: int, resolutions: Sequence[int]) -> tuple[tuple[bool, ...],
                                                                                           tuple[bool, ...]]:
        """(down_attention, up_attention) with attention at the levels whose resolution is in `resolutions`."""
        down = tuple(sample_size // 2 ** level in set(resolutions) for level in range(num_levels))
        return down, tuple(reversed(down))

    # ------------------------------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> "UNetConfig":
        if not isinstance(data, dict):
            raise TypeError(f"a UNet config must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown UNet config field(s): {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def _ddpm_cifar10() -> UNetConfig:
    # google/ddpm-cifar10-32: 35,746,307 parameters.
    return UNetConfig()


def _ddpm_256() -> UNetConfig:
    # google/ddpm-{celebahq,church,bedroom,cat}-256: six levels, attention at 16×16.
    return UNetConfig(sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512),
                      down_attention=(False, False, False, False, True, False),
                      up_attention=(False, True, False, False, False, False))


def _tiny() -> UNetConfig:
    # Trains in minutes on 2 CPU cores at 32×32: the demo's and the tests' model.
    return UNetConfig(block_out_channels=(32, 64, 64), layers_per_block=1,
                      down_attention=(False, False, True), up_attention=(True, False, False), norm_num_groups=8)


PRESETS = {"ddpm-cifar10": _ddpm_cifar10, "ddpm-256": _ddpm_256, "tiny": _tiny}


# ------------------------------------------------------------------------------------------------ diffusers config

# UNet2DModel.__init__ defaults, for keys a (possibly old) config.json leaves out.
DIFFUSERS_DEFAULTS = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (224, 448, 672, 896), "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu",
    "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None, "num_class_embeds": None,
    "num_train_timesteps": None,
}
_DOWN_TYPES = {"DownBlock2D": False, "AttnDownBlock2D": True}
_UP_TYPES = {"UpBlock2D": False, "AttnUpBlock2D": True}
_REQUIRED_VALUES = {"time_embedding_type": ("positional",), "downsample_type": ("conv",),
                    "upsample_type": ("conv",), "act_fn": ("silu", "swish"), "class_embed_type": (None,),
                    "mid_block_type": ("UNetMidBlock2D", None)}
# Keys that carry no architecture (diffusers bookkeeping, or unused by positional embeddings).
_IGNORED_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "num_train_timesteps", "_use_default_values"}


def config_from_diffusers(raw: dict) -> UNetConfig:
    """Our UNetConfig for a diffusers UNet2DModel config dict; ValueError naming a field we cannot represent."""
    if not isinstance(raw, dict):
        raise TypeError(f"a diffusers config must be a dict, got {type(raw).__name__}")
    class_name = raw.get("_class_name", "UNet2DModel")
    if class_name != "UNet2DModel":
        raise ValueError(f"_class_name: expected UNet2DModel, got {class_name!r}")
    unknown = sorted(set(raw) - set(DIFFUSERS_DEFAULTS) - _IGNORED_KEYS)
    if unknown:
        raise ValueError(f"unsupported UNet2DModel config field(s): {', '.join(unknown)}")
    cfg = {**DIFFUSERS_DEFAULTS, **{k: v for k, v in raw.items() if k not in _IGNORED_KEYS}}
    for key, allowed in _REQUIRED_VALUES.items():
        if cfg[key] not in allowed:
            raise ValueError(f"{key}={cfg[key]!r} is not supported (supported: {', '.join(map(repr, allowed))})")
    down_types, up_types = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    for key, types, known in (("down_block_types", down_types, _DOWN_TYPES), ("up_block_types", up_types, _UP_TYPES)):
        for block in types:
            if block not in known:
                raise ValueError(f"{key}: block type {block!r} is not supported (supported: {', '.join(known)})")
    widths = tuple(cfg["block_out_channels"])
    if not (len(down_types) == len(up_types) == len(widths)):
        raise ValueError("down_block_types, up_block_types and block_out_channels must have the same length")
    if cfg["norm_num_groups"] is None:
        raise ValueError("norm_num_groups=None is not supported")
    if cfg["resnet_time_scale_shift"] not in SCALE_SHIFT_MODES:
        raise ValueError(f"resnet_time_scale_shift={cfg['resnet_time_scale_shift']!r} is not supported "
                         f"(supported: {', '.join(SCALE_SHIFT_MODES)})")
    sample_size = cfg["sample_size"]
    if isinstance(sample_size, (list, tuple)):
        if len(set(sample_size)) != 1:
            raise ValueError(f"sample_size={sample_size!r}: only square samples are supported")
        sample_size = sample_size[0]
    numbers = {key: _number(cfg, key) for key in ("norm_eps", "dropout", "mid_block_scale_factor", "freq_shift")}
    if not numbers["freq_shift"].is_integer():
        raise ValueError(f"freq_shift={cfg['freq_shift']!r} must be an integer")
    for key in ("flip_sin_to_cos", "center_input_sample", "add_attention"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key}={cfg[key]!r} must be true or false")
    return UNetConfig(
        sample_size=int(sample_size or 32), in_channels=cfg["in_channels"], out_channels=cfg["out_channels"],
        block_out_channels=widths, layers_per_block=cfg["layers_per_block"],
        down_attention=tuple(_DOWN_TYPES[b] for b in down_types), up_attention=tuple(_UP_TYPES[b] for b in up_types),
        mid_block=cfg["mid_block_type"] is not None, mid_attention=bool(cfg["add_attention"]),
        attention_head_dim=cfg["attention_head_dim"], norm_num_groups=cfg["norm_num_groups"],
        attn_norm_num_groups=cfg["attn_norm_num_groups"], norm_eps=numbers["norm_eps"],
        dropout=numbers["dropout"], resnet_time_scale_shift=cfg["resnet_time_scale_shift"],
        time_embedding_dim=cfg["time_embedding_dim"], flip_sin_to_cos=cfg["flip_sin_to_cos"],
        freq_shift=int(numbers["freq_shift"]), downsample_padding=cfg["downsample_padding"],
        mid_block_scale_factor=numbers["mid_block_scale_factor"], center_input_sample=cfg["center_input_sample"],
        num_class_embeds=cfg["num_class_embeds"],
    )


def _number(cfg: dict, key: str) -> float:
    """cfg[key] as a float; a ValueError naming the field when it is not a number."""
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}={value!r} must be a number")
    return float(value)


def config_to_diffusers(config: UNetConfig) -> dict:
    """The diffusers UNet2DModel config of the same architecture (so its weights load there too)."""
    return {
        "sample_size": config.sample_size, "in_channels": config.in_channels, "out_channels": config.out_channels,
        "center_input_sample": config.center_input_sample, "time_embedding_type": "positional",
        "time_embedding_dim": config.time_embedding_dim, "freq_shift": config.freq_shift,
        "flip_sin_to_cos": config.flip_sin_to_cos,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in config.down_attention],
        "mid_block_type": "UNetMidBlock2D" if config.mid_block else None,
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in config.up_attention],
        "block_out_channels": list(config.block_out_channels), "layers_per_block": config.layers_per_block,
        "mid_block_scale_factor": config.mid_block_scale_factor, "downsample_padding": config.downsample_padding,
        "downsample_type": "conv", "upsample_type": "conv", "dropout": config.dropout, "act_fn": "silu",
        "attention_head_dim": config.attention_head_dim, "norm_num_groups": config.norm_num_groups,
        "attn_norm_num_groups": config.attn_norm_num_groups, "norm_eps": config.norm_eps,
        "resnet_time_scale_shift": config.resnet_time_scale_shift, "add_attention": config.mid_attention,
        "class_embed_type": None, "num_class_embeds": config.num_class_embeds,
    }
