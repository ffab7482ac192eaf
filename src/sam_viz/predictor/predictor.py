"""The shared predictor: one object that both front ends (napari, Jupyter) drive.

Typical use::

    predictor = Predictor.from_pretrained()          # the embedded default, offline
    predictor.set_image(image)                       # encoder runs once; cached
    result = predictor.predict(box_xyxy=[10, 20, 80, 90])
    result.masks            # (3, H, W) bool: subpart, part, whole (by area)
    result.iou_scores       # (3,) predicted IoU of each
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from sam_viz.device import compute_dtype, select_device
from sam_viz.image import Contrast, image_key, to_rgb01, validate_image
from sam_viz.modeling import Sam
from sam_viz.models.checkpoints import load_model
from sam_viz.models.registry import ModelSpec
from sam_viz.predictor.backends import ExportedEncoder, load_encoder_backend
from sam_viz.predictor.cache import EmbeddingCache, ImageEmbedding
from sam_viz.predictor.candidates import BoxesPrediction, Candidates, Prediction
from sam_viz.predictor.decoding import (
    ChooseTokens,
    PromptDecoder,
    candidate_tokens,
    mask_prompt,
    model_boxes,
    reduced_precision,
)
from sam_viz.predictor.stability import stability_scores
from sam_viz.predictor.transforms import ImageFrame
from sam_viz.progress import Cancelled, ProgressCallback
from sam_viz.prompts import CANDIDATE_NAMES, PromptSet, order_by_area, validate_prompts

# One window to encode: its pixels (or what reads them), frame and cache key.
EncodeItem = tuple[np.ndarray | Callable[[], np.ndarray], ImageFrame, str]
# Windows per encoder call at most: on a GPU batches fill the device; on the CPU the
# encoder is compute-bound per window and a batch of 8 was slower per window than one
# (bench_encoders.py, docs/decisions.md), so there the next window is only read ahead.
MAX_ENCODER_BATCH = 8
MAX_CPU_BATCH = 1
# Peak memory of the encoder per window and model-input pixel (TinyViT at 256 px, the
# larger of TinyViT and ViT-B; bench_encoders.py --memory).
WINDOW_BYTES_PER_PIXEL = 1500


def available_memory() -> int:
    """Bytes of memory free now (physical pages not in use; 4 GiB where unknown)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _encoder_blocks(encoder: torch.nn.Module) -> list[torch.nn.Module]:
    """The encoder's transformer/conv blocks in order, for progress and cancellation."""
    return [m for name, m in encoder.named_modules() if re.fullmatch(r"(.+\.)?blocks\.\d+", name)]


