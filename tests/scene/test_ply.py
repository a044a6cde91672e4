import os
import re

import numpy as np
import plyfile
import pytest
import torch
from plyfile import PlyData, PlyElement

from psd_gs.scene.gaussians import GaussianScene
from psd_gs.scene.ply import load_ply, save_ply


def random_scene(sh_degree: int, n: int = 50, seed: int = 0) -> GaussianScene:
    """GaussianScene.random, then every raw tensor randomised so that nothing is trivial."""
    g = torch.Generator().manual_seed(seed)
    s = GaussianScene.random(n, sh_degree=sh_degree, generator=g)
    with torch.no_grad():
        s.params["quats"].copy_(torch.randn(n, 4, generator=g) * 2)
        s.params["scales"].copy_(torch.randn(n, 3, generator=g) - 4)
        s.params["opacities"].copy_(torch.randn(n, generator=g) * 3)
        s.params["shN"].copy_(torch.randn(s.shN.shape, generator=g))
    return s


def bits(t: torch.Tensor) -> torch.Tensor:
    """float32 tensor as its int32 bit patterns (so -0.0 != 0.0 and NaN payloads count)."""
    assert t.dtype == torch.float32
    return t.detach().contiguous().view(torch.int32)


def expected_names(sh_degree: int) -> list:
    k = (sh_degree + 1) ** 2 - 1
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * k)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


# ---- round trip and layout ----------------------------------------------------------------------


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_round_trip_is_bitwise_exact(tmp_path, sh_degree):
    scene = random_scene(sh_degree, seed=sh_degree)
    path = tmp_path / "scene.ply"
    save_ply(scene, path)
    loaded = load_ply(path)
    assert loaded.sh_degree == sh_degree
    assert len(loaded) == len(scene)
    for key in scene.params:
        a, b = scene.params[key], loaded.params[key]
        assert a.shape == b.shape, key
        assert torch.equal(bits(a), bits(b)), key


def test_round_trip_preserves_negative_zero_and_extremes(tmp_path):
    scene = random_scene(1, n=4)
    with torch.no_grad():
        scene.params["means"][0] = torch.tensor([-0.0, 3.4e38, 1e-45])  # -0, near max, denormal
    save_ply(scene, tmp_path / "s.ply")
    assert torch.equal(bits(load_ply(tmp_path / "s.ply").means), bits(scene.means))


@pytest.mark.parametrize("sh_degree", [0, 1, 3])
def test_file_properties_order_dtypes_and_values(tmp_path, sh_degree):
    scene = random_scene(sh_degree)
    path = tmp_path / "scene.ply"
    save_ply(scene, path)
    ply = PlyData.read(str(path))
    assert [el.name for el in ply.elements] == ["vertex"]
    v = ply["vertex"].data
    assert list(v.dtype.names) == expected_names(sh_degree)
    assert all(v.dtype[name] == np.dtype("<f4") for name in v.dtype.names)
    assert ply.byte_order == "<" and not ply.text
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header
    assert f"element vertex {len(scene)}" in header
    assert all(f"property float {name}" in header for name in expected_names(sh_degree))
    # raw pre-activation values in the documented columns
    d = scene.detached()
    np.testing.assert_array_equal(v["x"], d["means"][:, 0].numpy())
    np.testing.assert_array_equal(v["rot_0"], d["quats"][:, 0].numpy())  # w first
    np.testing.assert_array_equal(v["rot_3"], d["quats"][:, 3].numpy())
    np.testing.assert_array_equal(v["scale_2"], d["scales"][:, 2].numpy())  # log, not exp
    np.testing.assert_array_equal(v["opacity"], d["opacities"].numpy())  # logit, not sigmoid
    np.testing.assert_array_equal(v["f_dc_1"], d["sh0"][:, 0, 1].numpy())
    for name in ("nx", "ny", "nz"):
        assert (v[name] == 0).all()


