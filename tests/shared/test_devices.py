"""annrepro.devices.check_device, the one device check of the three packages: a device torch
does not have is one SettingError line naming the option, and annrepro imports without torch.
The CLIs' `--device cuda` lines are tested in tests/{catalyzer,ccst,kdindex}/test_device.py."""

import os
import subprocess
import sys

import pytest
import torch
from annrepro.devices import check_device
from annrepro.errors import SettingError

NO_CUDA = pytest.mark.skipif(
    torch.cuda.is_available(), reason="CUDA is available: the error is for machines without it"
)


@pytest.mark.parametrize(
    "device, why",
    [("gpu", "not a torch device"), ("", "not a torch device"), ("meta", "only"), ("mps", "only")],
)
def test_unknown_devices_are_one_line(device, why):
    with pytest.raises(SettingError, match=why) as e:
        check_device(device, "--device")
    assert "\n" not in str(e.value) and str(e.value).startswith("--device")


def test_the_name_defaults_to_the_api_argument():
    with pytest.raises(SettingError) as e:
        check_device("gpu")
    assert str(e.value).startswith("device 'gpu': not a torch device (")


def test_the_cpu_is_returned_as_a_string():
    assert check_device("cpu") == "cpu"
    assert check_device(torch.device("cpu"), "--device") == "cpu"


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_one_line(device):
    with pytest.raises(SettingError) as e:
        check_device(device, "--device")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"--device {device}: torch.cuda.is_available() is False (torch ")
    assert msg.endswith("install a CUDA build of torch or use --device cpu")


def test_a_cuda_index_beyond_the_visible_devices_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda:0", "--device") == "cuda:0"
    with pytest.raises(SettingError) as e:
        check_device("cuda:1", "--device")
    assert str(e.value) == "--device cuda:1: only 1 CUDA device(s) visible"


def test_the_packages_use_the_shared_check():
    import catalyzer.train
    import ccst.train
    import kdindex.student

    for mod in (catalyzer.train, ccst.train, kdindex.student):
        assert mod.check_device is check_device, mod.__name__


def test_annrepro_imports_without_torch():
    """torch is imported when a device is checked, not with annrepro.devices; without torch
    the check is one line too."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # import torch now raises ImportError
        "import annrepro, annrepro.devices\n"
        "from annrepro.errors import SettingError\n"
        "try:\n"
        "    annrepro.devices.check_device('cpu', '--device')\n"
        "except SettingError as e:\n"
        "    print(e)\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "--device cpu: torch is not installed"
