"""Scripts report bad input in one line and never write into a work directory they must not.

* `emojax.workdir.main_errors` / `run_main`: a named user error (a bad workdir, checkpoint,
  dataset, config, missing file, an `emojax.validate` check) prints `error: <message>` and
  exits 2; any other exception (a plain `ValueError` of the script, a `RuntimeError`) keeps
  its traceback.
* The scripts, as subprocesses on the smoke config (seconds each: every case fails before a
  model is built or loaded): an unknown config variant; another config into a sweep workdir
  (refused, every old file byte-identical; the script's flags count as config); a truncated
  `model.safetensors` and an invalid `config.json` (named, nothing written, and with
  `--overwrite` nothing moved aside either); a typo in the second axis checkpoint of the
  break-point job.
* Config errors of every script in scripts/ (a mistyped key, a wrong type, a missing `.py`,
  a missing file, a directory): one `error:` line and exit 2, raised while the flags are
  parsed, before any model work. They run in-process, each script imported afresh and its
  flags parsed by `workdir._parse_flags` (what `run_main` calls), because a subprocess costs
  2-5 s of imports per run and 12 scripts x 3 cases would take minutes on 2 cores; the
  in-process path is the same code, `sys.argv` included (ml_collections reads the overrides
  from it when the flag is defined). Subprocesses check a representative subset end to end
  (`run_main`'s exit status and stderr): a config script run from another directory with a
  mistyped key (which proves the default config resolves there), `plan.py` with a missing
  `.py`, a script without a config with a bad type, and the unknown variant above.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from absl import flags

import emojax
from configs.zoo import get_config
from emojax import pipeline, sweep, validate, workdir
from emojax.breakpoint import DialError
from emojax.concepts.schema import DatasetError
from emojax.models import ModelFetchError

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
        "vocab_size": 64}  # fmt: skip


def _fails_with(main, capsys) -> str:
    """Runs `main_errors(main)`; asserts exit status 2 and one stderr line; returns it."""
    with pytest.raises(SystemExit) as exit_info:
        workdir.main_errors(main)([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith("\n") and err.count("\n") == 1, err
    return err.rstrip("\n")


def _raise(error: BaseException):
    def main(argv):
        del argv
        raise error

    return main


def _noted(error: BaseException) -> BaseException:
    error.add_note("axis checkpoint 2 of 2 ('instruct'), checked before any work")
    return error


@pytest.mark.parametrize(
    "error, line",
    [
        (workdir.WorkdirError("work directory /w holds another config"),
         "error: work directory /w holds another config"),
        (emojax.CheckpointError("/c/model.safetensors is not a readable safetensors file"),
         "error: /c/model.safetensors is not a readable safetensors file"),
        (emojax.ConfigError("/c/config.json is not valid JSON"),
         "error: /c/config.json is not valid JSON"),
        (DatasetError("/d/contrast_fear.csv", 3, "missing field 'positive'"),
         "error: /d/contrast_fear.csv:3: missing field 'positive'"),
        (DialError("dial ends differ in num_layers"), "error: dial ends differ in num_layers"),
        (ModelFetchError("smollm2 is not cached\nand the registry is unreachable"),
         "error: smollm2 is not cached and the registry is unreachable"),
        (_noted(FileNotFoundError("'/ckpt/instrct' is neither a local checkpoint directory")),
         "error: '/ckpt/instrct' is neither a local checkpoint directory (axis checkpoint 2 of "
         "2 ('instruct'), checked before any work)"),
    ],
)  # fmt: skip
def test_named_user_errors_print_one_line_and_exit_2(error, line, capsys):
    assert _fails_with(_raise(error), capsys) == line


def test_validate_checks_are_user_errors(capsys):
    def main(argv):
        validate.check_tokens(np.array([[1, 130]], np.int32), 128)

    assert _fails_with(main, capsys) == (
        "error: tokens[0, 1] = 130 is not a token id of this model (vocab_size 128)"
    )

    def float_tokens(argv):
        validate.check_tokens(np.zeros((1, 2), np.float32), 128)

    assert _fails_with(float_tokens, capsys).startswith("error: tokens must have an integer")


def test_config_checks_of_the_stages_are_user_errors(capsys):
    def bad_sweep_settings(argv):
        sweep._resolve_config({"num_random": 3, "joint_random": 4})

    assert _fails_with(bad_sweep_settings, capsys) == ("error: joint_random=4 exceeds num_random=3")

    def bad_axis(argv):
        cfg = get_config("smoke")
        cfg.breakpoint.axis = "diagonal"
        pipeline.axis_checkpoints(cfg)

    assert _fails_with(bad_axis, capsys) == (
        "error: breakpoint.axis must be 'models' or 'dial', not 'diagonal'"
    )


_NO_SWEEP = types.SimpleNamespace(arrays={}, meta={})


def test_a_value_error_elsewhere_in_a_checking_module_is_a_bug(capsys):
    """Only the listed check functions count: another function of emojax.sweep raising the
    same ValueError type keeps its traceback."""
    with pytest.raises(ValueError, match="failure_type must be one of"):
        workdir.main_errors(lambda argv: sweep.joint_arms(_NO_SWEEP, 0, "nope"))([])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug in the script, not a check"),  # same type as a check, raised elsewhere
        TypeError("unsupported operand"),
        RuntimeError("boom"),
        KeyError("missing"),
    ],
)
def test_other_exceptions_propagate_with_their_traceback(error, capsys):
    with pytest.raises(type(error)) as info:
        workdir.main_errors(_raise(error))([])
    assert info.value is error
    assert capsys.readouterr().err == ""
    assert not workdir.is_user_error(error)


def test_flag_error_line_keeps_the_flag_and_the_exception_of_a_config_traceback():
    message = (
        "flag --config=configs/zoo.py:smok: Error whilst parsing config file:\n\n"
        "Traceback (most recent call last):\n"
        '  File "configs/zoo.py", line 23, in get_config\n'
        "    raise ValueError(\n"
        "ValueError: unknown configs/zoo.py variant 'smok': valid are 'smoke'\n"
    )
    assert workdir.flag_error_line(message) == (
        "flag --config=configs/zoo.py:smok: ValueError: unknown configs/zoo.py variant 'smok': "
        "valid are 'smoke'"
    )
    plain = "flag --seeds=x: invalid literal for int() with base 10: 'x'"
    assert workdir.flag_error_line(plain) == plain


def _run(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a refused run (exit 2, no traceback)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [s for s in proc.stderr.splitlines() if s.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _hashes(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_run_main_keeps_the_traceback_of_a_bug(tmp_path):
    program = (
        "from emojax import workdir\n"
        "def main(argv):\n"
        "    raise RuntimeError('a bug')\n"
        "workdir.run_main(main)\n"
    )
    (tmp_path / "prog.py").write_text(program)
    bug = subprocess.run([sys.executable, str(tmp_path / "prog.py")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bug.returncode == 1
    assert "Traceback (most recent call last)" in bug.stderr and "RuntimeError: a bug" in bug.stderr
    assert "error: " not in bug.stderr
    # (the user-error branch of run_main: every script test below)


def test_unknown_config_variant_is_one_line(tmp_path):
    proc = _run("scripts/breakpoint.py", "--config=configs/zoo.py:smok", f"--workdir={tmp_path}/w")
    assert _error_line(proc) == (
        "error: flag --config=configs/zoo.py:smok: ValueError: unknown configs/zoo.py variant "
        "'smok': valid are '' (the default), 'smoke', 'validation'"
    )
    assert not (tmp_path / "w").exists()


def _finished_sweep_workdir(path: pathlib.Path, **overrides) -> dict[str, str]:
    """A workdir holding a (stand-in) sweep of the smoke config: run.json and outputs."""
    cfg = get_config("smoke")
    for key, value in overrides.items():
        section, field = key.split(".")
        cfg[section][field] = value
    state = workdir.check_workdir(
        str(path), workdir.script_config(cfg, "sweep", model="instruct", vectors="")
    )
    assert state.action == "fresh"
    workdir.start_run(state)
    (path / "report.md").write_text("# Steering sweep: instruct\n")
    (path / "steerability.csv").write_text("layer,vector,slope\n1,fear,0.5\n")
    return _hashes(path)


def test_sweep_refuses_another_config_before_writing_anything(tmp_path):
    before = _finished_sweep_workdir(tmp_path / "w")
    proc = _run("scripts/sweep.py", "--config=configs/zoo.py:smoke", "--model=instruct",
                "--config.sweep.num_random=3", f"--workdir={tmp_path}/w")  # fmt: skip
    line = _error_line(proc)
    assert "differing keys: sweep.num_random: " in line and "-> 3" in line, line
    assert "--overwrite" in line
    assert _hashes(tmp_path / "w") == before  # byte-identical, nothing added or moved


def test_the_scripts_flags_are_part_of_the_config(tmp_path):
    """`script_config`: the same config with another --model is another run (refused, naming
    `script.model`); the same flags resume."""
    _finished_sweep_workdir(tmp_path / "w")
    cfg = get_config("smoke")
    same = workdir.script_config(cfg, "sweep", model="instruct", vectors="")
    assert workdir.check_workdir(str(tmp_path / "w"), same).action == "resume"
    other = workdir.script_config(cfg, "sweep", model="base", vectors="")
    with pytest.raises(workdir.WorkdirError, match='script.model: "instruct" -> "base"'):
        workdir.check_workdir(str(tmp_path / "w"), other)
    probes = workdir.script_config(cfg, "probes", model="instruct", vectors="")
    with pytest.raises(workdir.WorkdirError, match='script.name: "sweep" -> "probes"'):
        workdir.check_workdir(str(tmp_path / "w"), probes)


def _tiny_checkpoint(path: pathlib.Path) -> pathlib.Path:
    config = emojax.ModelConfig.from_hf_dict(TINY)
    emojax.save_pretrained(emojax.init_params(config, jax.random.PRNGKey(0)), config, str(path))
    (path / "tokenizer_config.json").write_text("{}")  # a placeholder: preflight wants one
    return path


def test_truncated_safetensors_is_named_and_nothing_is_written(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    proc = _run("scripts/extract_vectors.py", "--config=configs/zoo.py:smoke",
                f"--model={ckpt}", f"--workdir={tmp_path}/w")  # fmt: skip
    line = _error_line(proc)
    assert line.startswith(f"error: {weights} is not a readable safetensors file"), line
    assert "corrupt or truncated" in line
    assert not (tmp_path / "w").exists()


def test_invalid_config_json_is_named_and_overwrite_moves_nothing(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    (ckpt / "config.json").write_text('{"model_type": "llama",')
    before = _finished_sweep_workdir(tmp_path / "w")  # another script's outputs
    proc = _run("scripts/probes.py", "--config=configs/zoo.py:smoke", f"--model={ckpt}",
                f"--workdir={tmp_path}/w", "--overwrite")  # fmt: skip
    line = _error_line(proc)
    assert line.startswith(f"error: {ckpt / 'config.json'} is not valid JSON"), line
    assert _hashes(tmp_path / "w") == before  # checked before the old outputs move aside


def test_typo_in_the_second_axis_checkpoint_fails_before_any_work(tmp_path):
    proc = _run(
        "scripts/breakpoint.py",
        "--config=configs/zoo.py:smoke",
        f"--config.breakpoint.models=('{_tiny_checkpoint(tmp_path / 'a')}', '/ckpt/instrct')",
        "--config.breakpoint.labels=('base', 'instruct')",
        f"--workdir={tmp_path}/w",
    )
    line = _error_line(proc)
    assert "'/ckpt/instrct' is neither a local checkpoint directory" in line, line
    assert line.endswith("(axis checkpoint 2 of 2 ('/ckpt/instrct'), checked before any work)")
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------------------------------------
# config errors of every script, at flag parsing

CONFIG_SCRIPTS = (
    "breakpoint", "build_zoo", "calibrate", "extract_vectors", "plan", "probes", "sweep",
)  # fmt: skip
# Scripts without a config file: (a mistyped flag, a flag of the wrong type).
OWN_FLAGS = {
    "bench": ("--num_prompt=8", "--reps=abc"),
    "bench_finetune": ("--batches=3", "--batch=abc"),
    "bench_forward": ("--iter=3", "--iters=abc"),
    "bench_gguf": ("--repeat=3", "--batch=abc"),
    "refusal_responses": ("--limits=3", "--limit=abc"),
    "tune_safety": ("--step=3", "--steps=abc"),
}
MISTYPED_KEY, WRONG_TYPE = "--config.breakpoint.alpha=1", "--config.sweep.num_random=abc"
MISSING_PY = "--config=configs/smollm2"


def test_every_script_is_covered():
    scripts = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))
    assert scripts == sorted((*CONFIG_SCRIPTS, *OWN_FLAGS))
    for name in scripts:  # each goes through run_main: the parse errors below reach the user
        assert "run_main(main)" in (ROOT / "scripts" / f"{name}.py").read_text()


def _parse(script: str, args, monkeypatch) -> dict | None:
    """Imports scripts/<script>.py afresh with `sys.argv` = [script, *args] (its flags are
    defined at import), parses its flags as `run_main` does and returns its parsed config
    (None for a script without one); its flags are removed after."""
    path = ROOT / "scripts" / f"{script}.py"
    argv = [str(path), *args]
    before, was_parsed = set(flags.FLAGS), flags.FLAGS.is_parsed()
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "path", list(sys.path))  # two scripts prepend the repository
    try:
        spec = importlib.util.spec_from_file_location(f"_script_{script}", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        workdir._parse_flags(argv)
        return flags.FLAGS["config"].value.to_dict() if "config" in flags.FLAGS else None
    finally:
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)
        if not was_parsed:
            flags.FLAGS.unparse_flags()


def _parse_error(script: str, args, monkeypatch, capsys) -> str:
    """The one `error:` line of a refused parse (exit 2, nothing else on stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        _parse(script, args, monkeypatch)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    return err.rstrip("\n")


@pytest.mark.parametrize("script", CONFIG_SCRIPTS)
def test_config_errors_of_every_config_script_are_one_line(script, monkeypatch, capsys):
    # A mistyped key: with the default config (met when the flag is defined, at import) and
    # with an explicit one (met when the flags are parsed).
    line = _parse_error(script, [MISTYPED_KEY], monkeypatch, capsys)
    assert line == (
        "error: flag --config.breakpoint.alpha: section 'breakpoint' has no key 'alpha' "
        "(did you mean 'breakpoint.alphas'?)"
    )
    smoke = "--config=configs/zoo.py:smoke"
    assert _parse_error(script, [smoke, MISTYPED_KEY], monkeypatch, capsys) == line
    line = _parse_error(script, ["--config.zoo.scenaro=null"], monkeypatch, capsys)
    assert "section 'zoo' has no key 'scenaro' (did you mean 'zoo.scenario'?)" in line
    line = _parse_error(script, ["--config.sweep.vectors.x=1"], monkeypatch, capsys)
    assert line == "error: flag --config.sweep.vectors.x: 'sweep.vectors' is None, not a " \
        "section of the config"  # fmt: skip
    assert _parse_error(script, [WRONG_TYPE], monkeypatch, capsys) == (
        "error: flag --config.sweep.num_random=abc: invalid literal for int() with base 10: 'abc'"
    )
    assert _parse_error(script, [MISSING_PY], monkeypatch, capsys) == (
        f"error: flag --config=configs/smollm2: config file 'configs/smollm2' does not exist "
        f"(relative to {ROOT}); did you mean configs/smollm2.py?"
    )
    line = _parse_error(script, ["--config=configs/smollm2:smoke"], monkeypatch, capsys)
    assert line.endswith("did you mean configs/smollm2.py:smoke?")
    assert _parse_error(script, ["--config=/no/such/dir/c.py"], monkeypatch, capsys) == (
        "error: flag --config=/no/such/dir/c.py: config file '/no/such/dir/c.py' does not exist"
    )
    assert _parse_error(script, ["--config=configs"], monkeypatch, capsys) == (
        "error: flag --config=configs: config file 'configs' is a directory, not a config file"
    )
    assert "unknown configs/zoo.py variant 'smok'" in _parse_error(
        script, ["--config=configs/zoo.py:smok"], monkeypatch, capsys
    )


@pytest.mark.parametrize("script", sorted(OWN_FLAGS))
def test_flag_errors_of_every_other_script_are_one_line(script, monkeypatch, capsys):
    mistyped, wrong_type = OWN_FLAGS[script]
    name = mistyped[2:].split("=")[0]
    line = _parse_error(script, [mistyped], monkeypatch, capsys)
    assert line.startswith(f"error: Unknown command line flag '{name}'"), line
    line = _parse_error(script, [wrong_type], monkeypatch, capsys)
    assert line == f"error: flag {wrong_type}: invalid literal for int() with base 10: 'abc'"
    for args in ([MISTYPED_KEY], [MISSING_PY]):  # these scripts take no config
        name = args[0][2:].split("=")[0]
        line = _parse_error(script, args, monkeypatch, capsys)
        assert line.startswith(f"error: Unknown command line flag '{name}'"), line


@pytest.mark.parametrize("script", CONFIG_SCRIPTS)
def test_the_default_config_resolves_from_another_directory(script, tmp_path, monkeypatch):
    from configs.zoo import get_config as zoo_config

    monkeypatch.chdir(tmp_path)
    want = zoo_config("").to_dict()
    want["sweep"]["num_random"] = 3
    assert _parse(script, ["--config.sweep.num_random=3"], monkeypatch) == want


def test_a_bug_in_a_config_file_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    (tmp_path / "buggy.py").write_text("def get_config(arg=''):\n    return {}['oops']\n")
    with pytest.raises(KeyError, match="oops"):
        _parse("sweep", [f"--config={tmp_path / 'buggy.py'}"], monkeypatch)
    assert capsys.readouterr().err == ""


def test_script_from_another_directory_mistyped_key(tmp_path):
    """The default config is found from /tmp/...: the error is about the key, not the file."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sweep.py"), MISTYPED_KEY],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )  # fmt: skip
    assert _error_line(proc) == (
        "error: flag --config.breakpoint.alpha: section 'breakpoint' has no key 'alpha' "
        "(did you mean 'breakpoint.alphas'?)"
    )
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_plan_with_a_missing_py_is_one_line():
    line = _error_line(_run("scripts/plan.py", MISSING_PY))
    assert line == (
        f"error: flag --config=configs/smollm2: config file 'configs/smollm2' does not exist "
        f"(relative to {ROOT}); did you mean configs/smollm2.py?"
    )


def test_script_without_a_config_wrong_type_is_one_line():
    line = _error_line(_run("scripts/bench_forward.py", "--iters=abc"))
    assert line == "error: flag --iters=abc: invalid literal for int() with base 10: 'abc'"
