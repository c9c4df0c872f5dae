"""Secrets never reach the run folder, yet case ids and resumed programs see the real values."""

from __future__ import annotations

import json
import shutil

from runhelpers import PY, harness, last_line, results_by_name, write_suite

from harness import store
from harness.suite import expand, validate_data

HF = "hf_" + "A1b2C3d4E5f6G7h8I9j0K1l2"
SK = "sk-" + "proj0123456789abcdefXYZ"
AKIA = "AKIA" + "ABCDEFGHIJKLMNOP"


def test_secret_names_are_words_not_substrings():
    for name in ("HF_TOKEN", "GITHUB_TOKEN", "OPENAI_API_KEY", "MY_KEY", "AWS_SECRET_ACCESS_KEY"):
        assert store.is_secret_name(name), name
    for name in ("DB_PASSWORD", "CLIENT_SECRET_FILE", "AWS_ACCESS_KEY_ID", "TOKEN", "PASSWD"):
        assert store.is_secret_name(name), name
    for name in ("TOKENIZERS_PARALLELISM", "KEYBOARD", "MONKEY_COUNT", "HF_HUB_OFFLINE", "PATH"):
        assert not store.is_secret_name(name), name


def test_an_unrelated_setting_masks_nothing(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("SOME_TOKEN", "true")  # a setting under a secret name: never by value
    data = {"trust_remote_code": "false", "flags": ["--verbose", "true"]}
    assert store.sanitise(data) == data
    assert store.sanitise_text("edge: false, tiny: true") == "edge: false, tiny: true"


def test_options_token_shapes_and_urls_are_masked(monkeypatch):
    run = [PY, "x.py", "--token", "abcdef-123", "--api-key=zz-secret-99", "--password", "pw0rd!"]
    clean = store.sanitise({"run": run, "note": f"also {HF} {SK} {AKIA} https://u:p4ss@h.io/x"})
    assert clean["run"] == [PY, "x.py", "--token", "***", "--api-key=***", "--password", "***"]
    assert clean["note"] == "also *** *** *** https://***@h.io/x"
    # a value found under a secret option is masked wherever else the same object holds it
    leaked = store.sanitise({"run": ["--token", "abcdef-123"], "log": "got abcdef-123"})
    assert leaked["log"] == "got ***"


def test_case_ids_do_not_depend_on_the_environment(tmp_path, monkeypatch):
    data = {
        "name": "ids",
        "carbon": {"intensity_g_per_kwh": 100},
        "hardware": [{"name": "cpu"}],
        "workloads": [
            {"type": "command", "name": "c", "run": [PY, "-c", "print(1)", "false", "verysecret"]}
        ],
    }
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    monkeypatch.delenv("MY_TOKEN", raising=False)
    before = expand(validate_data(data))[0]["case_id"]
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("MY_TOKEN", "verysecret")
    assert expand(validate_data(data))[0]["case_id"] == before


def _leaky_suite(tmp_path, log):
    code = (
        "import os, sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + ' ' + "
        "os.environ['SERVICE_TOKEN'] + chr(10)); "
        "print(' '.join(sys.argv), os.environ['SERVICE_TOKEN'])"
    )
    return write_suite(
        tmp_path,
        [
            {
                "type": "command",
                "name": "leaky",
                "run": [PY, "-c", code, str(log), "--token", "argtok-4242", f"--x={HF}"],
                "env": {"SERVICE_TOKEN": "envtok-7777", "PLAIN": "false"},
            },
            {
                "type": "command",
                "name": "fails-once",
                "run": [
                    PY,
                    "-c",
                    "import os,sys; p=sys.argv[1]; "
                    "sys.exit(0) if os.path.exists(p) else (open(p,'w'), sys.exit(5))",
                    str(tmp_path / "flag"),
                ],
            },
        ],
    )


def _assert_clean(run_dir, forbidden):
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) >= 8
    for path in files:
        raw = path.read_bytes()
        for secret in forbidden:
            assert secret.encode() not in raw, (path, secret)


