"""Optional image-encoder backends: the PyTorch encoder exported once, run by ONNX Runtime or
OpenVINO where that is measured faster on this machine.

PyTorch stays the reference. The encoder is exported to ONNX with ``torch.onnx``'s dynamo
exporter (needs the ``fast`` extra: ``onnx``, ``onnxscript`` and a runtime) into the
checkpoint cache directory (:func:`sam_viz.models.checkpoints.cache_dir`), under a name made
of the model's content key, the input size and the exporter's versions, and written
atomically. A JSON record beside it holds the graph's SHA-256, so a damaged or replaced file
is exported again (with a warning), and per runtime version and thread count the largest
difference from the PyTorch encoder on a probe input and both timings. A runtime whose
output differs by more than :data:`TOLERANCE` is refused with a warning; in ``"auto"`` mode
one is used only where its timing at first use beat PyTorch's.

The choice is ``$SAM_VIZ_BACKEND`` (``torch``, ``onnxruntime``, ``openvino`` or ``auto``), or
the ``backend`` argument of :func:`load_encoder_backend`. Anything failing (no runtime, an
export error, an unwritable cache) leaves the PyTorch encoder in use, with a warning where a
runtime was asked for by name.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import math
import os
import re
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sam_viz.files import atomic_path

BACKEND_ENV = "SAM_VIZ_BACKEND"
CHOICES = ("auto", "torch", "onnxruntime", "openvino")
# What None (and an unset environment variable) means.
DEFAULT_BACKEND = "auto"
# Runtimes "auto" considers, if installed.
RUNTIMES = ("openvino", "onnxruntime")
# Largest absolute difference from the PyTorch encoder's embedding a runtime may have.
TOLERANCE = 1e-3
# "auto" uses a runtime only if it takes at most this fraction of PyTorch's time.
SPEEDUP_NEEDED = 0.9
# Timed runs of each engine, alternating, after one untimed run (the accuracy check).
TIMED_ROUNDS = 2
# Batch sizes the exported graph accepts (it is exported with a symbolic batch axis).
MAX_BATCH = 64
FORMAT_VERSION = 1
SUBDIR = "exported"


class BackendWarning(UserWarning):
    """A requested or cached backend could not be used; PyTorch runs instead."""


def resolve_choice(backend: str | None = None) -> str:
    """The backend asked for: ``backend``, else ``$SAM_VIZ_BACKEND``, else the default.

    Raises:
        ValueError: If ``backend`` is not one of :data:`CHOICES` (an unknown value of the
            environment variable only warns and selects ``"torch"``).
    """
    if backend is not None:
        value = backend.strip().lower()
        if value not in CHOICES:
            raise ValueError(f"backend must be one of {', '.join(CHOICES)}; got {backend!r}.")
        return value
    value = os.environ.get(BACKEND_ENV, "").strip().lower() or DEFAULT_BACKEND
    if value not in CHOICES:
        warnings.warn(
            f"${BACKEND_ENV}={value!r} is not one of {', '.join(CHOICES)}; using torch.",
            BackendWarning,
            stacklevel=2,
        )
        return "torch"
    return value


def runtime_installed(runtime: str) -> bool:
    """Whether the runtime's package is importable."""
    return importlib.util.find_spec(runtime) is not None


def exporter_installed() -> bool:
    """Whether torch's ONNX exporter has what it needs (``onnx`` and ``onnxscript``)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript"))


def _version(package: str) -> str:
    module = importlib.import_module(package)
    version = getattr(module, "__version__", None)
    if version is None and package == "openvino":
        version = module.get_version()
    return str(version).split("-")[0]


def runtime_id(runtime: str) -> str:
    """The runtime, its version and the thread count: what a check and a timing hold for."""
    return f"{runtime}-{_version(runtime)}-threads{torch.get_num_threads()}"


def graph_path(model_key: str, image_size: int, directory: Path) -> Path:
    """Where the exported graph of a model at an input size is cached.

    Args:
        model_key: The model's content key (``Predictor.model_key`` of a loaded checkpoint:
            its variant and checkpoint hash).
        image_size: Side of the square model input.
        directory: The exported-graph cache directory.
    """
    versions = f"torch{torch.__version__}-onnxscript{_version('onnxscript')}"
    name = f"{model_key}-{image_size}px-{versions}-v{FORMAT_VERSION}"
    return directory / (re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".onnx")


def default_directory() -> Path:
    """The exported-graph cache: a folder of the checkpoint cache directory."""
    from sam_viz.models.checkpoints import cache_dir

    return cache_dir() / SUBDIR


class ExportedEncoder:
    """An exported image encoder run by ONNX Runtime or OpenVINO, called like the module.

    Args:
        runtime: ``"onnxruntime"`` or ``"openvino"``.
        path: The ONNX file.
        run: Maps a float32 Bx3xSxS array to the Bx256xGxG embedding array.
    """

    def __init__(self, runtime: str, path: Path, run: Callable[[np.ndarray], np.ndarray]):
        self.runtime = runtime
        self.path = path
        self._run = run
        self._lock = threading.Lock()  # one inference at a time per session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Embed normalised images: Bx3xSxS float tensor to a Bx256xGxG float32 CPU tensor."""
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        with self._lock:
            out = self._run(array)
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))

    def __repr__(self) -> str:
        return f"ExportedEncoder({self.runtime!r}, {str(self.path)!r})"


