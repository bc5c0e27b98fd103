"""The stage scripts' shared runner: validated params in, one line and exit code 2 for a user's mistake."""

import pytest

from gclf.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError
from gclf.params import Params
from gclf.stage import run_stage


def test_run_stage_passes_validated_params(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 7\n")
    seen = []
    run_stage(seen.append, str(tmp_path / "params.yaml"))
    assert isinstance(seen[0], Params) and seen[0].seed == 7


@pytest.mark.parametrize(
    "raised, message",
    [
        (UserError("data/raw: no such folder"), "error: data/raw: no such folder\n"),
    ],
)
def test_run_stage_turns_a_user_error_into_one_line_and_exit_code_2(tmp_path, capsys, raised, message):
    (tmp_path / "params.yaml").write_text("{}\n")

    def main(p):
        raise raised

    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, str(tmp_path / "params.yaml"))
    assert exit_info.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == message


def test_a_bad_params_file_stops_before_the_stage_runs(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("seed: [1\n")
    with pytest.raises(SystemExit):
        run_stage(lambda p: pytest.fail("ran with bad params"), str(tmp_path / "params.yaml"))
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize(
    "state, kept",
    [
        (".cache/train_phase2.state.pt", "kept in .cache/train_phase2.state.pt; the next `dvc repro` resumes from it"),
        (None, "nothing is kept to resume from; the next `dvc repro` runs this stage again"),
    ],
)
def test_ctrl_c_exits_130_saying_what_was_kept(tmp_path, capsys, state, kept):
    (tmp_path / "params.yaml").write_text("{}\n")

    def main(p):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, str(tmp_path / "params.yaml"), state=state)
    assert exit_info.value.code == EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted: ") and err.strip().endswith(kept) and len(err.splitlines()) == 1
