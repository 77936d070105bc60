"""A model compiled ahead of time: the pt2 package that `ddpm_fast.export.export_pt2` (`ddpm-fast export --format
pt2`) writes, loaded as a model that FastSampler runs without compiling it again.

    model = load_pt2("tiny.pt2")              # checked against this process, then loaded (well under a second)
    FastSampler.from_pretrained("tiny.pt2")   # the same, with the setup stored in the package

A fresh process that torch.compiles the U-Net pays for it before its first image (20-40 s for the tiny U-Net on a
2-core CPU, minutes on a busy machine or a GPU); a package holds that compiled code. It is PyTorch's AOTInductor
package (torch._inductor.aoti_compile_and_package / aoti_load_package): a zip archive with the compiled model, its
weights included, and AOTInductor's metadata, where one JSON document under METADATA_KEY records what the package is
for: the diffusion setup, the sample shape, the compute dtype, the device and the torch version that compiled it.
read_pt2_metadata reads that document without loading any code; load_pt2 checks it against this process first.

A package holds machine code that runs when it is loaded: load only packages you built or trust.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ..checks import ParameterError
from ..diffusion_setup import DiffusionSetup

METADATA_KEY = "ddpm_fast"  # AOTInductor's metadata holds str values: ours is one JSON document under this key
PT2_FORMAT = "ddpm_fast.pt2"
PT2_VERSION = 1
# The inputs of the compiled model, in order: x_t in the package's dtype [B, C, H, W], t int64 [B], and for a
# class-conditional model the class labels int64 [B]. The batch is dynamic (any B >= 1).
INPUT_NAMES = ("sample", "timestep")
CLASS_LABELS = "class_labels"


@dataclass(frozen=True)
class PT2Config:
    """What a package says about its model, in the names FastSampler reads from a model's config: in_channels,
    sample_size (H, W) and num_class_embeds (None: unconditional). H and W are fixed when the package is compiled."""

    in_channels: int
    sample_size: tuple[int, int]
    num_class_embeds: Optional[int]

    def check_spatial(self, height: int, width: int, name: str = "sample") -> None:
        """ValueError naming `name` for any H x W other than the compiled one."""
        if (height, width) != tuple(self.sample_size):
            raise ValueError(f"{name}: this pt2 package is compiled for {self.sample_size[0]}x{self.sample_size[1]} "
                             f"samples, got {height}x{width}")


def read_pt2_metadata(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """The ddpm_fast document of a pt2 package, read from the archive without loading its code, with
    AOTInductor's own keys (AOTI_DEVICE_KEY, AOTI_CPU_ISA, ...) under "aoti".

    Raises FileNotFoundError (no such file) and ValueError (not a zip archive, or an archive that export_pt2 did not
    write)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist()
                     if "/data/aotinductor/" in name and name.endswith("_metadata.json")]
            documents = [json.loads(archive.read(name)) for name in names]
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a pt2 package ({type(error).__name__}: {error})") from None
    for document in documents:
        if isinstance(document, dict) and METADATA_KEY in document:
            try:
                metadata = json.loads(document[METADATA_KEY])
            except (TypeError, json.JSONDecodeError):
                break
            if not isinstance(metadata, dict) or metadata.get("format") != PT2_FORMAT:
                break
            metadata["aoti"] = {key: value for key, value in document.items() if key != METADATA_KEY}
            return metadata
    raise ValueError(f"{path}: not a ddpm_fast pt2 package (an archive without the metadata export_pt2 writes)")


