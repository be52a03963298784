"""The README's Python example runs (with one epoch, in a temp dir)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    code = code.replace("epochs=20", "epochs=1").replace('run_dir="runs/mine"', 'run_dir="runs/mine", progress=False')
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["trainer"].epoch == 1
    assert (tmp_path / "runs" / "mine" / "metrics.csv").is_file()
