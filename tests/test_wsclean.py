"""WSClean under casaguard's guard, and the ft / WSClean workflow end to end with the real tools."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import casaguard
from casaguard.sandbox import command
from casaguard.sandbox.jobdir import Ref

IMAGING = ["-size", "64", "64", "-scale", "20asec"]


def model_summary(vis: Path) -> dict[str, Any]:
    """Shape and amplitude of MODEL_DATA, read in a sandbox child."""
    summary: dict[str, Any] = casaguard.call(
        Ref("casaguard.remote.casa.inspect_ms", "column_summary"),
        str(vis),
        "MODEL_DATA",
        timeout=120,
    )
    return summary


def test_wsclean_images_and_returns_its_log(ms: Path, tmp_path: Path, no_leaks: None) -> None:
    """A normal WSClean run returns a CommandResult with its log tail and leaves its images."""
    name = tmp_path / "img"
    result = casaguard.wsclean([*IMAGING, "-niter", "20", "-name", str(name), str(ms)], timeout=300)
    assert result.args[0].endswith("wsclean")
    assert "Writing restored image" in result.output_tail
    assert (tmp_path / "img-image.fits").is_file()


def test_wsclean_bad_argument_is_an_unexpected_exit(no_leaks: None) -> None:
    """WSClean refusing its arguments is UnexpectedExit with its exit status and its own words."""
    with pytest.raises(casaguard.UnexpectedExit) as caught:
        casaguard.wsclean(["-no-such-option"], timeout=60)
    error = caught.value
    assert (error.kind, error.exit_code, error.signal) == ("exit", 255, None)
    assert "Unknown parameter: no-such-option" in error.stderr_tail


def test_wsclean_timeout_kills_it(ms: Path, tmp_path: Path, no_leaks: None) -> None:
    """WSClean running past its timeout is killed (TaskTimeout) and leaves no process behind."""
    args = [
        "-size",
        "4096",
        "4096",
        "-scale",
        "1asec",
        "-niter",
        "1000000",
        "-name",
        str(tmp_path / "big"),
    ]
    with pytest.raises(casaguard.TaskTimeout) as caught:
        casaguard.wsclean([*args, str(ms)], timeout=1.5)
    assert caught.value.task == "wsclean"
    assert _is_zombie_or_gone(caught.value.pid)


def test_missing_wsclean_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without WSClean, the error says what to install."""
    monkeypatch.setenv(command.WSCLEAN_ENV, "/nonexistent/wsclean")
    with pytest.raises(casaguard.InvalidInput, match="apt-get install wsclean"):
        casaguard.wsclean(["-version"])


def test_wsclean_heap_crash_becomes_an_exception(
    ms_factory: Any, tmp_path: Path, no_leaks: None
) -> None:
    """WSClean 3.1 creating MODEL_DATA on an MS with 4- and 16-channel spws dies; we get a crash."""
    vis = ms_factory(tmp_path / "mixed.ms", nchan=(4, 16))
    casaguard.call(Ref("casaguard.remote.casa.surgery", "remove_model_data"), str(vis), timeout=120)
    args = ["-j", "1", *IMAGING, "-niter", "20", "-mgain", "0.8", "-name", str(tmp_path / "m")]
    with pytest.raises((casaguard.Segfault, casaguard.HeapCorruption)) as caught:
        casaguard.wsclean([*args, str(vis)], timeout=300)
    error = caught.value
    assert error.signal in ("SIGSEGV", "SIGABRT") and error.vis == str(vis)
    assert "Writing changed model back" in error.stderr_tail


def test_after_wsclean_rewrites_model_data_probe_says_safe_and_ft_runs_again(
    ms: Path, complist: Path, tmp_path: Path, no_leaks: None
) -> None:
    """ft seeds MODEL_DATA, WSClean rewrites it, probe calls the MS safe, and ft runs again to
    the model it wrote the first time -- in a caller that never imports CASA."""
    casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True, timeout=300)
    seeded = model_summary(ms)
    assert seeded["present"] and not seeded["all_zero"]

    name = tmp_path / "wsc"
    args = [*IMAGING, "-niter", "50", "-mgain", "0.8", "-name", str(name), str(ms)]
    casaguard.wsclean(args, timeout=300)
    assert (tmp_path / "wsc-model.fits").is_file()
    # The simulated DATA hold no flux, so WSClean's model -- written back -- is all zero.
    assert model_summary(ms)["all_zero"]

    report = casaguard.probe(str(ms))
    assert report.verdict == "safe", report.to_dict()

    assert casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True, timeout=300) is None
    again = model_summary(ms)
    assert again["present"] and again["shape"] == seeded["shape"]
    assert again["mean_amplitude"] == pytest.approx(seeded["mean_amplitude"], rel=1e-5)
    assert not {"casatools", "casatasks", "casacore"} & set(sys.modules)


def test_field_report_order_ft_before_wsclean(
    ms: Path, complist: Path, tmp_path: Path, no_leaks: None
) -> None:
    """The field report's recommended order works: ft seeds MODEL_DATA, then WSClean images."""
    casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True, timeout=300)
    assert not model_summary(ms)["all_zero"]
    result = casaguard.wsclean(
        [*IMAGING, "-niter", "50", "-mgain", "0.8", "-name", str(tmp_path / "order"), str(ms)],
        timeout=300,
    )
    assert "Writing changed model back" in result.output_tail
    assert (tmp_path / "order-image.fits").is_file()
    assert model_summary(ms)["present"]


def _is_zombie_or_gone(pid: int | None) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