def test_options_suite_env_and_token_shapes_never_reach_the_run_folder(tmp_path):
    log = tmp_path / "seen.txt"
    suite = _leaky_suite(tmp_path, log)
    proc = harness(
        ["run", str(suite), "--out", "res", "--no-report"], tmp_path, TOKENIZERS_PARALLELISM="false"
    )
    assert proc.returncode == 1, proc.stderr
    run_dir = tmp_path / last_line(proc.stdout)
    assert log.read_text() == f"--token argtok-4242 --x={HF} envtok-7777\n"
    _assert_clean(run_dir, ["argtok-4242", "envtok-7777", HF])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    env = manifest["suite"]["workloads"][0]["env"]
    assert env == {"SERVICE_TOKEN": "***", "PLAIN": "false"}  # "false" is not a secret
    leaky = results_by_name(run_dir)["cpu/leaky"]
    out = (run_dir / "cases" / leaky["case_id"] / "output.log").read_text()
    assert "--token *** --x=*** ***" in out


def test_resume_gets_real_values_from_the_environment_when_the_suite_file_is_gone(tmp_path):
    log = tmp_path / "seen.txt"
    suite = _leaky_suite(tmp_path, log)
    proc = harness(["run", str(suite), "--out", "res", "--no-report"], tmp_path)
    assert proc.returncode == 1
    run_dir = tmp_path / last_line(proc.stdout)
    ids = sorted(p.name for p in (run_dir / "cases").iterdir())
    # the leaky case failed once more and must run again on resume: make it fail
    leaky = next(r for r in results_by_name(run_dir).values() if r["case"] == "cpu/leaky")
    (run_dir / "cases" / leaky["case_id"] / "result.json").write_text("{")
    kept = tmp_path / "kept"
    kept.mkdir()
    shutil.move(str(suite), kept / suite.name)
    # the option's value is masked in the manifest and the suite file is gone: refused, one line
    proc = harness(["run", "--resume", str(run_dir), "--no-report"], tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot resume" in proc.stderr and "workloads.0.run" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert log.read_text().count("\n") == 1  # nothing ran with ***
    # with the suite file back (or unchanged), the real values come from it
    shutil.move(str(kept / suite.name), suite)
    proc = harness(["run", "--resume", str(run_dir), "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert log.read_text().splitlines()[-1] == f"--token argtok-4242 --x={HF} envtok-7777"
    assert sorted(p.name for p in (run_dir / "cases").iterdir()) == ids  # same case ids
    _assert_clean(run_dir, ["argtok-4242", "envtok-7777", HF])


def test_resume_takes_a_masked_env_value_from_the_environment(tmp_path):
    log = tmp_path / "seen.txt"
    code = "import os,sys; open(sys.argv[1],'a').write(os.environ['API_TOKEN'] + chr(10)); sys.exit(int(os.path.exists(sys.argv[2])))"
    flag = tmp_path / "fail"
    flag.write_text("")
    suite = write_suite(
        tmp_path,
        [
            {
                "type": "command",
                "name": "needs-token",
                "run": [PY, "-c", code, str(log), str(flag)],
                "env": {"API_TOKEN": "real-token-value"},
            }
        ],
    )
    proc = harness(["run", str(suite), "--out", "res", "--no-report"], tmp_path)
    assert proc.returncode == 1
    run_dir = tmp_path / last_line(proc.stdout)
    suite.unlink()
    flag.unlink()
    proc = harness(["run", "--resume", str(run_dir), "--no-report"], tmp_path)
    assert proc.returncode == 2 and "workloads.0.env.API_TOKEN" in proc.stderr
    proc = harness(
        ["run", "--resume", str(run_dir), "--no-report"], tmp_path, API_TOKEN="real-token-value"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert log.read_text().splitlines() == ["real-token-value", "real-token-value"]