def test_f_rest_is_channel_major(tmp_path):
    scene = random_scene(2, n=3)
    k = scene.shN.shape[1]
    assert k == 8
    with torch.no_grad():  # shN[:, k, c] = 100 c + k, so each f_rest value tells where it came from
        for kk in range(k):
            for c in range(3):
                scene.params["shN"][:, kk, c] = 100 * c + kk
    save_ply(scene, tmp_path / "s.ply")
    v = PlyData.read(str(tmp_path / "s.ply"))["vertex"].data
    for c in range(3):
        for kk in range(k):
            assert (v[f"f_rest_{c * k + kk}"] == 100 * c + kk).all(), (c, kk)
    assert torch.equal(load_ply(tmp_path / "s.ply").shN, scene.shN.detach())


def gradio_is_splat(ply_bytes: bytes) -> bool:
    """Mirror of Gradio 6.31.0's splat detection for .ply files in Model3D.

    Source: .venv/lib/python3.11/site-packages/gradio/templates/frontend/assets/Model3D-DwYygcMl.js,
    functions ``L`` (header parser, first 64 KiB) and ``R``:
        function R(e){let t=e.elements.find(e=>e.name===`face`);if(t&&t.count>0)return!1;
          if(e.elements.some(e=>e.name===`chunk`))return!0;
          let n=e.elements.find(e=>e.name===`vertex`);if(!n)return!1;
          let r=new Set(n.properties.map(e=>e.name));
          return j.every(e=>r.has(e))&&M.filter(e=>r.has(e)).length>=3}
    with j = x y z scale_0..2 opacity rot_0..3 and M = red green blue f_dc_0..2.
    """
    text = ply_bytes[: 64 * 1024].decode("latin-1")
    assert text.startswith("ply")
    m = re.search(r"(?:^|\n)end_header[ \t]*\r?\n", text)
    assert m, "header must end within gradio's 64 KiB window"
    elements = []
    for line in text[: m.end()].splitlines():
        t = line.split()
        if t and t[0] == "element":
            elements.append({"name": t[1], "count": int(t[2]), "props": set()})
        elif t and t[0] == "property":
            elements[-1]["props"].add(t[-1])
    face = next((e for e in elements if e["name"] == "face"), None)
    if face and face["count"] > 0:
        return False
    if any(e["name"] == "chunk" for e in elements):
        return True
    vertex = next((e for e in elements if e["name"] == "vertex"), None)
    if vertex is None:
        return False
    j = ["x", "y", "z", "scale_0", "scale_1", "scale_2", "opacity", "rot_0", "rot_1", "rot_2", "rot_3"]
    colours = ["red", "green", "blue", "f_dc_0", "f_dc_1", "f_dc_2"]
    return all(p in vertex["props"] for p in j) and sum(p in vertex["props"] for p in colours) >= 3


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_gradio_recognises_our_file_as_a_splat(tmp_path, sh_degree):
    save_ply(random_scene(sh_degree), tmp_path / "s.ply")
    assert gradio_is_splat((tmp_path / "s.ply").read_bytes())


def test_gradio_rule_mirror_rejects_meshes_and_non_splats(tmp_path):
    # the mirror must be able to say no, or the test above proves nothing
    save_ply(random_scene(0), tmp_path / "s.ply")
    v = PlyData.read(str(tmp_path / "s.ply"))["vertex"]
    faces = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    PlyData([v, PlyElement.describe(faces, "face")]).write(str(tmp_path / "mesh.ply"))
    assert not gradio_is_splat((tmp_path / "mesh.ply").read_bytes())
    pts = np.zeros(3, dtype=[(n, "f4") for n in ("x", "y", "z", "red", "green", "blue")])
    PlyData([PlyElement.describe(pts, "vertex")]).write(str(tmp_path / "pts.ply"))
    assert not gradio_is_splat((tmp_path / "pts.ply").read_bytes())


# ---- malformed files ----------------------------------------------------------------------------


