"""The allow-list: malicious pickles are refused naming the global, and their payloads never run."""

import builtins
import io
import os
import pickle
import subprocess
import sys
import zipfile

import pytest
import torch
from checkpoint_builders import (
    EasyDict,
    _reconstruct_persistent_obj,
    fake_modules,
    nvlabs_pickle,
    nvlabs_record,
    small_generator,
    tf_pickle,
    tf_stylegan2_variables,
    torch_save_bytes,
)

from sgtriton.checkpoints import UnsafePickleError, load

LEGACY_HEADER = (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
                 + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))


class Payload:
    """Pickles as ``func(*args)`` -- what a malicious checkpoint would contain."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker):
    return {
        "os.system": Payload(os.system, f"touch {marker}"),
        "builtins.exec": Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": Payload(subprocess.Popen, ["touch", str(marker)]),
    }


def refused(data, marker):
    with pytest.raises(UnsafePickleError) as info:
        load(io.BytesIO(data))
    assert not marker.exists(), "the payload ran"
    return info.value


def test_the_payloads_are_real(tmp_path):
    """Control: plain pickle would run them (exec shown here); sgtriton must not."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(payloads(marker)["builtins.exec"]))
    assert marker.exists()


@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen"])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_top_level_payload_is_refused_naming_the_global(name, protocol, tmp_path):
    marker = tmp_path / "pwned"
    payload = payloads(marker)[name]
    error = refused(pickle.dumps({"G_ema": payload}, protocol=protocol), marker)
    module = payload.func.__module__
    assert error.global_name == f"{module}.{payload.func.__qualname__}"
    assert error.global_name in str(error)


def test_payload_inside_a_persistent_record_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    G = small_generator(img_resolution=8)
    record = nvlabs_record(G, G)
    record.state["_modules"]["mapping"].state["w_avg_beta"] = payloads(marker)["os.system"]
    error = refused(nvlabs_pickle(G, snapshot={"G_ema": record}), marker)
    assert "system" in error.global_name


def test_payload_inside_an_inner_storage_blob_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    blob = LEGACY_HEADER + pickle.dumps(payloads(marker)["builtins.exec"], protocol=2)
    data = pickle.dumps({"G_ema": Payload(torch.storage._load_from_bytes, blob)}, protocol=4)
    error = refused(data, marker)
    assert error.global_name == "builtins.exec" and "inner tensor storage blob" in str(error)


def test_embedded_source_is_never_executed(tmp_path):
    """module_src / build_module_src are kept as text (hashed), never exec'd."""
    marker = tmp_path / "pwned"
    code = f"open({str(marker)!r}, 'w').close()\n"
    G = small_generator(img_resolution=8)
    record = nvlabs_record(G, G)
    stack = [record]
    while stack:
        rec = stack.pop()
        rec.module_src = code
        stack.extend(rec.state["_modules"].values())
    load(io.BytesIO(nvlabs_pickle(G, snapshot={"G_ema": record})))
    load(io.BytesIO(tf_pickle(tf_stylegan2_variables(G), {"fmap_base": 64, "resolution": 8},
                              build_module_src=code)))
    assert not marker.exists()


def test_payload_in_a_torch_zip_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    refused(torch_save_bytes({"g_ema": payloads(marker)["os.system"]}), marker)
    refused(torch_save_bytes({"g_ema": payloads(marker)["builtins.exec"]}, legacy=True), marker)


def test_third_party_classes_are_refused():
    """Even harmless-looking classes outside the allow-list are refused (no import happens)."""
    with fake_modules(**{"training.networks:Generator": type("Generator", (), {})}):
        data = pickle.dumps({"G_ema": sys.modules["training.networks"].Generator()}, protocol=4)
    assert "training.networks" not in sys.modules
    with pytest.raises(UnsafePickleError, match="training.networks.Generator"):
        load(io.BytesIO(data))
    with fake_modules(**{"torch_utils.persistence:_reconstruct_persistent_obj": _reconstruct_persistent_obj,
                         "dnnlib.util:EasyDict": EasyDict}):
        data = pickle.dumps({"G_ema": torch.nn.Linear(2, 2)}, protocol=4)
    with pytest.raises(UnsafePickleError, match="torch.nn.modules.linear.Linear"):
        load(io.BytesIO(data))


def test_pickled_module_persistent_ids_are_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02(X\x06\x00\x00\x00moduleq\x00tQ.")
    with pytest.raises(Exception, match="persistent id of kind 'module'"):
        load(io.BytesIO(buf.getvalue()))
