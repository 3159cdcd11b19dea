"""The project's own environment (taskyard.envs): cache key, atomic creation, shadowing order.

Environments are made for real: ``python -m venv`` and pip installing from PyPI. ``six`` is
the probe: taskyard's environment has 1.17.0, the projects here pin 1.16.0.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskyard import envs
from taskyard.errors import StepError

PIN = "six==1.16.0"
SCRIPT = "tabulate==0.9.0"  # not in taskyard's environment; installs a console script
BASE = envs.Base(prefix="/opt/taskyard", site_dirs=("/opt/taskyard/lib/site-packages",))


def make_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def reqs_of(root: Path) -> envs.Requirements:
    found = envs.find_requirements(root)
    assert found is not None
    return found


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(envs.SWITCH, raising=False)
    monkeypatch.delenv(envs.ACTIVE, raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One real env for the tests that only look at it: (project root, env folder)."""
    tmp = tmp_path_factory.mktemp("built")
    project = make_project(tmp / "proj", {"requirements.txt": f"{PIN}\n{SCRIPT}\npytest>=8\n"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASKYARD_HOME", str(tmp / "home"))
        mp.delenv(envs.SWITCH, raising=False)
        py = envs.ensure(project)
    assert py is not None
    return project, py.parent.parent


# ---- requirements and the cache key ------------------------------------------------------------
def test_requirement_lines_drop_comments_and_join_continuations() -> None:
    text = "# pins\nsix==1.16.0  # old on purpose\n\npandas>=2 \\\n  ; python_version>'3'\n"
    assert envs.requirement_lines(text) == ["six==1.16.0", "pandas>=2 ; python_version>'3'"]


def test_requirements_txt_wins_over_pyproject(tmp_path: Path) -> None:
    root = make_project(
        tmp_path,
        {
            "requirements.txt": f"{PIN}\n",
            "pyproject.toml": '[project]\nname = "p"\ndependencies = ["tabulate"]\n',
        },
    )
    assert reqs_of(root).label == "requirements.txt"
    assert reqs_of(root).lines == (PIN,)


def test_pyproject_dependencies_and_projects_without_any(tmp_path: Path) -> None:
    with_deps = make_project(
        tmp_path / "a", {"pyproject.toml": f'[project]\nname = "a"\ndependencies = ["{PIN}"]\n'}
    )
    assert reqs_of(with_deps).lines == (PIN,)
    no_deps = make_project(tmp_path / "b", {"pyproject.toml": '[project]\nname = "b"\n'})
    assert envs.find_requirements(no_deps) is None
    only_comments = make_project(tmp_path / "c", {"requirements.txt": "# nothing yet\n"})
    assert envs.find_requirements(only_comments) is None
    assert envs.find_requirements(make_project(tmp_path / "d", {})) is None


def test_key_follows_the_requirements_bytes_and_their_includes(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"requirements.txt": "-r base.txt\n", "base.txt": f"{PIN}\n"})
    first = envs.env_key(reqs_of(root), BASE)
    assert envs.env_key(reqs_of(root), BASE) == first  # stable
    (root / "base.txt").write_text("six==1.15.0\n")  # only the included file changed
    assert envs.env_key(reqs_of(root), BASE) != first
    assert dict(reqs_of(root).digest_inputs).keys() == {"requirements.txt", "base.txt"}


def test_key_follows_python_taskyard_and_the_base_env(tmp_path: Path) -> None:
    reqs = reqs_of(make_project(tmp_path, {"requirements.txt": f"{PIN}\n"}))
    key = envs.env_key(reqs, BASE)
    assert len(key) == 16 and key == envs.env_key(reqs, BASE, python=envs.interpreter_id())
    other_python = ("CPython", "3.12.1", sys.platform, "x86_64")
    assert envs.env_key(reqs, BASE, python=other_python) != key
    assert envs.env_key(reqs, BASE, taskyard="9.9.9") != key
    assert envs.env_key(reqs, envs.Base("/work/.venv", BASE.site_dirs)) != key


def test_only_the_dependency_list_of_pyproject_counts(tmp_path: Path) -> None:
    text = f'[project]\nname = "p"\ndependencies = ["{PIN}"]\n'
    root = make_project(tmp_path, {"pyproject.toml": text})
    key = envs.env_key(reqs_of(root), BASE)
    (root / "pyproject.toml").write_text(text + "\n[tool.pytest.ini_options]\naddopts = '-q'\n")
    assert envs.env_key(reqs_of(root), BASE) == key
    (root / "pyproject.toml").write_text(text.replace(PIN, "six==1.15.0"))
    assert envs.env_key(reqs_of(root), BASE) != key


def test_satisfied_here_is_conservative(tmp_path: Path) -> None:
    def check(text: str) -> bool:
        root = make_project(tmp_path / f"p{len(list(tmp_path.iterdir()))}", {"other.txt": ""})
        (root / "requirements.txt").write_text(text)
        return envs.satisfied_here(reqs_of(root))

    assert check("six>=1.0\npytest\n")  # taskyard's env has both
    assert check("no-such-package-xyz; python_version < '3'\n")  # marker false: not needed
    assert not check(f"{PIN}\n")  # another version
    assert not check("no-such-package-xyz\n")
    assert not check("-r other.txt\n")  # includes, paths, URLs, extras: pip decides
    assert not check("./local-pkg\n")
    assert not check("requests[socks]\n")


def test_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("", "auto", "on"):
        assert envs.enabled({envs.SWITCH: value})
    for value in ("off", "OFF", "0", "false"):
        assert not envs.enabled({envs.SWITCH: value})
    with pytest.raises(StepError, match="TASKYARD_PROJECT_ENV='maybe' is not understood"):
        envs.enabled({envs.SWITCH: "maybe"})


def test_pth_line_is_one_import_line_that_site_runs(tmp_path: Path) -> None:
    line = envs.pth_line(("/a", "/b c"))
    assert line.startswith("import ") and line.count("\n") == 1
    # site.addpackage runs the line with exec() inside a function, as here.
    probe = (
        "import site, sys\n"
        "seen = []\n"
        "site.addsitedir = seen.append\n"
        "def addpackage(line):\n"
        "    exec(line)\n"
        f"addpackage({line.strip()!r})\n"
        "print(seen)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "['/a', '/b c']", out.stderr


# ---- no env needed -----------------------------------------------------------------------------
def test_no_env_when_none_is_needed(home: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    assert envs.ensure(make_project(tmp_path / "bare", {})) is None
    satisfied = make_project(tmp_path / "ok", {"requirements.txt": "pytest>=8\nsix\n"})
    assert envs.ensure(satisfied) is None
    out = capsys.readouterr().out
    assert "not needed, taskyard's environment satisfies requirements.txt" in out
    pinned = make_project(tmp_path / "pinned", {"requirements.txt": f"{PIN}\n"})
    monkeypatch.setenv(envs.SWITCH, "off")
    assert envs.ensure(pinned) is None
    assert "off (TASKYARD_PROJECT_ENV=off)" in capsys.readouterr().out
    assert not (home / "envs").exists()


# ---- a real env --------------------------------------------------------------------------------
def test_the_projects_pin_shadows_taskyards_version(built: tuple[Path, Path]) -> None:
    _, env = built
    probe = (
        "import json, sys, six, taskyard, mlflow, sklearn, pytest; "
        "print(json.dumps({'six': six.__version__, 'six_file': six.__file__, "
        "'path': sys.path, 'prefix': sys.prefix}))"
    )
    out = subprocess.run(
        [str(envs.python_of(env)), "-c", probe], capture_output=True, text=True, check=True
    )
    assert out.stderr == ""  # the .pth line ran without complaint
    seen = json.loads(out.stdout)
    assert seen["six"] == "1.16.0"  # the project's pin...
    import six  # ...while taskyard's own interpreter keeps its version

    assert six.__version__ != "1.16.0"
    own = str(envs.site_packages(env))
    base = next(d for d in envs.current_base().site_dirs if d in seen["path"])
    assert seen["path"].index(own) < seen["path"].index(base)  # env first, taskyard after
    assert seen["six_file"].startswith(own)
    assert Path(seen["prefix"]) == env


def test_only_what_taskyard_lacks_is_installed(built: tuple[Path, Path]) -> None:
    _, env = built
    marker = json.loads((env / envs.MARKER).read_text())
    assert marker["installed"] == "Successfully installed six-1.16.0 tabulate-0.9.0"  # no pytest
    names = {p.name.split("-")[0] for p in envs.site_packages(env).glob("*.dist-info")}
    assert names == {"six", "tabulate"}


def test_scripts_point_at_the_final_folder(built: tuple[Path, Path]) -> None:
    _, env = built
    script = env / "bin" / "tabulate"
    assert script.read_text().splitlines()[0] == f"#!{env}/bin/python"
    assert ".tmp-" not in (env / "bin" / "activate").read_text()
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Usage: tabulate" in proc.stdout


def test_second_ensure_reuses_the_env(built: tuple[Path, Path], capsys) -> None:
    project, env = built
    marker = env / envs.MARKER
    before = (marker.stat().st_mtime_ns, marker.read_text(), env.stat().st_mtime_ns)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASKYARD_HOME", str(env.parent.parent))
        assert envs.ensure(project) == envs.python_of(env)
    said = capsys.readouterr().out.strip()
    assert said == f"project environment {env} (requirements.txt): reused"
    assert (marker.stat().st_mtime_ns, marker.read_text(), env.stat().st_mtime_ns) == before


_ENSURE = """
import sys
from pathlib import Path
from taskyard import envs
print("env", envs.ensure(Path(sys.argv[1])), flush=True)
"""


def test_two_runs_at_once_build_one_env(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", {"requirements.txt": f"{PIN}\n"})
    key = envs.env_key(reqs_of(project), envs.current_base())
    (home / "envs").mkdir(parents=True)
    env = {**os.environ, "TASKYARD_HOME": str(home)}
    with open(home / "envs" / f"{key}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # both start while the lock is taken: both must wait
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _ENSURE, str(project)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        outs = []
        for p in procs:  # each says it waits, then blocks on the lock
            outs.append(p.stdout.readline())
        fcntl.flock(held, fcntl.LOCK_UN)
    outs = [o + p.communicate(timeout=180)[0] for o, p in zip(outs, procs, strict=True)]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("waiting for another run building the environment" in o for o in outs), outs
    text = "".join(outs)
    assert text.count("): created in") == 1 and text.count("): reused") == 1, text
    assert sorted(p.name for p in (home / "envs").iterdir()) == [key, f"{key}.lock"]


def test_a_failed_install_leaves_nothing(home: Path, tmp_path: Path, capsys) -> None:
    project = make_project(tmp_path / "proj", {"requirements.txt": "six==99.0.0\n"})
    key = envs.env_key(reqs_of(project), envs.current_base())
    stale = home / "envs" / f".{key}.tmp-killed"  # what a build killed by -9 leaves
    stale.mkdir(parents=True)
    with pytest.raises(StepError) as err:
        envs.ensure(project)
    message = str(err.value)
    assert message.startswith("cannot install the project's requirements.txt: ")
    assert "six==99.0.0" in message and "\n" not in message
    assert "set TASKYARD_PROJECT_ENV=off" in message
    assert sorted(p.name for p in (home / "envs").iterdir()) == [f"{key}.lock"]
    assert "ERROR:" in capsys.readouterr().out  # pip's own story stays in the log


def test_an_incomplete_env_is_rebuilt(home: Path, tmp_path: Path, capsys) -> None:
    project = make_project(tmp_path / "proj", {"requirements.txt": f"{PIN}\n"})
    key = envs.env_key(reqs_of(project), envs.current_base())
    half = home / "envs" / key
    (half / "bin").mkdir(parents=True)  # no marker: not an env taskyard finished
    py = envs.ensure(project)
    assert py == envs.python_of(half) and (half / envs.MARKER).is_file()
    assert "created in" in capsys.readouterr().out
