"""sr-geo benchmarks: one command, a JSON and a markdown report.

    python -m benchmarks.run [--size 1024] [--model cnn] [--out benchmarks/results]

Every figure is a ratio or a split measured within the same run on the same machine, never an
absolute threshold in a unit test:

1. efficiency: end-to-end pipeline throughput (output MP/s, one-time start-up excluded and
   reported apart) divided by the bare model's throughput on the same tiles in one process, with
   the same threads and batch size;
2. memory: peak resident memory of the driver and of each worker for 1×, 4× and 16× the area;
3. start-up: `sr-geo run` on a tiny scene, and how it splits (imports, Ray, Prefect);
4. stage breakdown and export throughput, and a projection to a full Sentinel-2 tile;
5. export alone with one thread and with every core, for each COG codec: how much of it more cores carry;
6. the store's codec: Zarr write and read speed and size of a real model output under candidate codecs;
7. each shipped model's FLOPs per output pixel, and the throughput a GPU's peak would allow (the physical limit
   that GPU throughput is judged against).

Each case runs in its own process so that peak-memory high-water marks are per case.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sr_geo.config import PRECISIONS
from sr_geo.hardware import cpu_description

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
S2_TILE = 10980
# Dense BF16 tensor-core peak of an NVIDIA H100 SXM (datasheet, without sparsity): the GPU the scaling note plans for.
H100_BF16_FLOPS = 989e12


def _python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, check=True)


def _case(case: str, **options) -> dict:
    argv = ["-m", "benchmarks.run", "--case", case, *[f"--{k.replace('_', '-')}={v}" for k, v in options.items()]]
    return json.loads(_python(*argv).stdout.strip().splitlines()[-1])


# -- cases (each runs in a fresh process) ---------------------------------------------------------

def case_pipeline(size: int, model: str, scale: int, batch_size: int, tile: int, bands: int = 4,
                  rounds: int = 3, precision: str = "auto") -> dict:
    """Run the flow on a synthetic scene (peak memory sampled), then `rounds` times inference through
    the actors again (markers cleared, actor start-up excluded) and the bare model on the very same
    tiles, alternately: the machine is shared, and a change in its load during the run then weighs on
    both sides of the ratio alike. The memory sampler is stopped by then, so it slows neither side.
    """
    from benchmarks.memory import PeakMemory
    from benchmarks.scenes import synthetic_scene
    from flows.scene import super_resolve_scene
    from sr_geo.models.registry import ModelSpec
    from sr_geo.store import TileStore
    from workers.cluster import ray_session
    from workers.predictor import PoolConfig, run_pool

    def model_pass(sr_model, x) -> float:
        start = time.perf_counter()
        for i in range(0, len(x), batch_size):
            forward(sr_model, x[i : i + batch_size], torch.device("cpu"), precision=precision)
        return time.perf_counter() - start

    infer_seconds: list[float] = []
    model_seconds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, ray_session(num_cpus=os.cpu_count()):
        scene = synthetic_scene(Path(tmp) / "scene.tif", size, bands=bands)
        with PeakMemory() as memory:
            summary = super_resolve_scene(str(scene), str(Path(tmp) / "out.tif"), model=model, scale=scale,
                                          tile=tile, batch_size=batch_size, precision=precision, keep_store=True,
                                          workdir=str(Path(tmp) / "work"))
        # torch loads only now, for the bare model: the driver's peak above is the flow's, which runs without it
        import torch

        from sr_geo.inference import Normalisation, forward
        from sr_geo.models.registry import build_model

        store = TileStore.open(summary["store"])
        ids = list(range(store.plan.n_tiles))
        pixels, valid = store.read_inputs(ids)
        x = Normalisation(*store.band_statistics()).apply(pixels[:, 0], valid[:, 0])
        torch.set_num_threads(os.cpu_count() or 1)
        sr_model = build_model(ModelSpec(model, scale), x.shape[1])
        forward(sr_model, x[:batch_size], torch.device("cpu"), precision=precision)  # warm-up, as the actor's first batch
        pool = PoolConfig(**summary["pool"])  # the very actors the flow ran
        for _ in range(rounds):
            store.group["done"][:] = 0
            start = time.perf_counter()
            run = run_pool(summary["store"], ids, ModelSpec(model, scale), bands, pool)
            infer_seconds.append(time.perf_counter() - start - run.startup_seconds)
            model_seconds.append(model_pass(sr_model, x))
    seconds = summary["seconds"]
    other_stages = sum(seconds.values()) - seconds["infer"]
    megapixels = summary["output_megapixels"]
    result = {
        "size": size, "bands": bands, "model": model, "scale": scale, "tile": tile, "halo": summary["halo"],
        "batch_size": batch_size, "precision": summary["pool"]["precision"], "tiles": summary["tiles"], "output_megapixels": megapixels,
        "stage_seconds": seconds, "startup_seconds": summary["startup_seconds"], "rounds": rounds,
        "export_mp_per_s": megapixels / seconds["export"], "tile_input_mp_per_s": size * size / 1e6 / seconds["tile"],
        "peak_rss_mib": memory.peaks(),
    }
    if rounds:
        pipeline_seconds = other_stages + sum(infer_seconds) / rounds
        model_only = sum(model_seconds) / rounds
        result.update({
            "infer_seconds_by_round": infer_seconds, "model_only_seconds_by_round": model_seconds,
            "pipeline_seconds": pipeline_seconds, "model_only_seconds": model_only,
            "pipeline_mp_per_s": megapixels / pipeline_seconds, "model_only_mp_per_s": megapixels / model_only,
            "efficiency": model_only / pipeline_seconds,
            "efficiency_by_round": [m / (other_stages + i) for m, i in zip(model_seconds, infer_seconds, strict=True)],
        })
    return result


def case_export(size: int, rounds: int = 3) -> dict:
    """The export stage alone (stitching and the COG copy) on the store of a bicubic ×4 run, for each
    COG codec: one thread against every core, all four alternated `rounds` times. The speed-up gives the
    share of export that does not run in parallel, which decides how far more cores carry it on a GPU
    node (Amdahl).
    """
    from benchmarks.scenes import synthetic_scene
    from flows.scene import super_resolve_scene
    from sr_geo.config import COMPRESSIONS
    from sr_geo.export import export_cog
    from sr_geo.store import TileStore
    from workers.cluster import ray_session

    cores = os.cpu_count() or 1
    seconds: dict[tuple[str, int], list[float]] = {(c, t): [] for c in COMPRESSIONS for t in (1, cores)}
    with tempfile.TemporaryDirectory() as tmp, ray_session(num_cpus=cores):
        scene = synthetic_scene(Path(tmp) / "scene.tif", size)
        summary = super_resolve_scene(str(scene), str(Path(tmp) / "out.tif"), model="bicubic", scale=4,
                                      keep_store=True, workdir=str(Path(tmp) / "work"))
        store = TileStore.open(summary["store"], mode="r")
        sizes = {}
        for _ in range(rounds):
            for (codec, threads), runs in seconds.items():
                destination = Path(tmp) / f"export-{codec}-{threads}.tif"
                start = time.perf_counter()
                export_cog(store, destination, tmp, threads=threads, compression=codec)
                runs.append(time.perf_counter() - start)
                sizes[codec] = destination.stat().st_size
    megapixels = summary["output_megapixels"]
    codecs = {}
    for codec in COMPRESSIONS:
        one, many = (sum(seconds[codec, t]) / rounds for t in (1, cores))
        speedup = one / many
        serial = (cores / speedup - 1) / (cores - 1) if cores > 1 else 1.0
        codecs[codec] = {
            "seconds_by_threads": {str(t): seconds[codec, t] for t in (1, cores)}, "bytes": sizes[codec],
            "mp_per_s_one_thread": megapixels / one, "mp_per_s_all_cores": megapixels / many,
            "speedup": speedup, "serial_share": serial,
            "projected_mp_per_s_16_cores": megapixels / (one * (serial + (1 - serial) / 16)),
        }
    return {"size": size, "output_megapixels": megapixels, "cores": cores, "rounds": rounds, "codecs": codecs}


def case_store_codecs(rounds: int = 3) -> dict:
    """Write and read the float32 output of a cnn ×4 run on the bundled Sentinel-2 demo crop (real
    imagery, so its compressibility is a model output's) with the store's codec and the alternatives,
    alternated `rounds` times; best round of each. Chunks as the store makes them: one per tile core.
    """
    import numpy as np
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    from flows.scene import super_resolve_scene
    from sr_geo.store import CODEC, TileStore
    from workers.cluster import ray_session

    candidates = {
        "blosc lz4, byte shuffle, 5 (the store's)": CODEC,
        "blosc lz4, bit shuffle, 5": BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
        "blosc zstd, byte shuffle, 1": BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
        "zstd 1": ZstdCodec(level=1),
        "none": None,
    }
    with tempfile.TemporaryDirectory() as tmp, ray_session(num_cpus=os.cpu_count()):
        summary = super_resolve_scene(str(REPO / "sr_geo" / "data" / "s2_virginia_demo.tif"),
                                      str(Path(tmp) / "out.tif"), model="cnn", scale=4, tile=160, keep_store=True,
                                      workdir=str(Path(tmp) / "work"))
        store = TileStore.open(summary["store"], mode="r")
        values, chunks = store.group["output"][...], store.group["output"].chunks
        best = {name: {"write": float("inf"), "read": float("inf")} for name in candidates}
        sizes = {}
        for round_ in range(rounds):
            for index, (name, codec) in enumerate(candidates.items()):
                folder = Path(tmp) / f"round{round_}-codec{index}"
                array = zarr.create_array(str(folder), shape=values.shape, chunks=chunks, dtype=values.dtype,
                                          compressors=codec, fill_value=np.nan)
                start = time.perf_counter()
                array[...] = values
                best[name]["write"] = min(best[name]["write"], time.perf_counter() - start)
                start = time.perf_counter()
                back = array[...]
                best[name]["read"] = min(best[name]["read"], time.perf_counter() - start)
                assert np.array_equal(back, values, equal_nan=True)
                sizes[name] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    megabytes = values.nbytes / 1e6
    return {"megabytes": megabytes, "shape": list(values.shape), "chunks": list(chunks), "rounds": rounds,
            "codecs": {name: {"write_mb_per_s": megabytes / t["write"], "read_mb_per_s": megabytes / t["read"],
                              "ratio": values.nbytes / sizes[name]} for name, t in best.items()}}


def case_startup() -> dict:
    """Wall time of `sr-geo run` on a tiny scene (fresh and warm Prefect home) and its parts, and with
    a Ray head and a Prefect server already running (how scheduled deployments run).

    Parts, each in a fresh Python: the imports; Ray's local start and stop; the temporary Prefect
    server alone (`flows.prefect_server`: start, stop); and the seconds until `flows.startup.run_services`,
    which starts both side by side while the pipeline imports, has everything up: what a run waits
    for before its first stage.
    """
    from benchmarks.scenes import synthetic_scene
    from benchmarks.services import running_services

    def seconds(*args: str, env: dict | None = None) -> float:
        start = time.perf_counter()
        _python(*args, env=env)
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        scene = synthetic_scene(Path(tmp) / "tiny.tif", 64)
        env = {**os.environ, "PREFECT_HOME": str(Path(tmp) / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        def run(name: str, env: dict) -> float:
            return seconds("-m", "flows.cli", "run", str(scene), "-o", str(Path(tmp) / f"{name}.tif"), "--model",
                           "bicubic", env=env)

        first = run("out0", env)  # creates the Prefect database
        busy = _machine_busy_seconds()
        warm = [run(f"out{n}", env) for n in range(1, 4)]
        run_cpu = (_machine_busy_seconds() - busy) / len(warm)
        with running_services(env, Path(tmp)) as services_env:
            run("first-against-services", services_env)  # the server's database and Ray's workers warm up
            with_services = [run(f"services{n}", services_env) for n in range(3)]
        imports = seconds("-c", "import flows.scene")
        ray_start = seconds("-c", "import ray; ray.init(address='local', include_dashboard=False); ray.shutdown()")
        server = seconds("-c", "from flows.prefect_server import TemporaryServer as S; s = S(); s.wait_until_up(120); "
                               "s.stop()", env=env)
        probe = ("import time\nstart = time.perf_counter()\nfrom flows.prefect_server import start_early\n"
                 "start_early()  # as the CLI does before the run command's imports\nimport flows.cli.run\n"
                 "from flows.startup import run_services\n"
                 "with run_services(None, None, preload='flows.scene'):\n    print(time.perf_counter() - start)")
        services = float(_python("-c", probe, env=env).stdout.split()[-1])
    return {"run_first_seconds": first, "run_warm_seconds": statistics.median(warm), "run_warm_all_seconds": warm,
            "python_and_imports_seconds": imports,
            "python_ray_start_seconds": ray_start, "python_prefect_server_seconds": server,
            "python_cli_and_run_services_seconds": services, "run_with_services_running_seconds": with_services,
            "run_warm_machine_cpu_seconds": run_cpu, "cores": os.cpu_count()}


def case_flops(scale: int, tile: int, bands: int = 4, frames: int = 8) -> dict:
    """FLOPs per output pixel of every shipped model on one tile of `tile`² core pixels plus its halo, as the
    pipeline runs it (torch's FlopCounterMode: convolutions and matrix products, two per multiply-add; the
    rnn on `frames` frames), and the output MP/s the H100's BF16 peak would allow: a bound no pipeline passes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sr_geo.models.registry import ARCHITECTURES, ModelSpec, build_model

    models = {}
    for name in ("cnn", "gan", "rnn"):
        model = build_model(ModelSpec(name, scale), bands)
        side = tile + 2 * model.receptive_radius
        inputs = ((torch.randn(1, frames, bands, side, side), torch.ones(1, frames, side, side, dtype=torch.bool),
                   torch.zeros(1, frames, 2)) if ARCHITECTURES[name].temporal else (torch.randn(1, bands, side, side),))
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(*inputs)
        per_pixel = counter.get_total_flops() / (tile * scale) ** 2
        models[name] = {"halo": model.receptive_radius, "flops_per_output_pixel": per_pixel,
                        "h100_bf16_limit_mp_per_s": H100_BF16_FLOPS / per_pixel / 1e6}
    return {"scale": scale, "tile": tile, "bands": bands, "frames": frames, "models": models}


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (Linux /proc/stat; steal excluded): a run's
    Ray and Prefect processes are not its children, so only the machine's count sees all of them."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


# -- report ---------------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    eff = results["efficiency"]
    lines = [
        "# sr-geo benchmarks", "",
        f"Machine: {results['machine']}. Command: `{results['command']}`.", "",
        "## Efficiency (pipeline throughput / model-only throughput, same tiles, threads, batch size)", "",
        f"{eff['model']} ×{eff['scale']} on a {eff['size']}² 4-band uint16 scene ({eff['tiles']} tiles of {eff['tile']} "
        f"+ halo {eff['halo']}, batch {eff['batch_size']}, {eff['output_megapixels']:.1f} output MP):", "",
        "| pipeline MP/s | model-only MP/s | efficiency | one-time start-up (s) |",
        "|---|---|---|---|",
        f"| {eff['pipeline_mp_per_s']:.3f} | {eff['model_only_mp_per_s']:.3f} | **{eff['efficiency']:.2f}** "
        f"| {eff['startup_seconds']:.1f} |", "",
        f"Inference through the actors and the bare model alternated {eff['rounds']} times after the flow (the "
        "machine is shared; means above), by round: " + ", ".join(f"{e:.2f}" for e in eff["efficiency_by_round"]) + ".", "",
        "Stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in eff["stage_seconds"].items())
        + f"; export {eff['export_mp_per_s']:.1f} output MP/s, tiling {eff['tile_input_mp_per_s']:.1f} input MP/s.", "",
        "## Peak resident memory (MiB) by scene area (bicubic ×4, so I/O stages dominate)", "",
        "| area | output MP | driver | predictor actor |", "|---|---|---|---|",
    ]
    for row in results["memory"]:
        peaks = row["peak_rss_mib"]
        lines.append(f"| {row['size']}² | {row['output_megapixels']:.0f} | {peaks.get('driver', 0):.0f} "
                     f"| {peaks.get('predictor actor', 0):.0f} |")
    base, big = results["memory"][0]["peak_rss_mib"], results["memory"][-1]["peak_rss_mib"]
    lines += ["", f"16× area vs 1×: driver {big['driver'] / base['driver']:.2f}×, actor "
              f"{big['predictor actor'] / base['predictor actor']:.2f}×.", ""]
    few, many = results["bands"]
    lines += [
        f"## Actor peak resident memory by band count ({few['model']} ×{few['scale']}, {few['size']}² scene, "
        f"{few['tiles']} tiles of {few['tile']} + halo {few['halo']}, batch {few['batch_size']})", "",
        "| bands | predictor actor (MiB) |", "|---|---|",
        *[f"| {row['bands']} | {row['peak_rss_mib'].get('predictor actor', 0):.0f} |" for row in (few, many)], "",
        f"{many['bands']} bands vs {few['bands']}: "
        f"{many['peak_rss_mib']['predictor actor'] / few['peak_rss_mib']['predictor actor']:.2f}×.", "",
    ]
    ex = results["export"]
    lines += [
        f"## Export alone (bicubic ×4 store of a {ex['size']}² 4-band scene, {ex['output_megapixels']:.1f} output MP; "
        "stitching and COG copy)", "",
        "| codec | threads | seconds by round | output MP/s | MB |", "|---|---|---|---|---|",
    ]
    for codec, row in ex["codecs"].items():
        for threads, runs in row["seconds_by_threads"].items():
            rate = row["mp_per_s_one_thread"] if threads == "1" else row["mp_per_s_all_cores"]
            lines.append(f"| {codec} | {threads} | {', '.join(f'{v:.2f}' for v in runs)} | {rate:.1f} | "
                         f"{row['bytes'] / 1e6:.1f} |")
    lines.append("")
    for codec, row in ex["codecs"].items():
        lines.append(f"{codec}: speed-up {row['speedup']:.2f}× on {ex['cores']} cores, so {100 * row['serial_share']:.0f} % "
                     f"of export does not run in parallel; 16 cores would give about "
                     f"{row['projected_mp_per_s_16_cores']:.0f} output MP/s.")
    lines.append("")
    sc = results["store_codecs"]
    lines += [
        f"## Store codec (cnn ×4 output of the bundled Sentinel-2 demo crop, float32 {sc['shape']}, "
        f"{sc['megabytes']:.0f} MB, chunks {sc['chunks']}; best of {sc['rounds']} rounds)", "",
        "| codec | write MB/s | read MB/s | ratio |", "|---|---|---|---|",
        *[f"| {name} | {c['write_mb_per_s']:.0f} | {c['read_mb_per_s']:.0f} | {c['ratio']:.2f} |"
          for name, c in sc["codecs"].items()], "",
    ]
    st = results["startup"]
    lines += [
        "## Start-up (`sr-geo run` on a 64² scene, bicubic)", "",
        f"First run (fresh Prefect database) {st['run_first_seconds']:.1f} s, later runs {st['run_warm_seconds']:.1f} s "
        f"(median of {', '.join(f'{s:.1f}' for s in st['run_warm_all_seconds'])}). "
        f"Parts, each in a fresh Python: imports {st['python_and_imports_seconds']:.1f} s, Ray start and stop "
        f"{st['python_ray_start_seconds']:.1f} s, the temporary Prefect server {st['python_prefect_server_seconds']:.1f} s; "
        f"the server started first, then the CLI's imports, then Ray beside the flow's imports "
        f"(`flows.prefect_server.start_early`, `flows.startup.run_services`) "
        f"ready after {st['python_cli_and_run_services_seconds']:.1f} s. With a Ray head and a Prefect server "
        f"already running (RAY_ADDRESS, PREFECT_API_URL): "
        f"{', '.join(f'{s:.1f}' for s in st['run_with_services_running_seconds'])} s. A self-contained run keeps "
        f"the machine busy for {st['run_warm_machine_cpu_seconds']:.1f} CPU seconds over all its processes "
        f"(driver, Ray, Prefect server, actor): at least {st['run_warm_machine_cpu_seconds'] / st['cores']:.1f} s "
        f"of wall time on {st['cores']} cores.", "",
        "## Projection: one Sentinel-2 tile (10980², 4 bands) at ×4 on this machine", "",
    ]
    proj = results["projection"]
    lines += ["| stage | seconds |", "|---|---|", *[f"| {k} | {v:.0f} |" for k, v in proj.items()], ""]
    fl = results["flops"]
    lines += [
        f"## Model FLOPs per output pixel ({fl['bands']} bands, ×{fl['scale']}, tile {fl['tile']} + halo; rnn on "
        f"{fl['frames']} frames) and the H100 BF16 peak's limit", "",
        "| model | halo | FLOPs per output pixel | H100 limit (output MP/s) | this run, model only (MP/s) |",
        "|---|---|---|---|---|",
        *[f"| {name} | {m['halo']} | {m['flops_per_output_pixel'] / 1e3:.0f} k | {m['h100_bf16_limit_mp_per_s']:.0f} | "
          + (f"{eff['model_only_mp_per_s']:.3f} ({eff['model_only_mp_per_s'] * m['flops_per_output_pixel'] / 1e3:.0f} "
             "GFLOP/s)" if name == eff["model"] else "") + " |"
          for name, m in fl["models"].items()], "",
    ]
    return "\n".join(lines)


def project_s2(eff: dict, export: dict) -> dict:
    """Scale each stage's measured throughput to a full Sentinel-2 tile (same machine, same model);
    export at the export case's all-core throughput with the default codec (deflate), its longer and
    steadier measurement."""
    factor = (S2_TILE / eff["size"]) ** 2
    seconds = eff["stage_seconds"]
    stages = {
        "start-up (Ray, actors, model)": eff["startup_seconds"],
        "tile": seconds["tile"] * factor,
        "infer": (seconds["infer"] - eff["startup_seconds"]) * factor,
        "export": eff["output_megapixels"] * factor / export["codecs"]["deflate"]["mp_per_s_all_cores"],
    }
    stages["total (stages run one after another)"] = sum(stages.values())
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["pipeline", "export", "store-codecs", "startup", "flops"])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of actor and bare-model inference")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="the network's arithmetic")
    parser.add_argument("--memory-sizes", default="512,1024,2048")
    parser.add_argument("--export-size", type=int, default=1024, help="scene side for the export case")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    if args.case == "pipeline":
        print(json.dumps(case_pipeline(args.size, args.model, args.scale, args.batch_size, args.tile, args.bands,
                                       args.rounds, args.precision)))
        return
    if args.case == "startup":
        print(json.dumps(case_startup()))
        return
    if args.case == "flops":
        print(json.dumps(case_flops(args.scale, args.tile, args.bands)))
        return
    if args.case == "export":
        print(json.dumps(case_export(args.size, args.rounds)))
        return
    if args.case == "store-codecs":
        print(json.dumps(case_store_codecs(args.rounds)))
        return
    efficiency = _case("pipeline", size=args.size, model=args.model, scale=args.scale,
                       batch_size=args.batch_size, tile=args.tile, rounds=args.rounds)
    memory = [_case("pipeline", size=int(s), model="bicubic", scale=4, batch_size=args.batch_size, tile=args.tile,
                    rounds=0) for s in args.memory_sizes.split(",")]
    # Models fold bands into their batch: the actor's peak with 4 and 12 bands (the GAN, whose
    # activations dominate), on a scene small enough for CPU.
    bands = [_case("pipeline", size=128, model="gan", scale=4, batch_size=args.batch_size, tile=64, bands=b,
                   rounds=0) for b in (4, 12)]
    export = _case("export", size=args.export_size, rounds=args.rounds)
    results = {
        "machine": f"{os.cpu_count()} cores of {cpu_description()}, " + ("a GPU" if _has_gpu() else "no GPU"),
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
        "efficiency": efficiency, "memory": memory, "bands": bands, "export": export,
        "store_codecs": _case("store-codecs", rounds=args.rounds), "startup": _case("startup"), "projection": project_s2(efficiency, export),
        "flops": _case("flops", scale=args.scale, tile=args.tile),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    (out / "latest.md").write_text(markdown(results))
    print(markdown(results))


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