def write_vertex(path, fields: dict, n: int = 4, extra=()):
    """A PLY with one vertex element of ``n`` rows; ``fields`` maps name -> numpy dtype string."""
    data = np.zeros(n, dtype=list(fields.items()))
    for name in data.dtype.names:
        data[name] = np.arange(n) * 0.5
    PlyData([PlyElement.describe(data, "vertex"), *extra], byte_order="<").write(str(path))
    return path


def valid_fields(sh_degree: int = 0) -> dict:
    return {name: "<f4" for name in expected_names(sh_degree)}


def test_hand_built_valid_file_loads(tmp_path):
    scene = load_ply(write_vertex(tmp_path / "ok.ply", valid_fields(1)))
    assert scene.sh_degree == 1 and len(scene) == 4
    assert scene.means.dtype == torch.float32


def test_other_elements_are_ignored_when_vertex_is_fine(tmp_path):
    faces = PlyElement.describe(np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))]), "face")
    scene = load_ply(write_vertex(tmp_path / "f.ply", valid_fields(0), extra=[faces]))
    assert len(scene) == 4


def test_normals_are_optional_and_extra_properties_ignored(tmp_path):
    fields = {k: v for k, v in valid_fields(1).items() if k not in ("nx", "ny", "nz")}
    fields["red"] = "u1"
    assert len(load_ply(write_vertex(tmp_path / "n.ply", fields))) == 4


def test_ascii_and_big_endian_float32_load_exactly(tmp_path):
    scene = random_scene(1, n=5)
    save_ply(scene, tmp_path / "s.ply")
    ply = PlyData.read(str(tmp_path / "s.ply"))
    for name, kwargs in {"ascii.ply": {"text": True}, "be.ply": {"byte_order": ">"}}.items():
        PlyData([ply["vertex"]], **kwargs).write(str(tmp_path / name))
        loaded = load_ply(tmp_path / name)
        for key in scene.params:
            assert torch.equal(bits(loaded.params[key]), bits(scene.params[key])), (name, key)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ply"):
        load_ply(tmp_path / "nope.ply")


@pytest.mark.parametrize("content", [b"", b"hello, not a ply\n", b"ply\nformat binary_little_endian 1.0\n"])
def test_not_a_ply_is_value_error_with_cause(tmp_path, content):
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable PLY") as info:
        load_ply(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None


def test_truncated_file_is_value_error(tmp_path):
    save_ply(random_scene(1), tmp_path / "s.ply")
    data = (tmp_path / "s.ply").read_bytes()
    (tmp_path / "cut.ply").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="not a readable PLY") as info:
        load_ply(tmp_path / "cut.ply")
    assert isinstance(info.value.__cause__, plyfile.PlyParseError)


def test_no_vertex_element(tmp_path):
    data = np.zeros(3, dtype=[("x", "f4")])
    PlyData([PlyElement.describe(data, "point")]).write(str(tmp_path / "p.ply"))
    with pytest.raises(ValueError, match=r"no 'vertex' element.*point"):
        load_ply(tmp_path / "p.ply")


def test_missing_fields_are_named(tmp_path):
    fields = valid_fields(0)
    del fields["opacity"], fields["rot_3"]
    with pytest.raises(ValueError, match=r"missing fields \['opacity', 'rot_3'\]") as info:
        load_ply(write_vertex(tmp_path / "m.ply", fields))
    assert "m.ply" in str(info.value)


def test_gap_in_f_rest_is_a_missing_field(tmp_path):
    fields = valid_fields(1)
    del fields["f_rest_0"]
    fields["f_rest_9"] = "<f4"  # still 9 f_rest fields, but not 0..8
    with pytest.raises(ValueError, match=r"missing fields \['f_rest_0'\]"):
        load_ply(write_vertex(tmp_path / "g.ply", fields))


