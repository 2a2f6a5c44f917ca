from pathlib import Path

import pytest

from vbg.config import Settings, load_settings, parse_color, parse_size, read_config
from vbg.errors import VbgError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_default_config_file_states_the_builtin_defaults():
    written = read_config(CONFIGS / "default.toml")
    defaults = Settings()
    assert written, "configs/default.toml is empty"
    for key, value in written.items():
        assert getattr(defaults, key) == value, key


@pytest.mark.parametrize("name", ["default.toml", "meeting.toml", "obs.toml"])
def test_shipped_configs_load(name):
    settings = load_settings(CONFIGS / name)
    assert settings.mode in ("blur", "image", "color", "passthrough")


def test_meeting_blurs_and_obs_serves_the_browser_source():
    assert load_settings(CONFIGS / "meeting.toml").mode == "blur"
    obs = load_settings(CONFIGS / "obs.toml")
    assert (obs.serve, obs.port, obs.output, obs.host) == (True, 8765, "null", "127.0.0.1")
    assert parse_color(Settings().color) == (0x40, 0xB1, 0x00)


def test_command_line_overrides_the_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('mode = "color"\ncolor = "#ff0000"\nmirror = true\n')
    settings = load_settings(config, color="#0000ff", mirror=None)
    assert settings.color == "#0000ff"
    assert settings.mirror is True  # None means "not given on the command line"


def test_background_path_is_relative_to_the_config_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('background = "beach.jpg"\n')
    settings = load_settings(config)
    assert settings.mode == "image"
    assert Path(settings.background) == tmp_path / "beach.jpg"


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("blurr = 3\n")
    with pytest.raises(VbgError, match=r"unknown setting 'blurr': did you mean 'blur'\?"):
        load_settings(config)


@pytest.mark.parametrize("key, value, allowed", [
    ("mode", '"sepia"', "one of blur, image, color, passthrough"),
    ("blur", "500", "a number from 1 to 100"),
    ("mirror", '"yes"', "true or false"),
    ("color", '"red"', "#RRGGBB"),
    ("size", '"big"', "WIDTHxHEIGHT"),
    ("matte_size", "1.5", "an integer"),
])
def test_bad_value_names_key_and_what_is_allowed(tmp_path, key, value, allowed):
    config = tmp_path / "c.toml"
    config.write_text(f"{key} = {value}\n")
    with pytest.raises(VbgError) as error:
        load_settings(config)
    assert f"setting '{key}'" in str(error.value) and allowed in str(error.value)


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(VbgError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("mode = \n")
    with pytest.raises(VbgError, match="not valid TOML"):
        load_settings(broken)


def test_colour_and_size_parsing():
    assert parse_color("#FF8000") == (0, 0x80, 0xFF)
    assert parse_color("00b140") == (0x40, 0xB1, 0x00)
    with pytest.raises(VbgError, match="bad colour 'green'"):
        parse_color("green")
    assert parse_size("1280x720", "--size") == (1280, 720)
    with pytest.raises(VbgError, match="--size must look like"):
        parse_size("1280", "--size")


@pytest.mark.parametrize("text, fragment", [
    ("blur = 1" + "0" * 400, "setting 'blur' must be a number from 1 to 100 (got 1000"),
    ("port = " + "9" * 400, "setting 'port' must be an integer from 1 to 65535"),
    ("blur = " + "[" * 5000 + "]" * 5000, "nests too deeply"),
    ('color = "#00b14"', "setting 'color' must be a colour '#RRGGBB'"),
])
def test_a_config_file_with_values_out_of_range_is_one_line_at_start(capsys, tmp_path, text, fragment):
    from vbg.cli import main

    config = tmp_path / "bad.toml"
    config.write_text(text + "\n")
    assert main(["--config", str(config), "--mode", "passthrough", "--output", "null", "--frames", "1"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and len(lines[0]) < 400, lines


def test_colours_are_normalised():
    for given in (" 00b140 ", "\t#00B140\n", "#00b140"):
        assert Settings().replace(color=given).color == "#00b140"
    assert load_settings(color="FF0000").color == "#ff0000"
