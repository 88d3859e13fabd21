"""The typed reports: a real export's report.json and profile round-trip through them to the same JSON, and the
renderers give the same pages from the types as from the JSON read back."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from edge_lstm import jsonio
from edge_lstm.cli_summary import export_summary
from edge_lstm.options import ExportOptions
from edge_lstm.pipeline import export
from edge_lstm.report import render_markdown
from edge_lstm.report_html import render as render_profile
from edge_lstm.report_page import render_export
from edge_lstm.reports import ArtifactEntry, ExportReport, ProfileReport, Recommendation

REPO = Path(__file__).resolve().parents[1]


def _json(value: object) -> object:
    """As report.json holds it (strict JSON: a non-finite float is null)."""
    return json.loads(jsonio.dumps(value))


def test_a_real_report_round_trips_and_renders_the_same(forecaster_ckpt: Path, temps_csv: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = export(forecaster_ckpt, ExportOptions(output_dir=out, data=temps_csv, profile=True))
    written = json.loads((out / "report.json").read_text())
    typed = res.export_report
    assert _json(typed.to_dict()) == written == _json(res.report)
    assert list(written) == ["schema", "tool", "created", "model", "recipe", "validation_data", "artifacts", "passed",
                             "accuracy", "proved_on", "profile", "recommendation"]  # the order it always had,
    # then the recommendation the reports show (a typed field, what `export --json` prints too)
    rec = written["recommendation"]
    assert rec == {"file": "stacked.fp32.onnx", "runtime": "onnxruntime", "target": "this host (no --target given)",
                   "rule": rec["rule"], "candidates": 1} and rec["rule"].startswith("lowest measured p50")
    assert typed.recommendation == Recommendation.from_dict(rec) and typed.recommendation.to_dict() == rec
    assert f"Recommended for this host (no --target given): {rec['file']} on {rec['runtime']}" in (
        export_summary(typed, out).replace("\n", " "))
    back = ExportReport.from_dict(written)
    assert _json(back.to_dict()) == written and back.recommendation == typed.recommendation
    assert [a.file for a in back.artifacts] == ["stacked.fp32.onnx"] and back.passed and back.accuracy
    assert back.cost is not None and back.cost.macs_per_inference == written["model"]["macs_per_inference"] > 0
    assert [r.to_dict() for r in back.cost.layer_costs] == written["model"]["layer_costs"]
    assert ArtifactEntry.from_dict(written["artifacts"][0]).to_dict() == written["artifacts"][0]
    checked = back.artifacts[0].validation[0]
    assert checked.runtime == "onnxruntime" and checked.passed and checked.task and checked.outputs[0]["name"]
    assert _json(res.artifacts[0].validations[0].to_dict()) == _json(checked.to_dict())
    prof = ProfileReport.from_dict(written["profile"])
    assert prof.to_dict() == written["profile"] and prof.artifacts[0]["artifact"] == "stacked.fp32.onnx"
    # the same pages from the types as from the JSON (what the CLI does with a report.json after a failure)
    assert render_markdown(typed) == render_markdown(written) == (out / "report.md").read_text()
    assert render_export(back) == render_export(written)
    assert export_summary(typed, out) == export_summary(written, out)
    assert render_profile(prof, typed) == render_profile(written["profile"], written)


def test_a_partial_report_reads_with_empty_sections() -> None:
    r = ExportReport.from_dict({"artifacts": [{"file": "m.onnx", "validation": []}]})
    assert r.artifacts[0].file == "m.onnx" and r.cost is None and r.profile is None
    assert r.validation_data.samples == 0 and r.passed is False  # an artifact that says nothing did not pass
    assert "firmware" not in r.to_dict() and "profile" not in r.to_dict() and "recommendation" not in r.to_dict()


def test_reports_module_needs_only_the_standard_library() -> None:
    code = ("import sys; import edge_lstm.reports\n"
            "print(sorted(m for m in sys.modules if m.startswith('edge_lstm') or m in ('numpy', 'torch', 'onnx')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.strip() == "['edge_lstm', 'edge_lstm.reports']"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top, inside functions and under TYPE_CHECKING alike."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_only_the_command_lines_import_the_orchestrator() -> None:
    """``Artifact``, the options and the report types live low in the stack: nothing the pipeline calls (feeds,
    the reports, validation, the profiler, produce, ...) imports :mod:`edge_lstm.pipeline`."""
    package = REPO / "edge_lstm"
    importers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                       if p.name != "pipeline.py" and "edge_lstm.pipeline" in _imports(p))
    assert importers == ["cli.py", "tune.py", "tune_run.py"]
