"""engine/run.py pieces that need no training: the log trim on resume (also of a line cut short by a kill)."""

import json

from engine.run import trim_log


def test_trim_log_keeps_earlier_epochs_and_drops_a_damaged_line(tmp_path, capsys):
    log = tmp_path / "log.txt"
    lines = [json.dumps({"epoch": e, "train_loss": 1.0 / (e + 1)}) for e in range(3)]
    log.write_text("\n".join(lines) + '\n{"epoch": 3, "train_lo\n')
    trim_log(log, 2)
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [0, 1]
    assert "line 4 is damaged" in capsys.readouterr().out
    trim_log(log, 0)  # a fresh start keeps nothing
    assert not log.exists() or log.read_text() == ""
    trim_log(tmp_path / "absent.txt", 5)  # nothing to trim
