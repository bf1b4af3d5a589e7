import subprocess
import sys

CODE = """
import sys, time
import torch
t = time.perf_counter()
import fastvit
fastvit.create_model
print(time.perf_counter() - t)
print(sorted(m for m in ("triton", "flash_attn", "xformers", "transformers", "matplotlib") if m in sys.modules))
"""


def test_import_is_light():
    """fastvit's own import cost (torch excluded, it is imported first) and no heavy optional packages."""
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout.split("\n")
    assert float(out[0]) < 0.5, f"import fastvit took {out[0]} s on top of torch"
    assert out[1] == "[]", f"import fastvit pulled in {out[1]}"
