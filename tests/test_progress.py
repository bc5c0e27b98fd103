"""Long loops report progress in a log too: a plain line every N items when stderr is no terminal."""

import io

from gclf.progress import progress


def test_a_log_gets_a_line_every_n_items_and_at_the_end():
    log = io.StringIO()
    assert list(progress(range(7), "epoch 1/3", every=3, file=log)) == list(range(7))
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "epoch 1/3: 3/7 batch",
        "epoch 1/3: 6/7 batch",
        "epoch 1/3: 7/7 batch",
    ]
    assert all(line.endswith("batch/s)") for line in lines)


def test_a_terminal_gets_a_bar_not_lines():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    assert list(progress(range(5), "x", every=1, file=tty)) == list(range(5))
    assert "batch/s]" in tty.getvalue() and "batch/s)" not in tty.getvalue()  # a tqdm bar, no log lines
