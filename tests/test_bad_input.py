"""Every bad input gets one clear line naming the file and the field, exit code 2, and no traceback."""

from __future__ import annotations

import pytest

import unetgen
from unetgen.cli import main

PAPER = "depth: 5\nwidth: 64\n"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# (YAML text, the substrings the single error line must contain)
CASES = [
    ("dept: 5\n", ["bad.yaml", "dept", "unknown field", "did you mean 'depth'"]),
    ("depth: five\n", ["bad.yaml", "depth", "valid integer", "'five'"]),
    ("depth: 5.5\n", ["bad.yaml", "depth"]),
    ('depth: "5"\n', ["bad.yaml", "depth", "'5'"]),
    ("norm: batchnorm\n", ["bad.yaml", "norm", "got 'batchnorm'", "expected none, batch, instance, group or layer", "did you mean 'batch'"]),
    ("padding: vaild\n", ["padding", "did you mean 'valid'"]),
    ("upsampling: transposed\n", ["upsampling", "did you mean 'transpose'"]),
    ("width: 0\n", ["bad.yaml", "width", "greater than or equal to 1", "got 0"]),
    ("width: -64\n", ["width", "got -64"]),
    ("depth: 0\n", ["depth"]),
    ("depth: 40\n", ["depth", "less than or equal to 12"]),
    ("channels: [64, 128]\n", ["channels", "2 entries but depth is 5"]),
    ("width: 64\nchannels: [1, 2, 3, 4, 5]\n", ["channels", "not both"]),
    ("kernel_size: 4\n", ["kernel_size", "must be odd"]),
    ("input_size: [572]\n", ["input_size", "spatial_dims is 2"]),
    ("padding_mode: reflect\n", ["padding_mode", "no effect"]),
    ("interpolation: linear\n", ["interpolation", "upsample_conv"]),
    ("norm: group\nwidth: 4\n", ["norm_groups", "8 groups do not divide the widths 4"]),
    ("dropout: 0.5\n", ["dropout_at", "say where"]),
    ("- depth\n- 5\n", ["bad.yaml", "a mapping", "got a list"]),
    ("just text\n", ["bad.yaml", "a mapping", "got a str"]),
    ("", ["bad.yaml", "empty"]),
    ("depth: 5\ndepth: 4\n", ["bad.yaml:2", "duplicate key 'depth'", "line 1"]),
    ("!!python/object/apply:os.system ['echo hi']\n", ["bad.yaml", "not allowed", "python/object"]),
    ("depth: [5\n", ["bad.yaml", "invalid YAML"]),
    ("name: {a: 1}\n", ["name", "valid string"]),
    ("output: yes\n", ["output", "got 'yes'", "expected crop or same"]),
    ("conv_bias: yes\n", ["conv_bias", "'yes'"]),
    ("a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n", ["expands to", "aliases"]),
    ("[" * 5000 + "]" * 5000 + "\n", ["bad.yaml"]),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0][:24] for c in CASES])
def test_bad_spec_file(tmp_path, capsys, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    code, out, err = run_cli(capsys, "build", "bad.yaml")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for part in expected:
        assert part in lines[0], (part, lines[0])
    with pytest.raises(unetgen.SpecError):
        unetgen.load_spec(tmp_path / "bad.yaml")


def test_several_problems_give_one_line_each(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("dept: 5\nnorm: batchnorm\nwidth: 0\n")
    code, _, err = run_cli(capsys, "build", str(tmp_path / "bad.yaml"))
    assert code == 2
    assert len(err.strip().splitlines()) == 3


def test_missing_file_and_unknown_preset(tmp_path, capsys):
    code, _, err = run_cli(capsys, "build", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: no such file" in err
    code, _, err = run_cli(capsys, "build", "papr")
    assert code == 2 and "did you mean 'paper'" in err
    code, _, err = run_cli(capsys, "build", str(tmp_path))
    assert code == 2 and "directory" in err


def test_binary_file(tmp_path, capsys):
    (tmp_path / "junk.yaml").write_bytes(bytes(range(256)) * 4)
    code, _, err = run_cli(capsys, "build", str(tmp_path / "junk.yaml"))
    assert code == 2 and "junk.yaml" in err and len(err.strip().splitlines()) == 1


def test_yes_no_on_off_stay_strings():
    data = unetgen.spec.yaml_loader.parse_yaml("a: yes\nb: off\nc: on\nd: no\ne: true\nf: false\n")
    assert data == {"a": "yes", "b": "off", "c": "on", "d": "no", "e": True, "f": False}


def test_size_the_network_cannot_take(capsys):
    code, out, err = run_cli(capsys, "build", "paper", "--input-size", "571", "572")
    assert code == 2 and out == ""
    assert err.strip() == (
        "unetgen: error: input 571×572: height: encoder.1 max-pools an odd size (567); nearest valid sizes: 556, 572 "
        "(valid sizes: 188+16k (188, 204, 220, ...); or set output: same)"
    )
    code, _, err = run_cli(capsys, "build", "paper", "--input-size", "572")
    assert code == 2 and "gives 1 size for a 2D network" in err


def test_depth_too_large_for_the_input(capsys, tmp_path):
    (tmp_path / "deep.yaml").write_text("depth: 8\ninput_size: [300, 300]\n")
    code, _, err = run_cli(capsys, "build", str(tmp_path / "deep.yaml"))
    assert code == 2
    assert "the spec's input_size 300×300" in err and "nearest valid sizes" in err


def test_replace_validates_again(paper_spec):
    with pytest.raises(unetgen.SpecError, match="norm: got 'batchnorm'"):
        paper_spec.replace(norm="batchnorm")
    with pytest.raises(unetgen.SpecError, match="nope: unknown field"):
        paper_spec.replace(nope=1)


def test_internal_error_is_exit_1_without_traceback(capsys, monkeypatch):
    import unetgen.cli as cli

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "make_plan", broken)
    code, _, err = run_cli(capsys, "build", "paper")
    assert code == 1 and "internal error" in err and "Traceback" not in err
    with pytest.raises(RuntimeError):
        main(["--debug", "build", "paper"])