class Predictor:
    """Runs a SAM model on one image at a time: embed once, then answer prompts fast.

    Thread model: :meth:`set_image` may run in a worker thread (it reports progress and can
    be cancelled); :meth:`predict` is cheap and may run in another. Pass the
    :class:`ImageEmbedding` returned by :meth:`set_image` to :meth:`predict` to pin the image
    a prediction is for.
    """

    def __init__(
        self,
        model: Sam,
        spec: ModelSpec,
        *,
        device: str | torch.device | None = None,
        cache: EmbeddingCache | None = None,
        model_key: str | None = None,
        precision: str = "float32",
        backend: str | None = "torch",
    ) -> None:
        """Args:
        model: A loaded model (see :func:`sam_viz.models.checkpoints.load_model`).
        spec: The variant it is.
        device: ``"auto"``/None, ``"cpu"``, ``"cuda"``, ``"mps"``.
        cache: Embedding cache to use; a private in-memory one by default.
        model_key: Identifies the weights in cache keys; defaults to ``spec.name``.
        precision: ``"float32"``, ``"bfloat16"``, ``"auto"`` (bf16 only where the
            hardware computes it natively: a GPU, or a CPU with AMX/AVX512-BF16) or
            ``"int8"`` (opt-in, CPU only: the encoder's linear layers quantised). With
            bf16 the encoder's matrix products and the decoder's mask upscaling after its
            first product run in it (the whole decoder when a mask prompt is given);
            inputs, outputs, IoU scores and the resampling to image pixels stay float32.
        backend: Who runs a float32 encoder on the CPU: ``"torch"``, ``"onnxruntime"``,
            ``"openvino"``, or ``"auto"`` (an exported copy where it was measured faster
            here); None reads ``$SAM_VIZ_BACKEND`` (default ``"auto"``). See
            :mod:`sam_viz.predictor.backends`. The export is keyed by ``model_key``, so
            models built by hand keep PyTorch unless a backend is named.
        """
        self.spec = spec
        self.device = select_device(device)
        self.int8 = precision == "int8"  # the encoder's linear layers quantised (CPU)
        self.compute_dtype = compute_dtype("float32" if self.int8 else precision, self.device)
        self.model = model.to(self.device).eval()
        prepare = getattr(self.model.image_encoder, "prepare_for_inference", None)
        if callable(prepare):
            prepare()
        if self.int8:
            from sam_viz.modeling.quantize import quantize_linears

            self.model.image_encoder = quantize_linears(self.model.image_encoder)
        self.cache = cache if cache is not None else EmbeddingCache()
        # Embeddings computed in another precision differ: they are cached apart.
        suffix = {torch.bfloat16: "-bf16"}.get(self.compute_dtype, "")
        self.model_key = (model_key or spec.name) + suffix + ("-int8" if self.int8 else "")
        self._embedding: ImageEmbedding | None = None
        self._lock = threading.Lock()
        self._backend = backend
        self._exported: ExportedEncoder | None = None
        self._backend_checked = False
        self._backend_lock = threading.Lock()
        with torch.inference_mode():
            self.dense_pe = self.model.prompt_encoder.get_dense_pe()
        # The encoder's output shape, (1, C, G, G): the decoder adds this encoding to it.
        self.embedding_shape = tuple(self.dense_pe.shape)
        self._decoder = PromptDecoder(self.model, self.device, self.dense_pe)
        mean = torch.tensor(spec.pixel_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(spec.pixel_std, device=self.device).view(1, 3, 1, 1)
        self._pixel_mean, self._pixel_std = mean, std

    @classmethod
    def from_pretrained(
        cls,
        source: str | None = None,
        *,
        model_name: str | None = None,
        device: str | torch.device | None = None,
        cache: EmbeddingCache | None = None,
        precision: str = "float32",
        backend: str | None = None,
        progress: bool = True,
    ) -> Predictor:
        """Load a registered model (downloading it once if needed) or a checkpoint file.

        Args:
            source: A registry name, a checkpoint path, or None for the embedded default.
            model_name: The variant of a checkpoint file, if it cannot be inferred.
            device: See :class:`Predictor`.
            cache: See :class:`Predictor`.
            precision: See :class:`Predictor`.
            backend: See :class:`Predictor`; None reads ``$SAM_VIZ_BACKEND`` (default
                ``"auto"``).
            progress: Show a download progress bar.
        """
        loaded = load_model(source, model_name=model_name, progress=progress)
        # Keyed by content: copies keep size and mtime, so two fine-tuned files can share both.
        # Variants shipped as a delta share their base's encoder, and so its embeddings (the
        # hash is the base checkpoint file's).
        digest = loaded.checkpoint_hash.partition(":")[2]
        key = f"{loaded.spec.encoder_name}-{digest[:16]}"
        predictor = cls(
            loaded.model,
            loaded.spec,
            device=device,
            cache=cache,
            model_key=key,
            precision=precision,
            backend=backend,
        )
        predictor.image_encoder()  # any export and timing now, while the user expects a wait
        return predictor

    # ----------------------------------------------------------------------------- image
    @property
    def embedding(self) -> ImageEmbedding | None:
        """The embedding of the current image, or None before :meth:`set_image`."""
        return self._embedding

    def set_image(
        self,
        image: object,
        *,
        contrast: Contrast = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> ImageEmbedding:
        """Make ``image`` the current image, computing its embedding unless cached.

        Args:
            image: 2-D grayscale, RGB or RGBA array of any numeric dtype
                (see :mod:`sam_viz.image` for the contrast rules).
            contrast: Contrast rule, see :func:`sam_viz.image.to_rgb01`.
            percentiles: Percentiles of the percentile stretch.
            progress: Called as ``progress(done, total)`` while the encoder runs.
            cancel: If set while the encoder runs, it stops and :class:`Cancelled` is raised;
                the previous image stays current.

        Returns:
            The image's embedding (also kept as :attr:`embedding`).
        """
        embedding = self.embed(
            image, contrast=contrast, percentiles=percentiles, progress=progress, cancel=cancel
        )
        with self._lock:
            self._embedding = embedding
        return embedding

    def embed(
        self,
        image: object,
        *,
        contrast: Contrast = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> ImageEmbedding:
        """The embedding of ``image``, from the cache or computed, leaving the current image.

        Arguments as :meth:`set_image`; pass the result to :meth:`predict` as ``embedding``.
        """
        array = validate_image(image)
        key = image_key(array, contrast=contrast, percentiles=percentiles)
        embedding = self.cache.get(self.model_key, key, expected_shape=self.embedding_shape)
        if embedding is not None:
            if progress is not None:
                progress(1, 1)
            return embedding
        rgb = to_rgb01(array, contrast=contrast, percentiles=percentiles)
        return self.encode(
            rgb, ImageFrame(rgb.shape[:2], self.spec.image_size), key, progress, cancel
        )

    def encode(
        self,
        rgb01: np.ndarray,
        frame: ImageFrame,
        key: str,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> ImageEmbedding:
        """The embedding of RGB pixels under the cache key ``key``, computed once.

        The one place the image encoder runs: whole images (:meth:`embed`) and windows of
        one (:class:`~sam_viz.windows.scaled.ScaledImage`) come through here.

        Args:
            rgb01: (h, w, 3) float32 RGB in 0..1.
            frame: How those pixels map onto the model input (its ``original_size`` is
                (h, w); its zoom may magnify them).
            key: Cache key of these pixels at this frame (content hash, window, zoom).
            progress: Called as ``progress(done, total)`` while the encoder runs.
            cancel: Set it to stop; :class:`Cancelled` is raised.
        """
        embedding = self.cache.get(self.model_key, key, expected_shape=self.embedding_shape)
        if embedding is None:
            features = self._encode(rgb01, frame, progress, cancel)
            embedding = ImageEmbedding(features, frame, key, self.model_key)
            self.cache.put(embedding)
        elif progress is not None:
            progress(1, 1)
        return embedding

    def encode_many(
        self,
        items: Sequence[EncodeItem],
        *,
        batch_size: int | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[ImageEmbedding]:
        """The embeddings of many pixel arrays (the windows of an image), computed once.

        Cached ones are read; the rest go through the encoder in batches, while a second
        thread reads the next batch's pixels.

        Args:
            items: (pixels, frame, key) per window as for :meth:`encode`; ``pixels`` may be
                a function returning them, called on the preparing thread.
            batch_size: Windows per encoder call; :meth:`encoder_batch_size` by default.
            progress: Called as ``progress(done, total)`` in windows.
            cancel: Set it to stop between batches; :class:`Cancelled` is raised.

        Returns:
            One embedding per item, in order.
        """
        shape = self.embedding_shape
        found = [self.cache.get(self.model_key, key, expected_shape=shape) for _, _, key in items]
        todo = [i for i, embedding in enumerate(found) if embedding is None]
        total, done = len(items), len(items) - len(todo)
        if progress is not None:
            progress(done, total)
        size = batch_size or self.encoder_batch_size()
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]

        def read(batch: list[int]) -> list[np.ndarray]:
            # Only the reading overlaps the encoder (a lazy or remote image may be slow to
            # read); torch work here would start a second thread team on the same cores.
            return [p() if callable(p) else p for p, _, _ in (items[i] for i in batch)]

        def prepare(batch: list[int], pixels: list[np.ndarray]) -> torch.Tensor:
            frames = [items[index][1] for index in batch]
            return torch.cat([self.preprocess(*pair) for pair in zip(pixels, frames, strict=True)])

        encoder = self.image_encoder() if batches else None
        with ThreadPoolExecutor(1, thread_name_prefix="sam-viz-prepare") as pool:
            upcoming = pool.submit(read, batches[0]) if batches else None
            for number, batch in enumerate(batches):
                assert upcoming is not None
                x = prepare(batch, upcoming.result())
                if number + 1 < len(batches):
                    upcoming = pool.submit(read, batches[number + 1])
                if cancel is not None and cancel.is_set():
                    raise Cancelled("The image embedding was cancelled.")
                with torch.inference_mode(), self._autocast():
                    features = encoder(x).float()
                for row, index in enumerate(batch):
                    _, frame, key = items[index]
                    embedding = ImageEmbedding(
                        features[row : row + 1].clone(), frame, key, self.model_key
                    )
                    self.cache.put(embedding)
                    found[index] = embedding
                done += len(batch)
                if progress is not None:
                    progress(done, total)
        return [embedding for embedding in found if embedding is not None]

    @property
    def backend(self) -> str:
        """Who runs the image encoder: ``"torch"``, or the runtime of the exported copy (known
        once the first image was embedded)."""
        return self._exported.runtime if self._exported is not None else "torch"

    def image_encoder(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The image encoder to run: an exported copy where one is chosen (exported and
        timed on first use; see :mod:`sam_viz.predictor.backends`), else the model's own."""
        with self._backend_lock:
            if not self._backend_checked:
                self._backend_checked = True
                plain = self.device.type == "cpu" and self.compute_dtype == torch.float32
                if plain and not self.int8:
                    self._exported = load_encoder_backend(
                        self.model.image_encoder,
                        self.model_key,
                        self.spec.image_size,
                        backend=self._backend,
                    )
        return self._exported or self.model.image_encoder

    def encoder_batch_size(self) -> int:
        """Windows per encoder call: as many as fit in a quarter of the memory free now (GPU
        memory on a GPU), up to :data:`MAX_ENCODER_BATCH` (:data:`MAX_CPU_BATCH` on the CPU)."""
        if self.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.device)[0]
        else:
            free = available_memory()
        per_window = WINDOW_BYTES_PER_PIXEL * self.spec.image_size**2
        limit = MAX_CPU_BATCH if self.device.type == "cpu" else MAX_ENCODER_BATCH
        return int(min(limit, max(1, free // 4 // per_window)))

    def preprocess(self, rgb01: np.ndarray, frame: ImageFrame) -> torch.Tensor:
        """(H, W, 3) float RGB in 0..1 to the normalised, padded (1, 3, S, S) model input."""
        tensor = torch.from_numpy(rgb01).to(self.device).permute(2, 0, 1)[None]
        resized = frame.resize_image(tensor) * 255.0
        return frame.pad_to_square((resized - self._pixel_mean) / self._pixel_std)

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        """Reduced-precision matrix products, if :attr:`compute_dtype` asks for them."""
        return reduced_precision(self.device, self.compute_dtype)

    def _encode(
        self,
        rgb01: np.ndarray,
        frame: ImageFrame,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> torch.Tensor:
        blocks = _encoder_blocks(self.model.image_encoder)
        total = len(blocks) + 1
        done = 0

        def tick(*_: object) -> None:
            nonlocal done
            if cancel is not None and cancel.is_set():
                raise Cancelled("The image embedding was cancelled.")
            done += 1
            if progress is not None:
                progress(min(done, total - 1), total)

        encoder = self.image_encoder()  # outside inference mode: an export may run first
        handles = [block.register_forward_pre_hook(tick) for block in blocks]
        try:
            with torch.inference_mode():
                x = self.preprocess(rgb01, frame)
                with self._autocast():
                    features = encoder(x)
        finally:
            for handle in handles:
                handle.remove()
        if progress is not None:
            progress(total, total)
        return features.float()

    def _current(self, embedding: ImageEmbedding | None) -> ImageEmbedding:
        if embedding is not None:
            return embedding
        with self._lock:
            current = self._embedding
        if current is None:
            raise RuntimeError("No image is set: call set_image(image) before predict().")
        return current

    # ----------------------------------------------------------------------------- prompts
    def model_boxes(self, boxes_xyxy: np.ndarray, frame: ImageFrame) -> np.ndarray:
        """Boxes in model-input pixels as the model was trained to see them: widened by
        ``spec.box_margin`` of the input on each side (within the image)."""
        return model_boxes(boxes_xyxy, frame, self.spec)

    def _decode(
        self,
        embedding: ImageEmbedding,
        prompts: PromptSet,
        *,
        per_box: bool,
        choose: ChooseTokens,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the prompt encoder and decoder (see :meth:`PromptDecoder.decode`)."""
        return self._decoder.decode(
            embedding,
            prompts,
            spec=self.spec,
            compute_dtype=self.compute_dtype,
            per_box=per_box,
            choose=choose,
        )

    def predict(
        self,
        points_xy: object = None,
        point_labels: object = None,
        box_xyxy: object = None,
        mask_input: np.ndarray | None = None,
        *,
        multimask_output: bool = True,
        embedding: ImageEmbedding | None = None,
    ) -> Prediction:
        """Segment the object a prompt set points at.

        Args:
            points_xy: (N, 2) points as (x, y) pixels of the original image.
            point_labels: (N,) 1 for a positive (object) point, 0 for a negative one;
                all positive when omitted.
            box_xyxy: One box (x0, y0, x1, y1) in original pixels. For several boxes, use
                :meth:`predict_boxes`.
            mask_input: A previous prediction's low-res logits (L, L), or a binary mask of the
                image's shape, as a dense prompt.
            multimask_output: Three ambiguity-aware candidates (default) or SAM's single mask.
            embedding: The image to predict on; the current image by default.

        Returns:
            A :class:`Prediction` with 3 candidates named by area (or 1 named ``"mask"``).

        Raises:
            ValueError: For an empty or invalid prompt set (see
                :func:`sam_viz.prompts.validate_prompts`).
            RuntimeError: If no image is set.
        """
        embedding = self._current(embedding)
        frame = embedding.frame
        box = _one_box(box_xyxy)
        mask = mask_prompt(mask_input, frame, self.spec.low_res_size)
        prompts = validate_prompts(frame.original_size, points_xy, point_labels, box, mask)
        single_click = (
            len(prompts.points_xy) == 1 and not len(prompts.boxes_xyxy) and prompts.mask is None
        )

        def choose(iou: torch.Tensor) -> torch.Tensor:
            return candidate_tokens(iou, self.spec, multimask_output, single_click=single_click)

        low_res, iou, tokens = self._decode(embedding, prompts, per_box=False, choose=choose)
        low_res, iou = low_res[0].cpu(), iou[0, tokens].cpu()  # float32 from _decode
        return _prediction(frame, low_res, iou, tokens, multimask_output)

    def predict_boxes(
        self,
        boxes_xyxy: object,
        *,
        embedding: ImageEmbedding | None = None,
        local: bool = False,
    ) -> BoxesPrediction:
        """Segment one object per box, in a single batched decoder call.

        Args:
            boxes_xyxy: (M, 4) boxes (x0, y0, x1, y1) in original pixels.
            embedding: The image to predict on; the current image by default.
            local: Decode each box on a patch of the embedding around it: faster for
                small boxes, masks close to but not equal to the whole grid's
                (:mod:`sam_viz.predictor.patches`).

        Returns:
            One mask per box (SAM's single-mask output for box prompts).
        """
        embedding = self._current(embedding)
        prompts = validate_prompts(embedding.frame.original_size, boxes_xyxy=boxes_xyxy)
        if not len(prompts.boxes_xyxy):
            raise ValueError("predict_boxes needs at least one box.")
        if local:
            low_res, iou = self._decoder.decode_local(embedding, prompts.boxes_xyxy, spec=self.spec)
        else:
            low_res, iou, _ = self._decode(
                embedding, prompts, per_box=True, choose=lambda _: torch.tensor([0])
            )
        low_res, iou = low_res[:, 0].cpu(), iou[:, 0].cpu()  # float32 from _decode
        with torch.inference_mode():
            masks = embedding.frame.upscale_masks(low_res[:, None])[:, 0]
        stability = stability_scores(embedding.frame.valid_low_res(low_res)[0])
        return BoxesPrediction(
            masks=masks,
            iou_scores=iou.numpy(),
            low_res_logits=low_res.numpy(),
            stability_scores=stability.numpy(),
        )

    def answer(
        self,
        prompts: PromptSet,
        *,
        embedding: ImageEmbedding | None = None,
        multimask_output: bool = True,
    ) -> Candidates:
        """Answer a prompt set the way the front ends show it.

        One box (with or without points and a mask), points alone or a mask alone give the
        three ambiguity-aware candidates of one object. Several boxes give one mask per box
        from a single batched call, the same in all three candidates; points and masks,
        which refine one box, are then unused (the candidates' notes say so).

        Args:
            prompts: The prompts, in pixels of the embedded image.
            embedding: The image to predict on; the current image by default.
            multimask_output: Three candidates (default) or SAM's single mask.

        Raises:
            ValueError: For an empty or invalid prompt set (the message is for the user).
        """
        if len(prompts.boxes_xyxy) >= 2:
            boxes = self.predict_boxes(prompts.boxes_xyxy, embedding=embedding)
            return Candidates.from_boxes(boxes, prompts)
        prediction = self.predict(
            points_xy=prompts.points_xy if len(prompts.points_xy) else None,
            point_labels=prompts.point_labels if len(prompts.points_xy) else None,
            box_xyxy=prompts.boxes_xyxy[0] if len(prompts.boxes_xyxy) else None,
            mask_input=prompts.mask,
            multimask_output=multimask_output,
            embedding=embedding,
        )
        return Candidates.from_prediction(prediction, prompts.notes)


def _one_box(box_xyxy: object) -> np.ndarray | None:
    """``box_xyxy`` as a float64 array of 4 values, or None.

    Raises:
        ValueError: For anything but one box.
    """
    if box_xyxy is None:
        return None
    box = np.asarray(box_xyxy, dtype=np.float64)
    if box.size != 4:
        raise ValueError(
            f"box_xyxy must be one box (x0, y0, x1, y1), got shape {box.shape}; "
            "for several boxes use predict_boxes()."
        )
    return box


def _prediction(
    frame: ImageFrame,
    low_res: torch.Tensor,
    iou: torch.Tensor,
    tokens: torch.Tensor,
    multimask_output: bool,
) -> Prediction:
    """The chosen tokens' (T, L, L) low-res logits and (T,) IoUs as named candidates, in
    image pixels, ordered by area when there are three."""
    with torch.inference_mode():
        masks_np = frame.upscale_masks(low_res[None])[0]
    order = order_by_area(masks_np) if multimask_output else np.arange(1)
    names = CANDIDATE_NAMES if multimask_output else ("mask",)
    stability = stability_scores(frame.valid_low_res(low_res)[0])
    return Prediction(
        masks=masks_np[order],
        iou_scores=iou.numpy()[order],
        low_res_logits=low_res.numpy()[order],
        names=tuple(names),
        token_indices=tokens.numpy()[order],
        stability_scores=stability.numpy()[order],
    )
