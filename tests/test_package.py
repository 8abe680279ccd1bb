"""The package as a user installs it: `pip install .` (a built wheel, not editable) in a fresh environment gives the
`opd-studio` command and the demo assets, and works from any directory."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_the_command_and_the_assets(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"),
                            str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("opd_studio-*.whl"))

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    installed = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    # The dependencies come from the test's own environment (a fresh download of torch & co. would take minutes);
    # a .pth in the new environment makes them importable, after the new environment's own site-packages.
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"  # not the checkout: nothing can come from the repository
    work.mkdir()
    run_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OPD_STUDIO_DATA": str(work / "data")}
    where = subprocess.run([python, "-c", "import opd_studio, opd_studio.workspace as w; "
                                          "print(opd_studio.__file__); print(w.assets_dir())"],
                           cwd=work, env=run_env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    module, assets = where.stdout.split()
    assert module.startswith(site) and assets.startswith(site)
    assert (Path(assets) / "demo_tasks.jsonl").is_file() and (Path(assets) / "demo_rollouts.jsonl").is_file()

    command = env / "bin" / "opd-studio"
    listed = subprocess.run([command, "curated", "list", "--status", "all"], cwd=work, env=run_env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and listed.stdout.strip() == "no records", listed.stderr[-2000:]
    assert (work / "data" / "opd_studio.sqlite").is_file()
    as_module = subprocess.run([python, "-m", "opd_studio", "runs", "list"], cwd=work, env=run_env,
                               capture_output=True, text=True, timeout=120)
    assert as_module.returncode == 0 and "no runs yet" in as_module.stdout
