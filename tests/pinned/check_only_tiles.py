"""Check that a regenerated ``figures.json`` differs from the committed one only in its ``tiles`` entries.

    python tests/pinned/figures.py && python tests/pinned/check_only_tiles.py [REVISION]   # default HEAD

Used when the tile layouts change on purpose (issue 15: budgets that hold in measured memory) and nothing else may.
"""

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
revision = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
old = json.loads(subprocess.run(["git", "show", f"{revision}:tests/pinned/figures.json"], capture_output=True,
                                text=True, check=True, cwd=HERE).stdout)
new = json.loads((HERE / "figures.json").read_text(encoding="utf-8"))
assert sorted(old) == sorted(new), "variants differ"
changed = {}
for name in old:
    assert old[name]["words"] == new[name]["words"], f"{name}: words changed"
    for key in set(old[name]["figures"]) | set(new[name]["figures"]):
        a, b = old[name]["figures"].get(key), new[name]["figures"].get(key)
        if a != b:
            assert key == "tiles", f"{name}: {key} changed"
            changed[name] = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
for name, diff in sorted(changed.items()):
    print(name, {k: (v if k != "starts" else "…") for k, v in diff.items()})
print(f"{len(changed)} of {len(old)} variants: only tiles changed")
