"""eval/files.py: the one writer of ActivityNet-format result files."""
import json

from eval.files import write_results_json


def test_write_results_json(tmp_path):
    path = tmp_path / "sub" / "result.json"
    write_results_json(path, {"v": [{"label": "A", "score": 0.5, "segment": [1.0, 2.0]}]})
    data = json.loads(path.read_text())
    assert set(data) == {"version", "results", "external_data"}
    assert data["results"]["v"][0]["segment"] == [1.0, 2.0]
