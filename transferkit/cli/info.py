"""``transferkit models`` (architectures and their stages), ``transferkit inspect`` (what an ONNX
file holds) and ``transferkit data materialize``."""

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


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="An .onnx file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """What an ONNX file holds: classes, preprocessing, source run, quantization and its gate's
    figures, inputs and outputs (symbolic dimensions by name), opset, operators, size, sha256."""
    from transferkit.export.inspect import inspect_onnx

    r = run(inspect_onnx, model)
    if as_json:
        import json

        typer.echo(json.dumps(r, default=str))
        return
    typer.echo(f"{r['file']}: {r['bytes'] / 1e6:.2f} MB, sha256 {r['sha256']}")
    typer.echo(f"opset {r['opset']} ({r['producer'] or 'unknown producer'})")
    for kind in ("inputs", "outputs"):
        for t in r[kind]:
            shape = ", ".join(map(str, t["shape"]))
            typer.echo(f"{kind[:-1]:<6} {t['name']}: {t['dtype']} [{shape}]")
    ops = ", ".join(f"{k} x{v}" for k, v in r["operators"].items())
    typer.echo(f"operators ({sum(r['operators'].values())} nodes): {ops}")
    _say_transferkit(r)


def _say_transferkit(r) -> None:
    tk = r["transferkit"]
    if tk is None:
        typer.echo(
            "no transferkit metadata"
            + (f" ({r['metadata_error']})" if r.get("metadata_error") else "")
            + ": `transferkit serve` needs a file written by `transferkit export`"
        )
        return
    p = tk["preprocessing"]
    typer.echo(f"classes ({len(tk['classes'])}): {', '.join(tk['classes'])}")
    typer.echo(
        f"preprocessing: input_size {p['input_size']}, channels {p['channels']}, mean "
        f"{list(p['mean'])}, std {list(p['std'])}, interpolation {p['interpolation']}, "
        f"crop_pct {p['crop_pct']}"
        + (
            "; embedded in the graph (input: decoded uint8 images)"
            if tk["embedded_preprocessing"]
            else ""
        )  # fmt: skip
    )
    typer.echo(f"architecture {tk['arch']}, exported from {tk['source_run'] or '(unknown)'}")
    q = tk["quantization"]
    if q:
        import json

        typer.echo(f"quantization: {json.dumps(q)}")
    else:
        typer.echo("quantization: none (fp32)")