@pytest.mark.parametrize("dtype, type_name", [("<f8", "float64"), ("<i4", "int32"), ("u1", "uint8")])
def test_wrong_field_type_is_named(tmp_path, dtype, type_name):
    fields = valid_fields(0)
    fields["opacity"] = dtype
    with pytest.raises(ValueError, match=rf"not float32: \{{'opacity': '{type_name}'\}}"):
        load_ply(write_vertex(tmp_path / "t.ply", fields))


def test_list_property_is_wrong_type(tmp_path):
    fields = {k: v for k, v in valid_fields(0).items() if k != "scale_0"}
    data = np.zeros(2, dtype=list(fields.items()) + [("scale_0", "O")])
    data["scale_0"] = [np.array([1.0, 2.0], "f4")] * 2
    PlyData([PlyElement.describe(data, "vertex")]).write(str(tmp_path / "l.ply"))
    with pytest.raises(ValueError, match=r"not float32: \{'scale_0'"):
        load_ply(tmp_path / "l.ply")


@pytest.mark.parametrize("n_rest", [3, 6, 15, 48])
def test_unsupported_f_rest_count(tmp_path, n_rest):
    fields = valid_fields(0)
    fields.update({f"f_rest_{i}": "<f4" for i in range(n_rest)})
    with pytest.raises(ValueError, match=rf"has {n_rest} f_rest_\* fields"):
        load_ply(write_vertex(tmp_path / "r.ply", fields))


def test_zero_vertices(tmp_path):
    with pytest.raises(ValueError, match="zero vertices"):
        load_ply(write_vertex(tmp_path / "z.ply", valid_fields(0), n=0))


def test_non_finite_rows_are_counted_and_fields_named(tmp_path):
    save_ply(random_scene(1, n=10), tmp_path / "s.ply")
    v = PlyData.read(str(tmp_path / "s.ply"))["vertex"].data.copy()
    v["x"][2] = np.nan
    v["scale_1"][2] = np.inf
    v["f_rest_4"][7] = -np.inf
    PlyData([PlyElement.describe(v, "vertex")]).write(str(tmp_path / "nan.ply"))
    with pytest.raises(ValueError, match=r"2 of 10 rows .* \['x', 'scale_1', 'f_rest_4'\]") as info:
        load_ply(tmp_path / "nan.ply")
    assert "nan.ply" in str(info.value)


def test_nan_in_ignored_normals_is_tolerated(tmp_path):
    fields = valid_fields(0)
    path = write_vertex(tmp_path / "nx.ply", fields)
    v = PlyData.read(str(path))["vertex"].data.copy()
    v["nx"][:] = np.nan
    PlyData([PlyElement.describe(v, "vertex")]).write(str(path))
    assert len(load_ply(path)) == 4


# ---- writing safely -----------------------------------------------------------------------------


@pytest.mark.parametrize("key, bad", [("means", float("nan")), ("shN", float("inf")), ("opacities", -float("inf"))])
def test_non_finite_scene_refuses_to_write(tmp_path, key, bad):
    scene = random_scene(1, n=6)
    with torch.no_grad():
        scene.params[key][1] = bad
        scene.params[key][4] = bad
        scene.params["quats"][4, 2] = float("nan")
    path = tmp_path / "s.ply"
    with pytest.raises(ValueError, match=rf"2 of 6 Gaussians .*'{key}': 2.*'quats': 1|2 of 6 Gaussians .*'quats': 1.*'{key}': 2"):
        save_ply(scene, path)
    assert os.listdir(tmp_path) == []


