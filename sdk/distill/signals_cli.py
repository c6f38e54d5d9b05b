"""`distill signals inspect <dir>`: what a teacher-signal store holds (sdk.distill.signals).

<dir> is one store (it has store.json) or a folder of stores (annotate.signals, or signals/ in the user
cache): every store under it is listed.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sdk.errors import DistillError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Teacher-signal stores: inspect what they hold.")

# DistillKit's published figure for its stored top-k logits, the reference a reader compares against
DISTILLKIT_BYTES_PER_TOKEN = 300


@app.command("inspect")
def inspect_command(path: Path = typer.Argument(..., help="A store folder, or a folder of stores.")) -> None:
    """Print size, bytes per token, k and coverage (probability mass kept) of each store."""
    from sdk.distill.signals import SignalStore

    try:
        if not path.is_dir():
            raise DistillError(f"{path} is not a folder")
        roots = [path] if (path / "store.json").is_file() else sorted(p.parent for p in path.glob("*/store.json"))
        if not roots:
            raise DistillError(f"{path} holds no signal store (no store.json in it or its subfolders)")
        for root in roots:
            s = SignalStore.read(root).summary()
            bpt = s["bytes_per_token"]
            typer.echo(f"{root}\n  format {s['format']}, teacher {s['teacher'][:60]}\n"
                       f"  k {s['k']}, vocabulary {s['vocab_size']:,} ({s['id_bits']}-bit ids), {s['shards']} shard(s), "
                       f"{s['rows']:,} rows, {s['tokens']:,} tokens, {s['bytes'] / 1e6:.2f} MB")
            if bpt is not None:
                typer.echo(f"  {bpt:.1f} bytes/token ({bpt / DISTILLKIT_BYTES_PER_TOKEN:.2f}x DistillKit's published "
                           f"~{DISTILLKIT_BYTES_PER_TOKEN}); coverage (probability mass in the top-{s['k']}): mean "
                           f"{s['coverage_mean']:.3f}, 10th percentile {s['coverage_p10']:.3f}")
    except DistillError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
