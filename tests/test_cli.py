import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["train_vae.py", "process_data.py", "train_rnn.py",
                                    "train_dream.py", "evaluate_agent.py"])
def test_missing_run_directory_is_one_clear_line(tmp_path, script):
    missing = tmp_path / "no_such_run"
    result = subprocess.run([sys.executable, str(ROOT / script), "--run", str(missing)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: run directory {missing} does not exist" in result.stderr
