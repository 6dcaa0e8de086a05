#!/usr/bin/env python3
"""Seeds of the torch_checkpoint fuzz target (fuzz/README.md): a tiny state dict of Zyphra's original code
for fuzz/src/lib.rs's TINY_STANDALONE_CONFIG, saved with torch.save (mode byte 0 + the file), and its bare
data.pkl (mode byte 1 + the pickle).

    python3 scripts/make_fuzz_torch_seeds.py        # needs torch; deterministic weights
"""
import io
import json
import os
import re
import sys
import zipfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_standalone_fixtures import state_dict  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
lib = open(os.path.join(ROOT, "fuzz", "src", "lib.rs")).read()
cfg = json.loads(re.search(r'TINY_STANDALONE_CONFIG: &str = r#"(.*?)"#;', lib, re.S).group(1))
sd = state_dict(dict(cfg=dict(cfg, mamba_ngroups=1), seed=1499, dtype="float32"))
buf = io.BytesIO()
torch.save(sd, buf)
data = buf.getvalue()
pkl = next(zipfile.ZipFile(io.BytesIO(data)).read(n) for n in zipfile.ZipFile(io.BytesIO(data)).namelist()
           if n.endswith("/data.pkl"))
out = os.path.join(ROOT, "fuzz", "corpus", "torch_checkpoint")
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "seed-standalone"), "wb").write(b"\x00" + data)
open(os.path.join(out, "seed-pickle"), "wb").write(b"\x01" + pkl)
print(f"seed-standalone {len(data) + 1} bytes, seed-pickle {len(pkl) + 1} bytes")
