"""The torch device of a training or encoding run, checked once before any work.

`check_device` is shared by the three paper packages (`catalyzer`, `ccst`, `kdindex`): their
APIs and CLIs take `device` / `--device` ("cpu", "cuda", "cuda:1"), and a device torch does
not have must be one line, not a traceback at the first tensor. torch is imported only when a
device is checked: `annrepro` itself does not depend on torch.
"""

from __future__ import annotations

from .checkpoint import first_line
from .errors import SettingError

__all__ = ["check_device"]


def check_device(device, what: str = "device") -> str:
    """The torch device `device` names ("cpu", "cuda", "cuda:1"), as a string.

    Raises a SettingError in one line starting with `what` (the option or argument name the
    user typed: "--device" in a CLI, "device" in an API) for a name torch does not know, a
    device other than the CPU and CUDA, or CUDA where torch has none (a CPU-only build, no
    driver or no GPU visible) or has fewer devices than the index asks for.
    """
    try:
        import torch
    except ImportError:
        raise SettingError(f"{what} {device}: torch is not installed") from None

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise SettingError(
            f"{what} {device!r}: not a torch device ({first_line(e)}); use cpu or cuda"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = (
                "a CPU-only build"
                if torch.version.cuda is None
                else f"built for CUDA {torch.version.cuda}, but no GPU or driver is visible"
            )
            raise SettingError(
                f"{what} {device}: torch.cuda.is_available() is False (torch "
                f"{torch.__version__}, {build}); install a CUDA build of torch or use "
                f"{what} cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingError(
                f"{what} {device}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    elif dev.type != "cpu":
        raise SettingError(f"{what} {device}: only cpu and cuda devices are supported")
    return str(dev)