def check_pt2_compatible(metadata: dict[str, Any], path: Union[str, os.PathLike],
                         device: Union[str, torch.device, None] = None) -> torch.device:
    """The device the package runs on, after checking that this process can load it: the torch version that
    compiled it, its device (and `device`, when given), the machine and, on a CPU, the instruction sets its code
    uses. Each mismatch is one ValueError that says what to do (export the package again here, usually)."""
    again = "export the package again in this environment"
    if metadata.get("version") != PT2_VERSION:
        raise ValueError(f"{path}: a pt2 package of format version {metadata.get('version')!r}; this ddpm_fast reads "
                         f"version {PT2_VERSION}: {again}")
    if metadata["torch"] != torch.__version__:
        raise ValueError(f"{path} was compiled by torch {metadata['torch']}; this process runs torch "
                         f"{torch.__version__}, whose AOTInductor may not load it: {again}")
    package_device = torch.device(metadata["device"])
    if device is not None and device != "auto":
        given = str(device)
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ParameterError("device", lambda name: f"{name('device')} must be auto, cpu, cuda or cuda:N, got "
                                                        f"{given!r}") from None
        if device.type != package_device.type:
            raise ParameterError("device", lambda name: f"{name(f'device={given!r}')}: {path} is compiled for "
                                                        f"{package_device.type}; sample it there, or export a "
                                                        f"package for {device.type}")
    aoti = metadata.get("aoti", {})
    machine = aoti.get("AOTI_MACHINE")
    if machine and machine != platform.machine():
        raise ValueError(f"{path} is compiled for {machine}; this machine is {platform.machine()}: {again}")
    if package_device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("device", lambda name: f"{path} is compiled for CUDA, and CUDA is not available "
                                                        "here; export a package for cpu")
        index = device.index if isinstance(device, torch.device) else None
        package_device = torch.device("cuda", index if index is not None else torch.cuda.current_device())
        wanted = re.sub(r"\D", "", str(aoti.get("AOTI_COMPUTE_CAPABILITY", "")))
        have = "".join(map(str, torch.cuda.get_device_capability(package_device)))
        if wanted and wanted != have:
            raise ValueError(f"{path} is compiled for GPUs of compute capability {wanted}; {package_device} has "
                             f"{have}: {again}")
    else:
        flags = _cpu_flags()
        missing = sorted(set(str(aoti.get("AOTI_CPU_ISA", "")).lower().split()) - flags) if flags is not None else []
        if missing:
            raise ValueError(f"{path} is compiled for a CPU with {', '.join(missing)}, which this CPU lacks: {again}")
    return package_device


def load_pt2(path: Union[str, os.PathLike], device: Union[str, torch.device, None] = None) -> "PT2Model":
    """The model of a pt2 package, checked against this process (check_pt2_compatible) and checked whole (every
    member's CRC-32: a damaged file could otherwise load as machine code that computes garbage or crashes) before its
    code is loaded.

    device: where to run it (None or "auto": the package's device; another device type is a ValueError naming
    device). Raises FileNotFoundError / ValueError as read_pt2_metadata and check_pt2_compatible do, and ValueError
    for a damaged archive."""
    path = pathlib.Path(path)
    metadata = read_pt2_metadata(path)
    run_on = check_pt2_compatible(metadata, path, device)
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{path}: a damaged pt2 package ({type(error).__name__}: {error})") from None
    if damaged is not None:
        raise ValueError(f"{path}: a damaged pt2 package ({damaged} fails its checksum); export it again")
    return PT2Model(path, metadata, _load_runner(path, run_on), run_on)


def _load_runner(path: pathlib.Path, device: torch.device):
    """The package's compiled model, callable on a list of tensors. torch's aoti_load_package first compares the
    package with this machine for a warning, and for that runs inductor's CPU instruction-set probe: a compile and a
    subprocess per instruction set (1.4 s under torch 2.13, 8-13 s under 2.11, whose probe imports torch in each).
    check_pt2_compatible has made the same comparison already, as an error, so the loader is built directly; where
    this torch lacks that loader, aoti_load_package does it."""
    # imported here: torch._inductor is heavy, and only a package that passed the checks needs it
    index = device.index if device.type == "cuda" else -1
    try:
        from torch.export.pt2_archive._package import AOTICompiledModel

        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, index)
    except (ImportError, AttributeError, TypeError):  # internals of torch that moved: the public loader
        from torch._inductor import aoti_load_package

        return aoti_load_package(str(path), device_index=index)
    return AOTICompiledModel(loader)


