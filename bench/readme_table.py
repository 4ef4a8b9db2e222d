"""Benchmarks write their headline rows into README.md between a pair of markers, so no figure is typed
twice."""
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def replace_in_readme(marker, rows, readme=README):
    """Put rows (markdown lines) between <!-- marker:start --> and <!-- marker:end --> of the README."""
    start_tag, end_tag = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = readme.read_text()
    if start_tag not in text or end_tag not in text:
        raise SystemExit(f"error: {readme} has no {start_tag} ... {end_tag} markers "
                         "to write the table between")
    start, end = text.index(start_tag) + len(start_tag), text.index(end_tag)
    readme.write_text(text[:start] + "\n" + "\n".join(rows) + "\n" + text[end:])
