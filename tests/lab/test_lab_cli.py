"""The command line: listing, argument errors before any work, re-rendering, Ctrl-C."""

import dataclasses
import os
import subprocess
import sys

import pytest

from rangerlab.lab import cli, runner
from rangerlab.lab.experiments import EXPERIMENTS


def test_list_names_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for exp_id in EXPERIMENTS:
        assert exp_id in out


def test_unknown_experiment_is_an_error_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run_experiments", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "--out", str(tmp_path), "--experiments", "race,nope"])
    assert err.value.code == 2
    assert "unknown experiment(s) nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "1"], "--seeds"),
        (["--threads", "0"], "--threads"),
        (["--jobs", "0"], "--jobs"),
    ],
)
def test_bad_numbers_are_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit):
        cli.main(["run", "--out", str(tmp_path), *args])
    assert message in capsys.readouterr().err


def test_unwritable_out_is_an_error_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run_experiments", lambda *a, **k: pytest.fail("work started"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit):
        cli.main(["run", "--out", str(blocker / "sub")])
    assert "not a writable folder" in capsys.readouterr().err
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SystemExit):
            cli.main(["run", "--out", str(locked)])


def test_interrupt_leaves_no_report(tmp_path, monkeypatch, capsys):
    def interrupted(cfg, arm, seed):
        raise KeyboardInterrupt

    exp = dataclasses.replace(EXPERIMENTS["layer-table"], trial=interrupted)
    monkeypatch.setitem(EXPERIMENTS, "layer-table", exp)
    code = cli.main(
        [
            "run",
            "--tiny",
            "--no-progress",
            "--jobs",
            "1",
            "--out",
            str(tmp_path),
            "--experiments",
            "layer-table",
        ]
    )
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []


def test_report_rerenders_from_results(tiny_report, tmp_path):
    out, _ = tiny_report
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.json").write_bytes((out / "results.json").read_bytes())
    assert cli.main(["report", str(copy)]) == 0
    assert (copy / "report.html").read_text() == (out / "report.html").read_text()
    assert sorted(p.name for p in (copy / "figures").iterdir()) == sorted(
        p.name for p in (out / "figures").iterdir()
    )


def test_report_without_results_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["report", str(tmp_path)])
    assert "results.json" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "rangerlab", "list"], capture_output=True, text=True, check=True
    )
    assert "race" in done.stdout and "ranger-nets" in done.stdout


def test_missing_lab_extra_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_missing_extras", lambda: ["matplotlib"])
    with pytest.raises(SystemExit) as err:
        cli.main(["list"])
    assert err.value.code == 2
    assert "rangerlab[lab]" in capsys.readouterr().err


def test_run_leaves_torch_settings_as_it_found_them(tmp_path):
    import torch

    threads = torch.get_num_threads()
    runner.run_experiments(["layer-table"], "tiny", tmp_path, threads=1, progress=False)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_ctrl_c_with_worker_processes_leaves_no_report(tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rangerlab",
            "run",
            "--tiny",
            "--jobs",
            "2",
            "--no-progress",
            "--out",
            str(out),
            "--experiments",
            "warmup,lookahead",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job inherits an ignored SIGINT; a terminal's Ctrl-C does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not list(out.glob(".rangerlab-partial-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # the workers are busy now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert sorted(os.listdir(out)) == []
