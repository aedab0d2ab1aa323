"""tools/throughput.py runs every kind of script's update (transitions, AWR's refreshed returns,
DT's windows) on the CPU and writes its table."""

from tools import throughput


def test_throughput_table_on_cpu(tmp_path):
    out = tmp_path / "throughput.md"
    assert throughput.main(["--algos", "bc_filtered", "awr", "dt", "--device", "cpu", "--modes", "eager",
                            "--batch-sizes", "32", "default", "--warmup", "2", "--windows", "2",
                            "--window-steps", "2", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if "| eager |" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["bc_filtered", "bc_filtered", "awr", "awr", "dt", "dt"]
    assert not any("failed" in r for r in rows)
    assert "| dt | 64 | eager |" in out.read_text()  # the script's own batch size


def test_unknown_algorithm_is_one_sentence(capsys):
    assert throughput.main(["--algos", "sac"]) == 2
    assert "unknown algorithm" in capsys.readouterr().err


def test_precisions_alternate_and_give_the_ratio(tmp_path):
    out = tmp_path / "throughput.md"
    assert throughput.main(["--algos", "bc_filtered", "--device", "cpu", "--modes", "eager", "--batch-sizes", "32",
                            "--precisions", "fp32", "bf16", "--warmup", "2", "--windows", "2", "--window-steps", "2",
                            "--out", str(out)]) == 0
    text = out.read_text()
    assert "| fp32 updates/s | bf16 updates/s | bf16 / fp32 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| bc_filtered | 32 | eager |"))
    assert "failed" not in row and row.rstrip().endswith("| 2 | 2 |")
