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