def open_runtime(runtime: str, path: Path) -> ExportedEncoder:
    """Load an exported graph into a runtime, with PyTorch's thread count.

    Raises:
        Exception: Whatever the runtime raises for a file it cannot load.
    """
    threads = torch.get_num_threads()
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: the front ends share the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return ExportedEncoder(runtime, path, lambda a: session.run(None, {name: a})[0])
    if runtime == "openvino":
        import openvino as ov

        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            # Not bfloat16, which OpenVINO picks by default on CPUs that compute it.
            "INFERENCE_PRECISION_HINT": "f32",
        }
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        return ExportedEncoder(
            runtime, path, lambda a: request.infer({0: a}, share_outputs=False)[0]
        )
    raise ValueError(f"Unknown runtime {runtime!r}.")


def export_onnx(encoder: nn.Module, image_size: int, path: Path) -> float:
    """Export ``encoder`` (eval mode, CPU, float32) to ONNX at ``path``, atomically.

    The batch axis is symbolic (1 to :data:`MAX_BATCH`); the image size is fixed.

    Returns:
        The seconds the export took.

    Raises:
        Exception: Whatever the exporter raises, or an OSError writing the file.
    """
    start = time.perf_counter()
    # torch.export specialises a batch of 1 to a constant: trace with 2.
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with (
        torch.no_grad(),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            encoder,
            (example,),
            dynamo=True,
            optimize=True,
            dynamic_shapes=({0: batch},),
            input_names=["image"],
            output_names=["embedding"],
            verbose=False,
        )
        if program is None:  # only without dynamo
            raise RuntimeError("torch.onnx.export returned no program")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as partial:
            program.save(partial, external_data=False)
    return time.perf_counter() - start


def _describe(err: BaseException) -> str:
    """One line naming an error's root cause (the exporter wraps it in pages of advice)."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def _read_record(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        return {}
    if not isinstance(data.get("runtimes"), dict):
        data["runtimes"] = {}
    return data


def _write_record(path: Path, record: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as partial:
            partial.write_text(json.dumps(record, indent=1), encoding="utf-8")
    except OSError:
        pass  # a read-only cache only costs checking again next time


def _graph_digest(path: Path) -> str | None:
    """SHA-256 of a graph file, hashed once per version of it (indexed in its folder)."""
    from sam_viz.models import digests

    try:
        return digests.file_digest(path, "sha256", index_dir=path.parent)
    except OSError:
        return None


def probe_input(image_size: int) -> torch.Tensor:
    """The deterministic 1x3xSxS input runtimes are checked and timed on."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, image_size, image_size, generator=generator)


def evaluate(
    encoder: nn.Module, engines: dict[str, ExportedEncoder], image_size: int, *, timing: bool
) -> dict[str, dict]:
    """Check runtimes against the PyTorch encoder on :func:`probe_input`, and time them.

    Every engine runs once untimed (the check); with ``timing``, the engines that passed
    then run :data:`TIMED_ROUNDS` times each, alternating with PyTorch, and the fastest run
    of each counts.

    Returns:
        Per runtime: ``max_diff``, ``ok`` (within :data:`TOLERANCE`), ``error`` (or None),
        and with ``timing``: ``seconds``, ``torch_seconds`` and ``faster``.
    """
    x = probe_input(image_size)

    def run_torch() -> torch.Tensor:
        with torch.inference_mode():
            return encoder(x)

    expected = run_torch()
    results: dict[str, dict] = {}
    for name, engine in engines.items():
        try:
            got = engine(x)
        except Exception as err:  # a runtime failing on its graph: refused, never a crash
            results[name] = {"ok": False, "max_diff": None, "error": f"{type(err).__name__}: {err}"}
            continue
        same_shape = got.shape == expected.shape
        diff = float((got - expected).abs().max()) if same_shape else math.inf
        ok = math.isfinite(diff) and diff <= TOLERANCE
        results[name] = {"ok": ok, "max_diff": diff if math.isfinite(diff) else None}
        results[name]["error"] = None if ok else f"max |diff| {diff:.3g} > {TOLERANCE:g}"
    if timing:
        passed = [name for name, result in results.items() if result["ok"]]
        times: dict[str, list[float]] = {name: [] for name in [*passed, "torch"]}
        for _ in range(TIMED_ROUNDS if passed else 0):
            for name in ["torch", *passed]:
                start = time.perf_counter()
                if name == "torch":
                    run_torch()
                else:
                    engines[name](x)
                times[name].append(time.perf_counter() - start)
        for name in passed:
            seconds, reference = min(times[name]), min(times["torch"])
            results[name].update(
                seconds=seconds,
                torch_seconds=reference,
                faster=seconds <= SPEEDUP_NEEDED * reference,
            )
    return results


