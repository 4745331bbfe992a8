import sys, rasterio
from affine import Affine
src_dir, out_dir = sys.argv[1], sys.argv[2]
for n in (1, 2, 3):
    with rasterio.open(f"{src_dir}/ms{n}.tif") as src:
        native = src.read()[:, ::2, ::2]
        profile = {**src.profile, "height": native.shape[1], "width": native.shape[2],
                   "transform": src.transform * Affine.scale(2)}
        with rasterio.open(f"{out_dir}/wv2_ms{n}_native.tif", "w", **profile) as dst:
            dst.write(native)
            dst.descriptions = ("blue", "green", "red", "nir")
