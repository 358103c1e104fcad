"""Grid specs, their expansion, running on Dask (in-process and local worker processes), resuming
after a SIGKILL, failure recording, and the results table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli.grid import grid_command
from pipeline.grid.runner import COLUMNS, DONE, ERROR, run_grid
from pipeline.grid.spec import GridSpecError, expand, load_grid, parse_grid, run_key
from tests.helpers import make_cache

REPO = Path(__file__).resolve().parents[2]
TINY = {"epochs": 1, "hidden": 8, "batch_size": 4, "lr": 0.01}


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("caches")
    return {"good": make_cache(root / "good.zarr"),
            "other": make_cache(root / "other.zarr", condition="babble_5dB", snr_db=5.0, seed=1),
            "two_folds": make_cache(root / "two_folds.zarr", n_folds=2, condition="babble_-5dB", snr_db=-5.0)}


def spec(tmp_path, cache, **grid):
    return parse_grid({"out": str(tmp_path / "out"), "caches": [str(cache)], "train": TINY, **grid})


# --- expansion ----------------------------------------------------------------------------------

def test_whole_stack_selections_get_one_label(tmp_path, caches):
    runs = expand(parse_grid({"out": str(tmp_path), "caches": [str(caches["good"])], "train": TINY,
                              "fusions": ["mean"], "layers": ["enc:1-2", "enc:0-2", "dec:blocks,enc:all", "enc:1"]}))
    assert [r.layers for r in runs] == ["enc:blocks", "enc:all", "enc:all,dec:blocks", "enc:1"]
    # enc:blocks,dec:blocks and enc:1-2,dec:1 are one run: the key follows the selection, not its spelling
    again = expand(parse_grid({"out": str(tmp_path), "caches": [str(caches["good"])], "train": TINY,
                               "fusions": ["mean"], "layers": ["enc:blocks,dec:blocks", "enc:1-2,dec:1"]}))
    assert [r.layers for r in again] == ["enc:blocks,dec:blocks"]


def test_expansion_counts_each_and_keys(tmp_path, caches):
    s = parse_grid({"out": str(tmp_path / "out"), "caches": [str(caches["good"])], "seeds": [0, 1], "train": TINY,
                    "subgrids": [{"fusions": ["single"], "layers": ["each:enc:all", "each:dec:all"]},
                                 {"fusions": ["mean", "l-adapter"],
                                  "layers": ["enc:all", "dec:all", "enc:all,dec:all", "enc:0-2"]}]})
    runs = expand(s)
    # single: (3 enc + 2 dec layers) x 2 seeds; fusions: 2 x 3 selections x 2 seeds ("enc:0-2" is "enc:all")
    assert len(runs) == 5 * 2 + 2 * 3 * 2
    assert len({r.key for r in runs}) == len(runs)
    single = [r for r in runs if r.config.fusion == "single" and r.config.seed == 0]
    assert [r.layers for r in single] == ["enc:0", "enc:1", "enc:2", "dec:0", "dec:1"]
    assert [r.stack for r in single] == ["enc"] * 3 + ["dec"] * 2 and all(r.n_layers == 1 for r in single)
    both = next(r for r in runs if r.config.fusion == "mean" and r.layers == "enc:all,dec:all")
    assert both.stack == "enc+dec" and both.n_layers == 5 and both.config.layers == "enc:0,1,2;dec:0,1"
    r = runs[0]
    assert r.run_dir == tmp_path / "out" / "runs" / r.key
    assert (r.config.epochs, r.config.hidden, r.config.threads, r.config.folds) == (1, 8, 1, "all")
    assert (r.corpus, r.condition, r.noise_type, r.snr_db, r.model) == ("fake", "babble_0dB", "babble", 0.0,
                                                                         "fake-whisper")
    # keys depend on the config and the cache identity only: stable, and not on the out folder
    again = expand(parse_grid({"out": str(tmp_path / "elsewhere"), "caches": [str(caches["good"])],
                               "seeds": [0, 1], "train": TINY, "fusions": ["mean"], "layers": ["enc:all"]}))
    assert {x.key for x in again} <= {x.key for x in runs}
    assert run_key(r.config, r.cache_identity) == r.key
    assert run_key(r.config, "0" * 16) != r.key
    assert run_key(replace(r.config, lr=0.02), r.cache_identity) != r.key
    assert run_key(replace(r.config, threads=4, device="cuda"), r.cache_identity) == r.key  # same results


def test_train_values_take_their_config_types(tmp_path, caches):
    """YAML reads 1e-2 (no dot) as a string; the grid must not pass it on, nor key on it."""
    text = "fusions: [mean]\nlayers: [enc:all]\ntrain: {lr: 1e-2, epochs: 2.0, batch_size: 4}\n"
    (tmp_path / "g.yaml").write_text(f"out: {tmp_path / 'out'}\ncaches: [{caches['good']}]\n" + text)
    (run,) = expand(load_grid(tmp_path / "g.yaml"))
    assert (run.config.lr, run.config.epochs, run.config.batch_size) == (0.01, 2, 4)
    assert isinstance(run.config.epochs, int)


def test_expansion_globs_and_folds(tmp_path, caches):
    glob = str(caches["good"].parent / "*.zarr")
    runs = expand(parse_grid({"out": str(tmp_path), "caches": [glob], "fusions": ["mean"], "layers": ["enc:all"]}))
    assert sorted(r.condition for r in runs) == ["babble_-5dB", "babble_0dB", "babble_5dB"]
    per_fold = expand(spec(tmp_path, caches["good"], fusions=["mean"], layers=["enc:all"], per_fold=True))
    assert [r.config.folds for r in per_fold] == ["0", "1", "2"]
    listed = expand(spec(tmp_path, caches["good"], fusions=["mean"], layers=["enc:all"], folds=["0", "2"]))
    assert [r.config.folds for r in listed] == ["0,2"]


@pytest.mark.parametrize("grid, message", [
    ({"fusions": ["single"], "layers": ["enc:all"]}, r"exactly one layer.*each:enc:all"),
    ({"fusions": ["mean"], "layers": ["each:enc:all"]}, r"goes with fusion 'single' only"),
    ({"fusions": ["last"], "layers": ["enc:all,dec:all"]}, r"fusion 'last'.*one stack"),
    ({"fusions": ["nope"], "layers": ["enc:all"]}, r"unknown fusion.*nope"),
    ({"fusions": ["mean"], "layers": ["enc:7"]}, r"not in the cache"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "folds": ["9"]}, r"fold\(s\) \['9'\]"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "train": {"seed": 3}}, r"set by the grid"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "train": {"epoch": 3}}, r"unknown train setting"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "train": {"epochs": "many"}}, r"train.epochs must be int"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "train": {"epochs": 0}}, r"epochs must be a whole.*got 0"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "train": {"epochs": -1}}, r"epochs must be a whole number >= 1"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "train": {"batch_size": 0}}, r"batch_size must be a whole"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "train": {"lr": 0}}, r"lr must be a finite number > 0, got 0.0"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "train": {"lr": float("nan")}}, r"lr must be a finite.*got nan"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "seeds": [-1]}, r"seed must be a whole number in 0\.\.2\*\*32-1"),
    ({"fusions": ["mean"], "layers": ["enc:-3-5"]}, r"negative layer index in 'enc:-3-5'"),
    ({"fusions": ["mean"], "layers": ["enc:0-5000000"]}, r"encoder layer\(s\) 0-5000000 not in the cache"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "folds": ["0", "x"]}, r"fold\(s\) \['x'\] are not test folds"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "caches": ["/nowhere/*.zarr"]}, r"matches nothing"),
    ({"fusions": ["mean"], "layers": ["enc:all"], "caches": ["/nowhere.zarr"]}, r"no cache at"),
    ({"fusions": ["mean"], "layer": ["enc:all"]}, r"unknown key"),
    ({"fusions": ["mean"]}, r"missing \['layers'\]"),
])
def test_invalid_grids_fail_before_running(tmp_path, caches, grid, message):
    with pytest.raises(GridSpecError, match=message):
        expand(parse_grid({"out": str(tmp_path / "out"), "caches": [str(caches["good"])], **grid}))
    assert not (tmp_path / "out").exists()


def test_example_grid_parses():
    s = load_grid(REPO / "grids" / "emodb_fusions.yaml")
    assert s.out == Path("runs/grid_emodb") and len(s.subgrids) == 3
    assert s.subgrids[0].layers == ("each:enc:all", "each:dec:all") and s.subgrids[0].fusions == ("single",)
    assert all(sub.train["epochs"] == 50 and sub.caches == ("caches/emodb/babble_0dB/bundled_base.zarr",)
               for sub in s.subgrids)


@pytest.mark.parametrize("path", sorted((REPO / "grids").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_grid_parses(path):
    s = load_grid(path)
    assert s.subgrids and all(sub.fusions and sub.caches for sub in s.subgrids)


# --- running on Dask ----------------------------------------------------------------------------

def test_grid_on_dask_records_failures_and_resumes(tmp_path, caches):
    from dask.distributed import Client, LocalCluster

    s = parse_grid({"out": str(tmp_path / "out"), "caches": [str(caches["good"]), str(caches["two_folds"])],
                    # next-fold: its two-fold cache is refused for want of a third fold
                    "train": {**TINY, "epochs": 2, "validation": "next-fold"},
                    "subgrids": [{"fusions": ["single"], "layers": ["each:enc:all"]},
                                 {"fusions": ["weighted-sum"], "layers": ["enc:all,dec:all"]}]})
    runs = expand(s)
    assert len(runs) == 8
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        first = run_grid(runs, s.out, client=client, progress=False)
        good = [r for r in runs if r.cache == str(caches["good"])]
        bad = [r for r in runs if r not in good]
        t = first.table.set_index("run_key")
        assert list(first.table.columns) == COLUMNS and len(t) == 8
        assert (t.loc[[r.key for r in good], "status"] == "done").all()
        assert (t.loc[[r.key for r in bad], "status"] == "failed").all()
        for r in bad:
            assert "at least 3 folds" in (r.run_dir / ERROR).read_text() and not (r.run_dir / DONE).exists()
            assert "at least 3 folds" in t.loc[r.key, "error"]
        row = t.loc[good[1].key]  # single on enc:1, the layer with the label in it
        assert set(json.loads(row["fold_uar"])) == {"0", "1", "2"} and row["corpus"] == "fake"
        assert json.loads(row["classes"]) == ["a", "b"] and len(json.loads(row["confusion"])) == 2
        assert row["uar"] > max(t.loc[good[0].key, "uar"], t.loc[good[2].key, "uar"])  # enc:1 beats enc:0/enc:2
        assert row["code_version"] and row["seconds"] > 0 and row["snr_db"] == 0.0
        on_disk = pd.read_parquet(s.out / "results.parquet")
        assert on_disk["run_key"].tolist() == first.table["run_key"].tolist()
        assert pd.read_csv(s.out / "results.csv")["status"].tolist() == first.table["status"].tolist()

        stamps = {r.key: (r.run_dir / DONE).stat().st_mtime_ns for r in good}
        second = run_grid(runs, s.out, client=client, progress=False)
        assert sorted(second.ran) == sorted(r.key for r in bad)  # failed runs are retried, done ones skipped
        assert sorted(second.skipped) == sorted(r.key for r in good)
        assert stamps == {r.key: (r.run_dir / DONE).stat().st_mtime_ns for r in good}
        assert second.failed == first.failed

    from pipeline.report.build import build_report
    rep = build_report(s.out)
    assert {"layerwise", "fusions", "confusion"} <= set(rep.written) and "snr" in rep.skipped
    assert "Unfinished runs" in rep.path.read_text()


def _cli(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **env_extra}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "grid", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_killed_midway_resumes_without_recomputing(tmp_path, caches):
    grid = tmp_path / "grid.yaml"
    out = tmp_path / "out"
    grid.write_text(yaml.safe_dump({"out": str(out), "caches": [str(caches["good"])], "train": TINY,
                                    "fusions": ["single"], "layers": ["each:enc:all", "each:dec:all"]}))
    runs = expand(load_grid(grid))
    killed = _cli([str(grid), "--workers", "1", "--quiet"], {"NSER_FAILPOINT": "grid:run-finished:2"})
    assert killed.returncode == -9, killed.stderr
    finished = {r.key: (r.run_dir / DONE).stat().st_mtime_ns for r in runs if (r.run_dir / DONE).exists()}
    assert 2 <= len(finished) < len(runs)

    resumed = _cli([str(grid), "--workers", "1", "--quiet"], {})
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(runs)} runs: {len(runs)} done ({len(finished)} finished before" in resumed.stderr
    assert finished == {k: (out / "runs" / k / DONE).stat().st_mtime_ns for k in finished}
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["run_key"]) == sorted(r.key for r in runs) and (table["status"] == "done").all()
    assert sorted(table["layers"]) == sorted(["enc:0", "enc:1", "enc:2", "dec:0", "dec:1"])


def test_cli_dry_run_and_spec_errors(tmp_path, caches):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"caches": [str(caches["good"])], "fusions": ["mean", "single"],
                                    "layers": ["enc:all"]}))
    res = CliRunner().invoke(grid_command, [str(grid), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "exactly one layer" in res.output and "Traceback" not in res.output
    grid.write_text(yaml.safe_dump({"caches": [str(caches["good"])], "fusions": ["mean"], "layers": ["enc:all"]}))
    res = CliRunner().invoke(grid_command, [str(grid), "--out", str(tmp_path / "out"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "todo" in res.output and "mean" in res.output and not (tmp_path / "out").exists()
    res = CliRunner().invoke(grid_command, [str(grid), "--dry-run"])
    assert res.exit_code == 1 and "no 'out' folder" in res.output



def test_set_options_give_the_runs_of_the_edited_spec(tmp_path, caches):
    """--set KEY=VALUE on a shipped spec expands to the very runs (keys) of the spec edited by hand,
    and is refused where a subgrid sets the key itself (the value would not reach its runs)."""
    base = {"out": str(tmp_path / "out"), "caches": [str(caches["good"])], "train": TINY, "per_fold": True,
            "subgrids": [{"fusions": ["single"], "layers": ["each:enc:blocks"]},
                         {"fusions": ["mean"], "layers": ["enc:blocks"], "train": {"lr": 0.1}}]}
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(base))
    edited = {**base, "folds": ["1"], "seeds": [3], "train": {**TINY, "epochs": 2}}
    want = [r.key for r in expand(parse_grid(edited))]
    got = expand(load_grid(grid, sets=("folds=[1]", "seeds=3", "train.epochs=2")))
    assert [r.key for r in got] == want and len(want) == 3 and {r.config.folds for r in got} == {"1"}
    for sets, message in [(("train.lr=0.5",), r"subgrids\[1\] sets train.lr itself"),
                          (("epochs=2",), "KEY is one of"), (("folds",), "expected KEY=VALUE"),
                          (("train=1",), "KEY is one of")]:
        with pytest.raises(GridSpecError, match=message):
            load_grid(grid, sets=sets)
    with pytest.raises(GridSpecError, match=r"fold\(s\) \['01'\] are not test folds"):
        expand(load_grid(grid, sets=("folds=01",)))  # a fold name as written, not YAML 1.1's number 1
    grid.write_text(yaml.safe_dump({**base, "subgrids": [*base["subgrids"], "not a mapping"]}))
    with pytest.raises(GridSpecError, match="not mappings"):
        load_grid(grid, sets=("train.epochs=2",))
    grid.write_text(yaml.safe_dump(base))
    res = CliRunner().invoke(grid_command, [str(grid), "--set", "folds=[1]", "--dry-run"])
    assert res.exit_code == 0 and res.output.count("todo") == 3 and "folds 1" in res.output, res.output
    res = CliRunner().invoke(grid_command, [str(grid), "--set", "train.lr=0.5", "--dry-run"])
    assert res.exit_code == 1 and "would not reach its runs" in res.output


def test_fold_names_in_a_spec_file_are_read_as_written(tmp_path, caches):
    """Fold names written unquoted in a spec file stay text: YAML 1.1 would read 01 as the number 1
    (another fold) and 010 as an octal 8; both must be refused as the names they are."""
    head = f"out: {tmp_path / 'out'}\ncaches: [{caches['good']}]\nper_fold: true\ntrain: {{epochs: 1, hidden: 8}}\n"
    grid = tmp_path / "grid.yaml"
    grid.write_text(head + "folds: [1]\nfusions: [mean]\nlayers: [enc:all]\n")
    assert [r.config.folds for r in expand(load_grid(grid))] == ["1"]
    grid.write_text(head + "folds: [01]\nfusions: [mean]\nlayers: [enc:all]\n")
    with pytest.raises(GridSpecError, match=r"fold\(s\) \['01'\] are not test folds"):
        expand(load_grid(grid))
    grid.write_text(head + "fusions: [mean]\nlayers: [enc:all]\nsubgrids:\n  - {folds: 010}\n  - {folds: [2]}\n")
    with pytest.raises(GridSpecError, match=r"subgrids\[0\]: fold\(s\) \['010'\] are not test folds"):
        expand(load_grid(grid))
    grid.write_text(head + "fusions: [mean]\nlayers: [enc:all]\nsubgrids:\n  - {folds: all}\n  - {folds: [2], fusions: [attention]}\n")
    assert [r.config.folds for r in expand(load_grid(grid))] == ["0", "1", "2", "2"]
    # merge keys: the merged folds are names too
    grid.write_text(head + "layers: [enc:all]\nsubgrids:\n  - &a {folds: [2], fusions: [mean]}\n"
                    "  - {<<: *a, fusions: [attention]}\n")
    assert [r.config.folds for r in expand(load_grid(grid))] == ["2", "2"]
    grid.write_text(head + "layers: [enc:all]\nsubgrids:\n  - &a {folds: [2], fusions: [mean]}\n"
                    "  - {<<: *a, folds: [01], fusions: [attention]}\n")
    with pytest.raises(GridSpecError, match=r"subgrids\[1\]: fold\(s\) \['01'\] are not test folds"):
        expand(load_grid(grid))


def test_cli_collect_tables_finished_runs_without_training(tmp_path, caches):
    """--collect writes what is finished, marks the rest pending and trains nothing; a grid finished
    in parts (here: one layer first) is then tabled whole, with the derived run once its sources are done."""
    from pipeline.safe_files import Flock

    out = tmp_path / "out"
    full = {"out": str(out), "caches": [str(caches["good"])], "train": TINY,
            "subgrids": [{"fusions": ["single"], "layers": ["each:enc:blocks"]},
                         {"fusions": ["best"], "layers": ["enc:blocks"]}]}
    grid, part = tmp_path / "grid.yaml", tmp_path / "part.yaml"
    grid.write_text(yaml.safe_dump(full))
    part.write_text(yaml.safe_dump({**full, "subgrids": [{"fusions": ["single"], "layers": ["enc:1"]}]}))
    runs = expand(load_grid(grid))
    assert len(runs) == 3 and sum(r.derived for r in runs) == 1

    res = CliRunner().invoke(grid_command, [str(grid), "--collect", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "3 runs: 0 done" in res.output and "3 pending" in res.output
    assert (pd.read_csv(out / "results.csv")["status"] == "pending").all()
    assert not any((r.run_dir / DONE).exists() for r in runs)

    assert CliRunner().invoke(grid_command, [str(part), "--workers", "1", "--quiet"]).exit_code == 0
    res = CliRunner().invoke(grid_command, [str(grid), "--collect", "--quiet"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "results.csv").set_index("layers")
    assert table.loc["enc:1", "status"] == "done" and table.loc["enc:2", "status"] == "pending"
    assert table.loc["enc:blocks", "status"] == "pending"  # best needs both layers' runs
    assert not any((r.run_dir / DONE).exists() for r in runs if r.layers == "enc:2")

    lock = Flock(out / ".nser-grid.lock")  # another nser-grid at work in this folder
    lock.acquire()
    try:
        res = CliRunner().invoke(grid_command, [str(grid), "--collect", "--quiet"])
    finally:
        lock.release()
    assert res.exit_code == 1 and "in use" in res.output


# --- remote schedulers --------------------------------------------------------------------------

@pytest.mark.parametrize("address, remote", [
    ("tcp://10.1.2.3:8786", True),
    ("10.1.2.3:8786", True),  # no scheme: tcp, as in Dask
    ("tcp://scheduler.example.org:8786", True),  # names are not resolved: remote unless localhost
    ("tcp://[2001:db8::1]:8786", True),
    ("tcp://127.0.0.1:8786", False),
    ("127.0.0.5:8786", False),
    ("tcp://localhost:8786", False),
    ("tcp://[::1]:8786", False),
    ("tls://10.1.2.3:8786", False),  # both sides authenticated by the CA the user named
    ("inproc://10.1.2.3/1/2", False),
])
def test_remote_plain_scheduler_gets_a_warning(address, remote):
    from pipeline.grid.runner import scheduler_warning

    warning = scheduler_warning(address)
    if remote:
        assert "pickled code" in warning and "only connect to a cluster you trust" in warning and "tls://" in warning
    else:
        assert warning is None


@pytest.fixture
def tls_files(tmp_path) -> dict[str, str]:
    files = {}
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
        files[name] = str(tmp_path / name)
    return files


def test_tls_security_from_options(tls_files, monkeypatch):
    import dask.config
    from distributed.security import Security

    from pipeline.errors import NserError
    from pipeline.grid.runner import scheduler_security

    sec = scheduler_security("tls://10.1.2.3:8786", tls_files["ca.pem"], tls_files["client.pem"],
                             tls_files["client.key"])
    assert isinstance(sec, Security) and sec.require_encryption
    assert (sec.tls_ca_file, sec.tls_client_cert, sec.tls_client_key) == (
        tls_files["ca.pem"], tls_files["client.pem"], tls_files["client.key"])
    assert scheduler_security("tcp://127.0.0.1:8786") is None
    with pytest.raises(NserError, match="--tls-ca-file secure.*a tls:// scheduler; tcp://10.1.2.3:8786 uses tcp://"):
        scheduler_security("tcp://10.1.2.3:8786", tls_files["ca.pem"])
    with pytest.raises(NserError, match="also needs --tls-cert"):
        scheduler_security("tls://10.1.2.3:8786", tls_files["ca.pem"])
    with dask.config.set({"distributed.comm.tls.ca-file": None}):
        with pytest.raises(NserError, match="needs TLS settings: pass --tls-ca-file and --tls-cert"):
            scheduler_security("tls://10.1.2.3:8786")
    with dask.config.set({"distributed.comm.tls.ca-file": tls_files["ca.pem"]}):
        assert scheduler_security("tls://10.1.2.3:8786") is None  # Dask's own config applies
    with pytest.raises(NserError, match="not a Dask address"):
        scheduler_security("tcp://host-without-port")


class _NoCluster:
    """Stands in for dask.distributed.Client: records how the grid connects, then fails like an
    unreachable scheduler, so that nothing is sent anywhere."""

    calls: list[tuple[tuple, dict]] = []

    def __init__(self, *args, **kwargs):
        type(self).calls.append((args, kwargs))
        raise OSError("Timed out trying to connect")


def test_cli_passes_tls_security_and_warns_on_plain_remote(tmp_path, caches, tls_files, monkeypatch):
    import dask.distributed
    from distributed.security import Security

    monkeypatch.setattr(dask.distributed, "Client", _NoCluster)
    _NoCluster.calls = []
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "caches": [str(caches["good"])], "train": TINY,
                                    "fusions": ["mean"], "layers": ["enc:all"]}))

    res = CliRunner().invoke(grid_command, [str(grid), "--quiet", "--scheduler", "tls://10.1.2.3:8786",
                                            "--tls-ca-file", tls_files["ca.pem"], "--tls-cert", tls_files["client.pem"],
                                            "--tls-key", tls_files["client.key"]])
    assert res.exit_code == 1 and "cannot connect to the Dask scheduler at tls://10.1.2.3:8786" in res.output
    assert "warning" not in res.output and "Traceback" not in res.output
    (args, kwargs), = _NoCluster.calls
    assert args == ("tls://10.1.2.3:8786",) and isinstance(kwargs["security"], Security)
    assert kwargs["security"].tls_client_cert == tls_files["client.pem"] and kwargs["security"].require_encryption

    _NoCluster.calls = []
    res = CliRunner().invoke(grid_command, [str(grid), "--quiet", "--scheduler", "tcp://10.1.2.3:8786"])
    assert res.exit_code == 1 and "warning: tcp://10.1.2.3:8786 is not on this machine" in res.output
    assert _NoCluster.calls == [(("tcp://10.1.2.3:8786",), {})]

    _NoCluster.calls = []
    res = CliRunner().invoke(grid_command, [str(grid), "--quiet", "--scheduler", "tcp://127.0.0.1:8786"])
    assert res.exit_code == 1 and "warning" not in res.output and len(_NoCluster.calls) == 1

    res = CliRunner().invoke(grid_command, [str(grid), "--tls-ca-file", tls_files["ca.pem"]])
    assert res.exit_code == 2 and "go with a tls:// --scheduler" in res.output
    res = CliRunner().invoke(grid_command, [str(grid), "--scheduler", "tcp://10.1.2.3:8786", "--tls-cert",
                                            tls_files["client.pem"]])
    assert res.exit_code == 1 and "secure(s) a tls:// scheduler" in res.output and len(_NoCluster.calls) == 1
