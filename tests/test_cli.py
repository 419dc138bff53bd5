import subprocess
import sys

from typer.testing import CliRunner

from cornernet_cli import __version__
from cornernet_cli.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "models" in result.output


def test_every_command_has_help():
    import typer.main

    group = typer.main.get_command(app)
    names = list(group.commands)
    assert names
    for name in names:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_models_lists_presets():
    result = runner.invoke(app, ["models", "--num-classes", "80"])
    assert result.exit_code == 0
    assert "201,035,212" in result.output and "tiny" in result.output


def test_console_script_user_error_is_one_line(tmp_path):
    """The real entry point turns a CornerNetError into one line and exit code 1 (no traceback)."""
    code = (
        "import sys; sys.argv=['cornernet','models']\n"
        "from cornernet_cli import cli\n"
        "from cornernet_cli.errors import CornerNetError\n"
        "def boom(**kw): raise CornerNetError('bad thing in /x/y.json: value 3')\n"
        "cli.app = boom\n"
        "cli.main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: bad thing in /x/y.json: value 3"
    assert "Traceback" not in proc.stderr


def test_number_lists_reject_nan_inf_and_non_positive():
    import pytest

    from cornernet_cli.cli import _parse_floats
    from cornernet_cli.errors import CornerNetError

    assert _parse_floats("0.5, 1,1.5", "--scales") == (0.5, 1.0, 1.5)
    for bad in ("nan", "1,inf", "-1", "0", "x", ""):
        with pytest.raises(CornerNetError, match="--scales"):
            _parse_floats(bad, "--scales")


def test_library_errors_name_parameters_and_the_command_line_names_flags(tmp_path):
    """A library error names the parameters (`source`, `strict`); the command prints the flags that set them,
    exit code unchanged. Words that are not the error's parameters, and quoted values, stay as they are."""
    import pytest

    from cornernet_cli.data.convert import prepare_data
    from cornernet_cli.errors import CornerNetError
    from tests.test_reliability import run_cli

    with pytest.raises(CornerNetError, match=r"^source \S*nope does not exist$") as e:
        prepare_data(format="coco", source=tmp_path / "nope", out=tmp_path / "p")
    assert e.value.params == ("source",) and e.value.exit_code == 1
    code, _, err = run_cli("prepare-data", "--format", "coco", "--source", tmp_path / "nope", "--out", tmp_path / "p")
    assert code == 1 and f"--source {tmp_path / 'nope'} does not exist" in err

    from cornernet_cli.cli.common import _flag_errors

    with pytest.raises(CornerNetError) as e, _flag_errors("amp"):
        raise CornerNetError("fix the data, then resume continues ('resume' stays); amp is not named", 1,
                             params=("resume",))
    assert str(e.value) == "fix the data, then --resume continues ('resume' stays); amp is not named"
    assert e.value.exit_code == 1
