"""Link the crops of one age range out of a `facecomp prepare` folder of UTKFace-style names.

    python scripts/split_by_age.py ALL OUT 18-30

OUT/ gets the training crops and OUT/holdout/ the held-out ones whose AGE is in the range, as
hard links (copies where links are impossible), exactly what `facecomp prepare --age 18-30` with
the same settings would have written, without detecting the faces again.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from facecomp.io import list_images
from facecomp.training.dataset import HOLDOUT_DIR, AgeRange, parse_label


def main(src: Path, out: Path, ages: str) -> None:
    wanted = AgeRange.parse(ages)
    n = 0
    for sub in ("", HOLDOUT_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for f in list_images(src / sub) if (src / sub).is_dir() else []:
            label = parse_label(f.name)
            if label is None or label.age not in wanted or (out / sub / f.name).exists():
                continue
            try:
                os.link(f, out / sub / f.name)
            except OSError:
                shutil.copyfile(f, out / sub / f.name)
            n += 1
    print(f"{out}: {n} crops aged {wanted} linked")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
