"""The WorldView-2 Rotterdam multispectral crops on their native 2 m grid, for the held-out evaluation.

The development copies (`ms1.tif` … `ms3.tif`) hold the 2 m multispectral bands replicated onto a
1 m grid (each native pixel repeated twice along each axis); every second pixel of every second row
is the original sample. Evaluating on the replicated grid would score SR against blocks of equal pixels,
so the evaluation takes the native grid back (same bounds, pixel size doubled).

    python docs/eval/wv2_native.py SRC_DIR OUT_DIR
"""

import sys
from pathlib import Path

import rasterio
from affine import Affine

if len(sys.argv) != 3:
    sys.exit(__doc__.strip().splitlines()[-1].strip())
src_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
out_dir.mkdir(parents=True, exist_ok=True)
for n in (1, 2, 3):
    with rasterio.open(src_dir / f"ms{n}.tif") as src:
        native = src.read()[:, ::2, ::2]
        profile = {**src.profile, "height": native.shape[1], "width": native.shape[2],
                   "transform": src.transform * Affine.scale(2)}
        with rasterio.open(out_dir / f"wv2_ms{n}_native.tif", "w", **profile) as dst:
            dst.write(native)
            dst.descriptions = ("blue", "green", "red", "nir")