def load_encoder_backend(
    encoder: nn.Module,
    model_key: str,
    image_size: int,
    *,
    backend: str | None = None,
    directory: Path | None = None,
) -> ExportedEncoder | None:
    """The exported encoder to use instead of ``encoder``, or None to keep PyTorch.

    Exports the encoder the first time (some seconds), checks and, in ``"auto"`` mode, times
    each runtime once per runtime version and thread count; both are remembered beside the
    graph. Never raises for a runtime or exporter failure: it warns and returns None.

    Args:
        encoder: The PyTorch image encoder, ready for inference, on the CPU in float32.
        model_key: Content key of the weights (see :func:`graph_path`).
        image_size: Side of the square model input.
        backend: See :func:`resolve_choice`.
        directory: Exported-graph cache; :func:`default_directory` if None.

    Raises:
        ValueError: If ``backend`` is not one of :data:`CHOICES`.
    """
    choice = resolve_choice(backend)
    if choice == "torch":
        return None
    explicit = choice != "auto"

    def refuse(message: str) -> None:
        if explicit:
            warnings.warn(f"{message}; using PyTorch.", BackendWarning, stacklevel=3)

    candidates = [choice] if explicit else [r for r in RUNTIMES if runtime_installed(r)]
    candidates = [r for r in candidates if runtime_installed(r)]
    if not candidates:
        refuse(f"The {choice} backend is not installed (pip install 'sam-viz[fast]')")
        return None
    if not exporter_installed():
        refuse("Exporting the encoder needs 'onnx' and 'onnxscript' (pip install 'sam-viz[fast]')")
        return None
    parameter = next(encoder.parameters(), None)
    if parameter is not None and (
        parameter.device.type != "cpu" or parameter.dtype != torch.float32
    ):
        refuse(f"The {choice} backend runs float32 encoders on the CPU only")
        return None

    directory = Path(directory) if directory is not None else default_directory()
    graph = graph_path(model_key, image_size, directory)
    record_path = graph.with_suffix(".json")
    record = _read_record(record_path)
    if record.get("export_error"):
        refuse(f"Exporting this encoder failed before ({record['export_error']})")
        return None
    if not (graph.exists() and record.get("graph_sha256") == _graph_digest(graph)):
        if graph.exists() or record:
            warnings.warn(
                f"The exported encoder {graph} is damaged or does not match its record; "
                "exporting it again.",
                BackendWarning,
                stacklevel=2,
            )
        try:
            seconds = export_onnx(encoder, image_size, graph)
        except Exception as err:
            message = _describe(err)
            if not isinstance(err, OSError):  # an unwritable cache may be writable next time
                _write_record(record_path, {"format": FORMAT_VERSION, "export_error": message})
            warnings.warn(
                f"Exporting the image encoder failed ({message}); using PyTorch.",
                BackendWarning,
                stacklevel=2,
            )
            return None
        record = {
            "format": FORMAT_VERSION,
            "graph_sha256": _graph_digest(graph),
            "export_seconds": round(seconds, 3),
            "model_key": model_key,
            "image_size": image_size,
            "torch": torch.__version__,
            "runtimes": {},
        }
        _write_record(record_path, record)

    runtimes: dict[str, dict] = record["runtimes"]
    engines: dict[str, ExportedEncoder] = {}
    pending: dict[str, ExportedEncoder] = {}
    for runtime in candidates:
        rid = runtime_id(runtime)
        entry = runtimes.get(rid)
        if entry is not None and not entry.get("ok"):
            refuse(f"{runtime} was refused for this encoder: {entry.get('error')}")
            continue
        try:
            engine = open_runtime(runtime, graph)
        except Exception as err:
            message = _describe(err)
            runtimes[rid] = {"ok": False, "max_diff": None, "error": message}
            refuse(f"{runtime} cannot load {graph} ({message})")
            continue
        engines[runtime] = engine
        if entry is None or (not explicit and "faster" not in entry):
            pending[runtime] = engine
    if pending:
        for runtime, result in evaluate(encoder, pending, image_size, timing=not explicit).items():
            runtimes[runtime_id(runtime)] = result
            if not result["ok"]:
                engines.pop(runtime)
                warnings.warn(
                    f"{runtime} differs from the PyTorch encoder ({result['error']}); "
                    "not using it.",
                    BackendWarning,
                    stacklevel=2,
                )
    _write_record(record_path, record)
    if explicit:
        return engines.get(choice)
    faster = {
        name: runtimes[runtime_id(name)]["seconds"]
        for name in engines
        if runtimes[runtime_id(name)].get("faster")
    }
    return engines[min(faster, key=faster.__getitem__)] if faster else None
