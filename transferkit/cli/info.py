"""``transferkit models`` (architectures and their stages) and ``transferkit data materialize``."""

from __future__ import annotations

from pathlib import Path

import typer

from transferkit.cli.common import app, check_arch, data_app, run


@app.command()
def models(
    arch: str | None = typer.Argument(None, help="Show this architecture's stages."),
) -> None:
    """List the architectures, or one architecture's stages (what each freeze depth freezes)."""
    from transferkit.models.registry import get_arch, list_archs

    if arch is None:
        typer.echo("\n".join(list_archs()))
        typer.echo("\n`transferkit models NAME` shows its stages and freeze depths.")
        return
    check_arch(arch, "ARCH")
    from transferkit.config import ModelConfig
    from transferkit.models.build import build_model, count_parameters

    built = build_model(ModelConfig(arch=arch, weights=None), 1000)
    spec = get_arch(arch)
    typer.echo(
        f"{arch}: {count_parameters(built.model):,} parameters (1000 classes), "
        f"{len(built.stages)} stages, head: {spec.head}"
    )
    typer.echo(f"{'freeze_depth':>12}  {'frozen through':<10}  modules (output channels)")
    typer.echo(f"{0:>12}  {'(nothing)':<10}  all layers train")
    for k, st in enumerate(built.stages, start=1):
        note = "  <- linear probe" if k == len(built.stages) else ""
        typer.echo(f"{k:>12}  {st.name:<10}  {', '.join(st.modules)} ({st.out_channels}){note}")


@data_app.command("materialize")
def materialize_cmd(
    name: str = typer.Argument(
        ...,
        help="Bundled dataset: digits, elpv (functional/defective), "
        "elpv-severity (p000..p100), elpv-type (mono/poly).",
    ),
    out_dir: Path = typer.Argument(..., help="Folder to write <class>/*.png into."),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Write a bundled real dataset as an ImageFolder of PNG files."""
    from transferkit.data.bundled import materialize

    counts = run(materialize, name, out_dir, overwrite=overwrite)
    typer.echo(f"wrote {sum(counts.values())} images in {len(counts)} classes to {out_dir}")