def test_refused_write_keeps_existing_file(tmp_path):
    path = tmp_path / "s.ply"
    save_ply(random_scene(0, seed=1), path)
    before = path.read_bytes()
    scene = random_scene(0, seed=2)
    with torch.no_grad():
        scene.params["means"][0, 0] = float("nan")
    with pytest.raises(ValueError):
        save_ply(scene, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["s.ply"]


def test_float64_overflowing_float32_refuses(tmp_path):
    scene = random_scene(0, n=3).to("cpu", torch.float64)
    with torch.no_grad():
        scene.params["scales"][0, 0] = 1e300  # finite in float64, inf in float32
    with pytest.raises(ValueError, match="'scales': 1"):
        save_ply(scene, tmp_path / "s.ply")
    assert os.listdir(tmp_path) == []


def test_float64_scene_saves_as_float32(tmp_path):
    scene = random_scene(1).to("cpu", torch.float64)
    save_ply(scene, tmp_path / "s.ply")
    loaded = load_ply(tmp_path / "s.ply")
    assert loaded.means.dtype == torch.float32
    assert torch.equal(loaded.shN, scene.shN.detach().float())


def test_atomic_write_leaves_only_the_target(tmp_path):
    path = tmp_path / "s.ply"
    save_ply(random_scene(0), path)
    save_ply(random_scene(2), str(path))  # overwrite, str path
    assert os.listdir(tmp_path) == ["s.ply"]
    assert load_ply(path).sh_degree == 2


def test_failure_mid_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "s.ply"
    save_ply(random_scene(0, seed=1), path)
    before = path.read_bytes()

    def broken_write(self, stream):
        stream.write(b"ply\nformat binary_little_endian 1.0\n")  # a partial header, then boom
        raise OSError("disk full")

    monkeypatch.setattr(plyfile.PlyData, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save_ply(random_scene(0, seed=2), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["s.ply"]
    with pytest.raises(OSError, match="disk full"):
        save_ply(random_scene(0), tmp_path / "new.ply")
    assert os.listdir(tmp_path) == ["s.ply"]


def test_missing_folder_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_ply(random_scene(0), tmp_path / "no" / "s.ply")


def test_empty_scene_refuses(tmp_path):
    z = torch.zeros(0, 3)
    scene = GaussianScene(z, torch.zeros(0, 4), z, torch.zeros(0), torch.zeros(0, 1, 3))
    with pytest.raises(ValueError, match="no Gaussians"):
        save_ply(scene, tmp_path / "s.ply")
    assert os.listdir(tmp_path) == []


def test_load_to_device_and_saved_file_is_readable_by_others(tmp_path):
    save_ply(random_scene(0), tmp_path / "s.ply")
    assert (os.stat(tmp_path / "s.ply").st_mode & 0o777) == 0o644
    assert load_ply(tmp_path / "s.ply", device="cpu").device == torch.device("cpu")


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_interop_with_gsplat_export_splats(tmp_path, sh_degree):
    """gsplat's public exporter (no normals) is an independent reference for the layout."""
    from gsplat import export_splats

    scene = random_scene(sh_degree)
    d = scene.detached()
    export_splats(d["means"], d["scales"], d["quats"], d["opacities"], d["sh0"], d["shN"],
                  format="ply", save_to=str(tmp_path / "gsplat.ply"))
    loaded = load_ply(tmp_path / "gsplat.ply")
    for key in scene.params:
        assert torch.equal(bits(loaded.params[key]), bits(scene.params[key])), key
    # and our file carries the same vertex values as gsplat's, field by field
    save_ply(scene, tmp_path / "ours.ply")
    theirs = PlyData.read(str(tmp_path / "gsplat.ply"))["vertex"].data
    ours = PlyData.read(str(tmp_path / "ours.ply"))["vertex"].data
    assert [n for n in ours.dtype.names if n not in ("nx", "ny", "nz")] == list(theirs.dtype.names)
    for name in theirs.dtype.names:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_temp_file_is_in_the_target_folder(tmp_path, monkeypatch):
    """os.replace is only atomic within one filesystem, so the temp file must sit next to the target."""
    calls = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (calls.append((src, dst)), real_replace(src, dst)))
    save_ply(random_scene(0), tmp_path / "s.ply")
    [(src, dst)] = calls
    assert os.path.dirname(os.path.abspath(src)) == str(tmp_path)
    assert os.fspath(dst) == str(tmp_path / "s.ply")
