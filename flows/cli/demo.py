"""`sr-geo demo`: the whole pipeline on the small real scene that ships with sr-geo."""

from __future__ import annotations

from pathlib import Path

import click

from flows.cli.options import print_summary

DEMO_SCENE = Path(__file__).resolve().parents[2] / "sr_geo" / "data" / "s2_virginia_demo.tif"


@click.command("demo")
@click.option("-o", "--output-dir", default="demo-output", show_default=True, type=click.Path(file_okay=False))
@click.option("--model", default="cnn", show_default=True)
@click.option("--scale", default=4, show_default=True, type=int)
def command(output_dir: str, model: str, scale: int) -> None:
    """Super-resolve the bundled Sentinel-2 scene and write a before/after quicklook PNG."""
    from flows.startup import run_services

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    destination = out / f"s2_virginia_demo_{model}_x{scale}.tif"
    quicklook = out / f"s2_virginia_demo_{model}_x{scale}_quicklook.png"
    with run_services(None, None, preload="flows.scene"):
        from flows.scene import super_resolve_scene

        summary = super_resolve_scene(str(DEMO_SCENE), str(destination), model=model, scale=scale,
                                      quicklook=str(quicklook))
    print_summary(summary)
    click.echo(f"quicklook: {quicklook}")
