"""Progress bars: a line every few percent where the output is not a terminal."""

from __future__ import annotations

import io

from merpo_data.progress import LINE_PERCENT, LineProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_a_line_every_few_percent_not_carriage_returns():
    out = io.StringIO()
    bar = progress_bar(2000, "meta-training", file=out)
    assert isinstance(bar, LineProgress)
    for _ in range(2000):
        bar.update(1)
    bar.set_postfix(test_return="-12.50")
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 100 // LINE_PERCENT
    assert lines[-1].startswith("meta-training: 2000/2000 it (100%")


def test_resumed_and_partial_runs_end_with_their_last_count():
    out = io.StringIO()
    bar = progress_bar(10, "focal", "step", initial=4, file=out)
    bar.set_postfix(mean="-3.00")
    bar.update(3)
    bar.close()
    assert out.getvalue().splitlines()[-1].startswith("focal: 7/10 step (70%")
    assert "mean=-3.00" in out.getvalue()


def test_a_terminal_gets_tqdm_and_disabled_shows_nothing():
    bar = progress_bar(5, "x", file=_Terminal())
    assert not isinstance(bar, LineProgress)
    bar.close()
    quiet = io.StringIO()
    bar = progress_bar(5, "x", disable=True, file=quiet)
    bar.update(5)
    bar.close()
    assert quiet.getvalue() == ""
