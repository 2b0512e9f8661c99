"""Child process of ``test_hostile_corpus``: load and convert every file of a corpus folder under an
address-space limit, then load one valid file per format, and print one JSON line per file.

Usage: ``python hostile_child.py FOLDER MANIFEST.json EXTRA_BYTES``. Each record holds the outcome
(``'error'`` with the message, ``'loaded'``, or ``'crash'`` with the exception type), the time,
the peak resident memory above the pre-case level (``VmHWM`` reset per case through
``/proc/self/clear_refs``), and the ``convert`` command's exit code, output and leftover files.
"""

import json
import os
import resource
import sys
import time
import warnings


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def main(folder, manifest_path, extra):
    import torch
    from click.testing import CliRunner

    import sgtriton
    from sgtriton.checkpoints import CheckpointError
    from sgtriton.checkpoints.commands import convert_command

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    # Warm every code path once on a valid file, so the limit measures the cases, not imports.
    manifest = json.load(open(manifest_path))
    for item in manifest:
        if item["kind"] == "valid":
            sgtriton.load(os.path.join(folder, item["file"]))
    limit = _status("VmSize") + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    runner = CliRunner()
    for item in manifest:
        path = os.path.join(folder, item["file"])
        record = dict(item)
        _reset_peak()
        rss = _status("VmRSS")
        start = time.perf_counter()
        try:
            sgtriton.load(path)
            record["outcome"] = "loaded"
        except CheckpointError as exc:
            record["outcome"], record["message"] = "error", str(exc)
        except BaseException as exc:  # the test fails on these; say what escaped
            record["outcome"], record["message"] = "crash", f"{type(exc).__name__}: {str(exc)[:300]}"
        record["load_s"] = time.perf_counter() - start
        record["peak_mib"] = max(_status("VmHWM") - rss, 0) / 2**20
        out_dir = os.path.join(folder, "out-" + item["file"])
        os.mkdir(out_dir)
        start = time.perf_counter()
        result = runner.invoke(convert_command, [path, os.path.join(out_dir, "converted.safetensors")])
        record["convert_s"] = time.perf_counter() - start
        record["convert_exit"] = result.exit_code
        record["convert_output"] = result.output
        record["convert_exception"] = (type(result.exception).__name__ if result.exception is not None
                                       and not isinstance(result.exception, SystemExit) else None)
        record["left_files"] = sorted(os.listdir(out_dir))
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
