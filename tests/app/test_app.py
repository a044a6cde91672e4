"""The Gradio app: page and config checks in-process, and a real server driven through gradio_client by
the named API (the browser tests are in test_app_browser.py)."""

import inspect
import json
import os
import re
import time
import urllib.error
import urllib.request

import gradio as gr
import pytest
import torch

from psd_gs.app import handlers, page, ui, world
from psd_gs.scene.ply import load_ply
from tests.app.server import start_app

# a short run: every control of the page (config path -> value); the /generate endpoint names them
SETTINGS = {"prompt": "a cube", "guidance.negative_prompt": "", "prior.name": "shapes", "guidance.method": "psd",
            "reward": "shapes-warm",
            "guidance.cfg_scale": 1.5, "guidance.lambda_p": 4.0, "guidance.neg_lr": 0.05, "steps": 20, "seed": 0,
            "resolution": "32", "guidance.n_candidates": 8, "guidance.pair_t_min": 0.6, "guidance.tau": 0.3,
            "guidance.pair_window": "[0.0, 0.4]", "guidance.neg_every": 4,
            "guidance.beta": 10.0, "guidance.gamma": 0.001, "guidance.lambda_r": 1000.0, "guidance.t_min": 0.02,
            "guidance.t_max_start": 0.98, "guidance.t_max_end": 0.5, "scene.init": None, "scene.keep": "none"}


def test_build_demo_builds_for_the_shapes_world():
    demo = page.build_demo("shapes", "test", runs_root="unused")
    assert isinstance(demo, gr.Blocks) and demo.title == page.TITLE


def test_make_config_maps_the_page_and_names_bad_values():
    assert set(SETTINGS) == set(page.MAIN + page.SETTINGS + page.ADVANCED + page.REFINE)
    cfg = world.make_config("shapes", "runs", SETTINGS)
    assert cfg.guidance.method == "psd" and cfg.steps == 20 and cfg.camera.resolution == ((0.0, 32),)
    assert cfg.guidance.pair_window == (0.0, 0.4) and cfg.guidance.lambda_p == 4.0 and cfg.out_dir == "runs"
    for path, value, match in [("prompt", "  ", "prompt is empty"), ("guidance.method", "DDIM", "method"),
                               ("seed", -1, "seed"), ("seed", 2.5, "seed"), ("steps", 0, "steps"),
                               ("guidance.cfg_scale", 0.5, "cfg_scale"), ("guidance.tau", 0.0, "tau"),
                               ("guidance.pair_window", "0.4", "pair_window"), ("reward", "hpsv2", "shapes prior")]:
        with pytest.raises(ValueError, match=match):
            world.make_config("shapes", "runs", {**SETTINGS, path: value})


def test_the_page_is_built_from_the_config_fields_and_the_registries():
    from psd_gs.registry import METHODS, rewards_for

    demo = page.build_demo("shapes", "test", runs_root="unused")
    by_label = {getattr(b, "label", None): b for b in demo.blocks.values()}
    assert [v for _, v in by_label["Method"].choices] == list(METHODS)
    assert [v for _, v in by_label["Reward model"].choices] == list(rewards_for("shapes"))
    tau = by_label["guidance.tau"]  # an Advanced control: the field's own help and range
    assert "reward gap" in tau.info and tau.value == 3.0
    assert by_label["guidance.neg_every"].minimum == 1 and by_label["guidance.neg_every"].precision == 0


def test_an_error_pop_up_shows_user_text_as_text(monkeypatch, tmp_path):
    """A failed run's message reaches the pop-up (gr.Warning renders HTML) and the status line escaped,
    and without the server's runs path."""
    shown = []
    monkeypatch.setattr(handlers.gr, "Warning", lambda message, *args, **kwargs: shown.append(message))
    monkeypatch.setattr(handlers.ModelCache, "for_run", lambda self, cfg: (None, object()))
    root = tmp_path / "runs"

    def failing(cfg, *args, **kwargs):
        raise handlers.GenerationError(f"{cfg.prompt} <img src=x onerror=alert(1)> failed; see {root.resolve()}/x")
        yield

    monkeypatch.setattr(handlers, "generate", failing)
    demo = page.build_demo("shapes", "test", runs_root=str(root))
    run = next(f.fn for f in demo.fns.values() if f.name == "run")
    values = {world.api_name(k): v for k, v in SETTINGS.items()}
    names = list(inspect.signature(run).parameters)[3:-1]
    updates = list(run({}, "token", False, *[values[n] for n in names]))
    (message,) = shown
    assert "<img" not in message and "&lt;img src=x onerror=alert(1)&gt;" in message
    assert str(tmp_path) not in message and "&lt;runs&gt;/x" in message  # shown as "<runs>/x"
    status = next(v for k, v in updates[-1].items() if getattr(k, "elem_id", None) == "status")
    assert "<img" not in status and "&lt;img" in status