class PT2Model:
    """A loaded pt2 package: call it as model(sample, timestep[, class_labels]) -> prediction [B, C', H, W] in the
    package's dtype (C' = 2C for a learned-variance model).

    sample: [B, C, H, W] of the compiled C, H, W and dtype, on the package's device, any B >= 1 (either memory
    layout: it is made contiguous as the package was compiled); timestep: int64 [B] (or one value for all);
    class_labels: int64 [B] in [0, num_class_embeds), for a class-conditional package only (their range is checked
    on a CPU; on a GPU it would cost a sync per call, and FastSampler checks labels once before its loop).
    ValueError / TypeError naming the argument otherwise. Attributes: path, setup (the DiffusionSetup stored with
    it), sample_shape, dtype, device, config (PT2Config), metadata (the whole document, see read_pt2_metadata).
    """

    def __init__(self, path: pathlib.Path, metadata: dict[str, Any], runner: Any, device: torch.device):
        self.path, self.metadata, self.device = path, metadata, device
        self._runner = runner
        self.setup = DiffusionSetup.from_dict(metadata["setup"], f"{path} (its setup)")
        self.sample_shape: tuple[int, int, int] = tuple(metadata["sample_shape"])  # type: ignore[assignment]
        self.dtype: torch.dtype = getattr(torch, metadata["dtype"])
        self.config = PT2Config(self.sample_shape[0], self.sample_shape[1:], metadata["num_class_embeds"])

    def __repr__(self) -> str:
        return (f"PT2Model({str(self.path)!r}, sample_shape={self.sample_shape}, dtype={self.metadata['dtype']}, "
                f"device={str(self.device)!r})")

    def __call__(self, sample: torch.Tensor, timestep: Any, class_labels: Optional[torch.Tensor] = None):
        if not isinstance(sample, torch.Tensor):
            raise TypeError(f"sample must be a tensor, got {type(sample).__name__}")
        if sample.dim() != 4 or tuple(sample.shape[1:]) != self.sample_shape or sample.shape[0] < 1:
            raise ValueError(f"sample: {self.path.name} is compiled for [B, {', '.join(map(str, self.sample_shape))}]"
                             f" samples, got {list(sample.shape)}")
        if sample.dtype != self.dtype:
            raise ValueError(f"sample: {self.path.name} computes in {self.metadata['dtype']}, got {sample.dtype}")
        if sample.device.type != self.device.type:
            raise ValueError(f"sample: {self.path.name} runs on {self.device}, got a tensor on {sample.device}")
        batch = sample.shape[0]
        inputs = [sample.contiguous(), _per_sample("timestep", timestep, batch, sample.device)]
        if self.config.num_class_embeds is not None:
            if class_labels is None:
                raise ValueError(f"class_labels: {self.path.name} is class-conditional; pass class_labels [B]")
            labels = _per_sample("class_labels", class_labels, batch, sample.device)
            # checked where it costs no device sync (the compiled code would index out of its table)
            if labels.device.type == "cpu" and ((labels < 0) | (labels >= self.config.num_class_embeds)).any():
                raise ValueError(f"class_labels must be class indices in [0, {self.config.num_class_embeds}), got "
                                 f"{labels.tolist()}")
            inputs.append(labels)
        elif class_labels is not None:
            raise ValueError(f"class_labels: {self.path.name} is an unconditional model")
        output = self._runner(*inputs)
        return output[0] if isinstance(output, (list, tuple)) else output


def _per_sample(name: str, value: Any, batch: int, device: torch.device) -> torch.Tensor:
    """An int64 [batch] tensor on `device` from one value or [batch] values."""
    tensor = torch.as_tensor(value, device=device)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got {tensor.dtype}")
    if tensor.numel() == 1:
        tensor = tensor.reshape(1).expand(batch)
    if tensor.shape != (batch,):
        raise ValueError(f"{name} must be one value or [{batch}] values, got shape {list(tensor.shape)}")
    return tensor.to(torch.int64).contiguous()


def _cpu_flags() -> Optional[set[str]]:
    """This CPU's instruction-set flags in AOTInductor's names (lower case), read as inductor reads them; None (no
    check) where inductor does not read them (a machine other than x86-64)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        from torch._inductor.cpu_vec_isa import x86_isa_checker  # an internal of inductor: guarded
    except ImportError:
        return None
    return {flag.lower() for flag in x86_isa_checker()}
