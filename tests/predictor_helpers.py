"""Helpers shared by predictor-file tests."""
from __future__ import annotations

import json
import zipfile


def with_meta_edited(src, dst, edit) -> None:
    """Copy predictor file ``src`` to ``dst`` with ``edit(meta)`` applied to its meta.json."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "meta.json":
                meta = json.loads(data)
                edit(meta)
                data = json.dumps(meta).encode()
            zout.writestr(item, data)


def as_if_saved_by_other_sklearn(src, dst) -> None:
    """Copy predictor file ``src`` to ``dst`` with its meta claiming another scikit-learn
    version, so loading takes the refit-from-tables path."""
    with_meta_edited(src, dst, lambda meta: meta["versions"].__setitem__("sklearn", "0.0-other"))
