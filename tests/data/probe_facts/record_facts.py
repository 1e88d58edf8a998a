"""Record the static child's real facts on MS variants, for the unit tests of probe_rules.

Run: .venv/bin/python tests/data/probe_facts/record_facts.py
For each variant of tests/probe_variants.py named in RECORDED, this builds the variant
for real (a simulated MS, altered as the variant says), runs the real static child
(``casaguard.probe(ms).facts``: python-casacore in a sandbox child) and writes
tests/data/probe_facts/<variant>.json. The temporary directory is replaced by
``<TMP>``, so the MS itself is ``<TMP>/<variant>.ms``. Nothing here is invented: the
facts are what the child read on this machine (python-casacore and casatools as in
the facts' ``casacore_version``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/: probe_variants, conftest

from probe_variants import Variants  # noqa: E402

import casaguard  # noqa: E402

RECORDED = (
    "clean",
    "after_wsclean",
    "nan_model",
    "multi_spw_fixed_model",
    "mangled_spw",
    "empty",
    "spw_rows_removed",
    "spw_zero_rows",
    "feed_zero_rows",
    "keyword_missing",
    "keyword_elsewhere",
    "keyword_to_missing_table",
    "subtable_table_dat_missing",
    "truncated_main_table_dat",
    "truncated_pointing",
    "ddid_out_of_range",
    "field_id_out_of_range",
    "antenna1_out_of_range",
    "model_variable_multi_spw",
    "lock_newer_than_data",
    "corrected_fixed_multi_spw",
    "main_column_missing",
    "spw_column_missing",
    "keyword_wrong_table",
)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="casaguard-facts-") as scratch:
        root = Path(scratch)
        cache: dict[tuple[object, ...], Path] = {}

        def factory(dest: Path, **kwargs: object) -> Path:
            key = tuple(sorted(kwargs.items()))
            if key not in cache:
                cache[key] = root / f"sim{len(cache)}.ms"
                casaguard.simulate_ms(cache[key], **kwargs)  # type: ignore[arg-type]
            shutil.copytree(cache[key], dest)
            return dest

        variants = Variants(factory)
        for name in RECORDED:
            ms = getattr(variants, name)(root / f"{name}.ms")
            facts = casaguard.probe(ms).facts
            text = json.dumps(facts, indent=1, sort_keys=True).replace(str(root), "<TMP>")
            (HERE / f"{name}.json").write_text(text + "\n")
            print(name, "recorded")


if __name__ == "__main__":
    main()