def test_an_os_error_during_a_run_is_a_message_not_a_crash(monkeypatch, tmp_path):
    """A folder that turns unwritable mid-run (a root-owned bind mount in Docker): the page says so and
    Generate comes back; nothing escapes the handler."""
    shown = []
    monkeypatch.setattr(handlers.gr, "Warning", lambda message, *args, **kwargs: shown.append(message))
    monkeypatch.setattr(handlers.ModelCache, "for_run", lambda self, cfg: (None, object()))

    def failing(cfg, *args, **kwargs):
        raise PermissionError(13, "Permission denied")
        yield

    monkeypatch.setattr(handlers, "generate", failing)
    demo = page.build_demo("shapes", "test", runs_root=str(tmp_path / "runs"))
    run = next(f.fn for f in demo.fns.values() if f.name == "run")
    values = {world.api_name(k): v for k, v in SETTINGS.items()}
    updates = list(run({}, "token", False, *[values[n] for n in list(inspect.signature(run).parameters)[3:-1]]))
    assert shown == ["Permission denied"]
    last = {getattr(k, "elem_id", None): v for k, v in updates[-1].items()}
    assert "Error: Permission denied" in last["status"] and last["generate"]["interactive"] is True


def test_choose_world_without_cuda_is_shapes(monkeypatch):
    monkeypatch.delenv("PSD_GS_PRESET", raising=False)
    name, why = world.choose_world()
    assert name == "shapes" and "CUDA" in why


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python app.py`` for this module, keeping 12 files for downloads (the soak counts them): (url, runs root)."""
    with start_app(tmp_path_factory.mktemp("app"), tmp_path_factory.getbasetemp() / "psd_gs_cache",
                   args=["--max-cached-files", "12"]) as served:
        yield served


def call(client, **settings):
    """The /generate endpoint with SETTINGS (by their API names) and ``settings`` on top; its outputs."""
    values = {world.api_name(k): v for k, v in {**SETTINGS, **settings}.items()}
    return client.predict(owner_token=settings.pop("owner_token", "test-owner"), compare=settings.pop("compare", False),
                          **{k: v for k, v in values.items() if k not in ("owner_token", "compare")},
                          api_name="/generate")


# the endpoint's outputs (the result tabs and the Generate button are layout, not values)
OUT = {name: i for i, name in enumerate(["status", "preview", "reward_plot", "loss_plot", "summary", "model", "mesh", "video",
                                         "files", "compare_md", "model_main", "model_sds", "compare_plot", "history"])}


def test_client_generates_downloads_and_survives_bad_input(server):
    from gradio_client import Client

    url, runs = server
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="prompt: prompt is empty"):  # the validator names the control
        call(client, prompt="")
    with pytest.raises(Exception, match="does not know"):
        call(client, prompt="a dog")
    out = call(client)
    assert "Done." in out[OUT["status"]] and "over 8 views" in out[OUT["summary"]]  # 20 steps: too few to form
    assert re.search(r"separated the candidates in \d+% of \d+ pair steps, mean weight k", out[OUT["summary"]])
    scene = load_ply(out[OUT["model"]])  # the downloaded .ply reads back
    assert scene.means.shape == (3000, 3)
    folders = list(runs.iterdir())
    assert len(folders) == 1 and (folders[0] / "scene.ply").exists()  # bad requests left no folder
    if (folders[0] / "mesh.glb").exists():  # the mesh viewer and the downloads get the run's .glb
        assert out[OUT["mesh"]].endswith("mesh.glb") and any(f.endswith("mesh.glb") for f in out[OUT["files"]])
    else:
        assert out[OUT["mesh"]] is None and "mesh_error" in json.loads((folders[0] / "metrics.json").read_text())
    assert [row[1] for row in out[OUT["history"]]["data"]] == ["a cube"]  # this owner's history
    with pytest.raises(Exception, match="reward: reward 'imagereward' is unknown"):
        call(client, reward="imagereward")


def test_client_gets_a_clear_error_when_run_folders_cannot_be_made(server):
    from gradio_client import Client

    url, runs = server
    runs.rename(runs.with_name("runs.moved"))
    runs.write_text("a file where the runs folder was")
    try:
        out = call(Client(url, verbose=False))
        assert "Error: cannot create run folders" in out[OUT["status"]]
    finally:
        runs.unlink()
        runs.with_name("runs.moved").rename(runs)
    with urllib.request.urlopen(url, timeout=5) as resp:  # still serving
        assert resp.status == 200


def test_page_names_the_renderer():
    demo = page.build_demo("shapes", "test", runs_root="unused")
    world = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "world")
    assert "Renderer: PyTorch rasteriser on the CPU" in world.value


def test_client_compare_runs_sds_beside_the_method(server):
    from gradio_client import Client

    url, _ = server
    out = call(Client(url, verbose=False), compare=True)
    assert "PSD " in out[OUT["compare_md"]] and "SDS" in out[OUT["compare_md"]] and "over 8 views" in out[OUT["compare_md"]]
    sds_scene, main_scene = load_ply(out[OUT["model_sds"]]), load_ply(out[OUT["model_main"]])
    assert sds_scene.means.shape == (3000, 3)
    assert not torch.equal(sds_scene.means, main_scene.means)  # each viewer shows its own object
    assert out[OUT["model_main"]] and out[OUT["compare_plot"]]
    assert "SDS, same seed: " in out[OUT["summary"]] and out[OUT["summary"]].count("over 8 views") == 2


def test_a_full_queue_says_so_in_words(tmp_path_factory):
    from gradio_client import Client

    with start_app(tmp_path_factory.mktemp("app-queue"), tmp_path_factory.getbasetemp() / "psd_gs_cache",
                   args=["--queue-size", "1"]) as (url, _):
        client = Client(url, verbose=False)
        values = {world.api_name(k): v for k, v in {**SETTINGS, "steps": 2000}.items()}
        running = client.submit(owner_token="a", compare=False, **values, api_name="/generate")
        time.sleep(3)  # the first run has started
        waiting = client.submit(owner_token="b", compare=False, **values, api_name="/generate")
        time.sleep(1)
        with pytest.raises(Exception, match="Queue is full"):
            client.predict(owner_token="c", compare=False, **values, api_name="/generate")
        assert not running.done() and not waiting.done()  # the server stops them when the test ends


# ---- safe to expose (issue 12) ----------------------------------------------------------------


def test_another_sessions_run_folder_is_not_served(server):
    from gradio_client import Client

    url, runs = server
    out = call(Client(url, verbose=False), owner_token="alice")
    folder = next(p for p in runs.iterdir() if p.is_dir() and (p / "owner").exists())
    for name in ("config.json", "scene.ply", "metrics.json"):
        target = f"{url}gradio_api/file={folder.resolve() / name}"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(target, timeout=10)
        assert err.value.code in (403, 404), target
    assert str(runs.resolve()) not in out[OUT["model"]]  # what the page got is a copy in Gradio's cache
    assert str(runs.resolve()) not in out[OUT["summary"]] + out[OUT["status"]]


def test_uploads_are_capped(server):
    import httpx

    url, _ = server
    from psd_gs.app.serve import MAX_UPLOAD

    big = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.ply", b"x" * (MAX_UPLOAD + 1))}, timeout=60)
    assert big.status_code in (400, 413), big.text[:200]
    small = httpx.post(f"{url}gradio_api/upload", files={"files": ("small.ply", b"x" * 50_000)}, timeout=20)
    assert small.status_code == 200, small.text[:200]  # a splat of the size the page refines is taken


def test_a_resolution_the_page_does_not_offer_is_refused_at_once(server):
    """The API takes what the page offers and nothing else: 512 px (never offered in the shapes world) is
    refused by the validator in well under 2 s, naming the sizes that are offered."""
    from gradio_client import Client

    url, runs = server
    client = Client(url, verbose=False)
    before = sorted(p.name for p in runs.iterdir()) if runs.exists() else []
    for size in ("512", "48"):
        t0 = time.perf_counter()
        with pytest.raises(Exception, match=rf"resolution {size}: this page offers 32 px, 64 px, 128 px"):
            call(client, resolution=size)
        assert time.perf_counter() - t0 < 2.0  # the validator's answer, not a run (round trip included)
    assert (sorted(p.name for p in runs.iterdir()) if runs.exists() else []) == before


def test_a_request_that_would_not_fit_in_memory_is_refused_at_once(monkeypatch):
    """Memory is checked again at each request (the server may have grown since the page was built): an
    offered size that no longer fits is refused by the validator, naming what would."""
    import psd_gs.run.memory as memory

    monkeypatch.setattr(memory, "in_use", lambda device: int(0.2 * 2 ** 30))
    demo = page.build_demo("shapes", "test", runs_root="unused", budget=int(1.5 * 2 ** 30))
    check = next(f.validator for f in demo.fns.values() if f.name == "run")
    values = {world.api_name(k): v for k, v in {**SETTINGS, "resolution": "128"}.items()}
    names = list(inspect.signature(check).parameters)[3:]
    verdicts = check({}, "token", False, *[values[n] for n in names])
    assert all(v["is_valid"] for v in verdicts)
    monkeypatch.setattr(memory, "in_use", lambda device: int(0.8 * 2 ** 30))  # the process grew meanwhile
    verdicts = check({}, "token", False, *[values[n] for n in names])
    bad = [v for v in verdicts if not v["is_valid"]]
    assert len(bad) == 1 and verdicts[3 + page.SETTINGS.index("resolution") + len(page.MAIN)]["is_valid"] is False
    assert "this run needs about" in bad[0]["message"] and "32 px, 64 px would fit" in bad[0]["message"]


def test_a_cancelled_request_leaves_a_complete_folder(server):
    from gradio_client import Client

    url, runs = server
    before = {p.name for p in runs.iterdir()}
    client = Client(url, verbose=False)
    values = {world.api_name(k): v for k, v in {**SETTINGS, "steps": 3000}.items()}
    job = client.submit(owner_token="carol", compare=False, **values, api_name="/generate")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [p for p in runs.iterdir() if p.name not in before]:
        time.sleep(0.2)
    time.sleep(2)
    t0 = time.perf_counter()
    job.cancel()  # a POST the server answers once the handler lets go: within a poll, not after a step
    assert time.perf_counter() - t0 < 2.0
    (folder,) = [p for p in runs.iterdir() if p.name not in before]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (folder / "INCOMPLETE").exists():
        time.sleep(0.5)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert not (folder / "INCOMPLETE").exists() and metrics["cancelled"] and 0 < metrics["steps_done"] < 3000
    assert (folder / "scene.ply").exists() and (folder / "turntable.mp4").exists()


def test_a_cancel_is_answered_at_once_while_models_load_and_while_outputs_are_written(monkeypatch, tmp_path):
    """The phases a run spends outside its steps: a preparation that takes long (Stable Diffusion's load
    takes minutes; here the shapes prior's, held by the test) and the export. A client's cancel is answered
    within 2 s in both; a run cancelled before its first step leaves no folder, one cancelled while it
    writes its outputs ends complete."""
    import threading

    from gradio_client import Client

    import psd_gs.run.loop as gen_mod
    from psd_gs.priors.analytic import AnalyticPrior
    from tests.app.server import free_port

    monkeypatch.setenv("PSD_GS_CACHE", str(tmp_path / "cache"))
    held, release = threading.Event(), threading.Event()
    phase = {"name": "prepare"}
    prepare, export = AnalyticPrior.prepare, gen_mod._export

    def slow_prepare(self, cfg):
        if phase["name"] == "prepare":
            held.set()
            release.wait(60)
        prepare(self, cfg)

    def slow_export(*args, **kwargs):
        if phase["name"] == "export":
            held.set()
            release.wait(60)
        return export(*args, **kwargs)

    monkeypatch.setattr(AnalyticPrior, "prepare", slow_prepare)
    monkeypatch.setattr(gen_mod, "_export", slow_export)
    runs = tmp_path / "runs"

    def owned(token: str):
        """The run folders of the client whose token is ``token``."""
        folders = [p for p in runs.iterdir() if (p / "owner").exists()] if runs.exists() else []
        return [p for p in folders if (p / "owner").read_text() == ui.owner_id(f"browser:{token}")]

    demo = page.build_demo("shapes", "test", runs_root=str(runs))
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        values = {world.api_name(k): v for k, v in {**SETTINGS, "steps": 3}.items()}
        for name in ("prepare", "export"):
            phase["name"] = name
            held.clear()
            release.clear()
            job = Client(demo.local_url, verbose=False).submit(owner_token=name, compare=False, **values,
                                                              api_name="/generate")
            assert held.wait(60), f"the run never reached its {name} phase"
            time.sleep(1.0)  # the handler is polling
            t0 = time.perf_counter()
            job.cancel()
            assert time.perf_counter() - t0 < 2.0, f"a cancel while the run is in its {name} phase waited"
            release.set()
        # the export phase's run reached its export, so the first run had ended (runs share one thread)
        assert owned("prepare") == []  # cancelled before its first step: nothing was made, nothing is left
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not owned("export") or (owned("export")[0] / "INCOMPLETE").exists()):
            time.sleep(0.2)
        (folder,) = owned("export")
        assert not (folder / "INCOMPLETE").exists() and (folder / "scene.ply").exists()
    finally:
        release.set()
        demo.close()


def test_the_server_removes_half_made_runs_when_it_starts(tmp_path_factory):
    from psd_gs.run.folders import INCOMPLETE, new_run_dir

    tmp = tmp_path_factory.mktemp("app-restart")
    killed = new_run_dir(tmp / "runs", "a cube", "psd", 0)  # as a killed server left it
    (killed / "config.json").write_text("{}")
    kept = new_run_dir(tmp / "runs", "a sphere", "psd", 0)
    (kept / "config.json").write_text("{}")
    (kept / INCOMPLETE).unlink()
    (kept / ".scene.ply.x1y2.tmp").write_bytes(b"cut")
    with start_app(tmp, tmp_path_factory.getbasetemp() / "psd_gs_cache"):
        assert not killed.exists() and kept.exists() and not (kept / ".scene.ply.x1y2.tmp").exists()


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.soak
def test_soak_many_runs_keep_memory_and_temp_files_bounded(server):
    """PSD_GS_SOAK_RUNS short runs one after another through the API (CI: 6; `PSD_GS_SOAK_RUNS=30`
    for the full soak), on the module's server after the other tests' runs: the server's memory after
    them within 20% of after the first, and the files kept for downloads no more than --max-cached-files."""
    from gradio_client import Client

    from tests.app.server import PIDS

    count = int(os.environ.get("PSD_GS_SOAK_RUNS", "6"))
    url, runs = server
    tmp = runs.parent
    done_before = len([p for p in runs.iterdir() if (p / "scene.ply").exists()])
    client = Client(url, verbose=False)
    sizes = []
    for i in range(count):
        out = call(client, owner_token=f"soak-{i % 3}", steps=8, seed=i, prompt=["a cube", "a sphere", "a torus"][i % 3])
        assert "Done." in out[OUT["status"]]
        sizes.append(_rss_mb(PIDS[url]))
    print(f"server RSS after each run, MB: {[round(s) for s in sizes]}")
    assert sizes[-1] <= 1.2 * sizes[0], f"server memory grew: {sizes}"
    cached = list((tmp / "gradio").iterdir())
    served = list((tmp / "tmp" / "psd-gs-serve").iterdir())
    assert len(cached) <= 12 + 6 and len(served) <= 12 + 1, (len(cached), len(served))  # + the last run's
    assert len([p for p in runs.iterdir() if (p / "scene.ply").exists()]) == done_before + count


def test_the_page_refines_an_upload_and_names_a_bad_one_beside_it(tmp_path):
    """Refine a splat through the page's config: the upload with the refinement schedule; a file that is not a
    splat is refused by the validator next to the upload, without the server's path."""
    from psd_gs.priors.shapes_world import ShapesWorld
    from psd_gs.scene.ply import save_ply

    ply = save_ply(ShapesWorld().build(2), tmp_path / "cube.ply")
    cfg = world.make_config("shapes", "runs", {**SETTINGS, "scene.init": str(ply), "scene.keep": "geometry"})
    assert cfg.scene.init == str(ply) and cfg.scene.keep == "geometry" and not cfg.scene.densify
    assert cfg.scene.n_init == 400 and cfg.steps == SETTINGS["steps"]  # the page's steps go on top
    bad = tmp_path / "upload-dir" / "bad.ply"
    bad.parent.mkdir()
    bad.write_text("not a splat")
    demo = page.build_demo("shapes", "test", runs_root=str(tmp_path / "runs"))
    check = next(f.validator for f in demo.fns.values() if f.name == "run")
    values = {world.api_name(k): v for k, v in {**SETTINGS, "scene.init": str(bad)}.items()}
    names = list(inspect.signature(check).parameters)[3:]
    verdicts = check({}, "token", False, *[values[n] for n in names])
    (wrong,) = [i for i, v in enumerate(verdicts) if not v["is_valid"]]
    assert names[wrong - 3] == "scene_init"
    assert "bad.ply is not a readable PLY file" in verdicts[wrong]["message"]
    assert str(bad.parent) not in verdicts[wrong]["message"]
