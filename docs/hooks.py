"""MkDocs hook: the committed studies' figures live beside their runs in results/, outside
docs/; the pages show them from there instead of keeping a second copy."""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def on_files(files, config):
    for figure in sorted((ROOT / "results").glob("*/*.png")):
        src_uri = figure.relative_to(ROOT).as_posix()
        files.append(File.generated(config, src_uri, abs_src_path=str(figure)))
    return files
