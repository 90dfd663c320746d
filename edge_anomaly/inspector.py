"""The SDK surface camera-controller code uses.

>>> from edge_anomaly import Inspector
>>> insp = Inspector.load("bundle/")                 # best backend here, and why: insp.backend_reason
>>> insp.add_normal_shots(["ok1.png", "ok2.png"])    # refits bank and threshold, no re-export
>>> r = insp.inspect(frame)                          # BGR numpy frame (as OpenCV gives) or a path
>>> r.is_anomalous, r.score, r.threshold, r.location, r.regions
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from . import bundle_format as fmt
from .bundle import Bundle, open_bundle
from .calibration import Calibration, raise_to_presumed_normal
from .errors import InferenceError, InputError
from .few_shot import FewShotFit, encode_images, fit_normal_shots, fitted_sections, write_fitted_bundle
from .findings import find_regions
from .images import ImageLike, Preprocessing, as_rgb, read_image
from .protocols import Narrator
from .result import InspectionResult
from .streaming import Streaming
from .verdicts import Conversation, NarratedVerdict, narrate

EDGE_SHOT = "given on the edge box"  # a shot's source in a saved bundle when it was not one of the exported ones


@dataclass(frozen=True)
class EncodedFrames:
    """Frames halfway through ``inspect``: as RGB, their patch features ``[B x N x D]``, and the time so far."""

    rgbs: list[np.ndarray]
    features: np.ndarray
    sources: list[str | None]
    latency_ms: dict[str, float]


class Inspector(Streaming):
    """A loaded, verified bundle on a backend, ready to inspect frames."""

    def __init__(
        self, bundle: Bundle, backend: str = "auto", threshold: float | None = None, threads: int = 0, llm: str = "auto"
    ) -> None:
        from edge_anomaly.runtime.backends import select_backend

        if threshold is not None and not (
            isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and math.isfinite(threshold)
        ):
            raise InputError(f"threshold must be a finite number, got {threshold!r}")
        self.bundle = bundle
        choice = select_backend(bundle, backend, threads)
        self._backend = choice.backend
        self.backend_name = choice.backend.name
        self.backend_reason = choice.reason
        self._prep = Preprocessing(bundle.input_size, bundle.mean, bundle.std)
        self._memory_bank = bundle.memory_bank()
        self._calibration_threshold = bundle.threshold
        self._calibration_map_threshold = bundle.manifest.threshold.map_value
        self._threshold_override = threshold
        self._shots: list[np.ndarray] | None = None
        self._shot_sources = bundle.manifest.shot_sources  # the shots' file names at export, or EDGE_SHOT
        self._fit: FewShotFit | None = None
        self.narrator = self._narrator(llm)

    @classmethod
    def load(
        cls,
        bundle: str | Path,
        backend: str = "auto",
        threshold: float | None = None,
        threads: int = 0,
        llm: str = "auto",
        trusted_keys: Sequence[str | Path | bytes] | None = None,
    ) -> Inspector:
        """Open and verify ``bundle`` (directory or tar). ``threshold`` overrides the calibrated one;
        ``llm``: ``"auto"`` (the bundle's model, if it has one), ``"none"``, or a ``.gguf`` path;
        ``trusted_keys``: Ed25519 public keys (PEM files or bytes), and then only a bundle signed by one of
        them loads (``export --sign``)."""
        opened = open_bundle(bundle, trusted_keys)
        try:
            return cls(opened, backend, threshold, threads, llm)
        except BaseException:
            opened.close()
            raise

    def close(self) -> None:
        """Release the backend (sessions, engines, clients) and the bundle's unpacked files (a tarred
        bundle's temporary folder); the inspector is done. ``with Inspector.load(...) as insp:`` calls it."""
        self._backend.close()
        self.bundle.close()

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def verdict(self, result: InspectionResult) -> str:
        """One sentence for the operator: from the bundle's language model, checked against the finding
        (the template sentence when it disagrees, fails or is missing; ``narrated_verdict`` says which)."""
        return self.narrated_verdict(result).text

    def narrated_verdict(self, result: InspectionResult) -> NarratedVerdict:
        """The verdict with its source and, when the template stood in, the reason (``verdicts.narrate``)."""
        return narrate(self.narrator, result)

    def chat(self, result: InspectionResult) -> Conversation:
        """Follow-up questions about ``result``, answered by the bundle's model and grounded in the finding."""
        return Conversation(result, self.narrator)

    def _narrator(self, llm: str) -> Narrator | None:
        if llm == "none":
            return None
        from edge_anomaly.runtime.llm_verdicts import LazyVerdictModel

        if llm != "auto":
            return LazyVerdictModel(Path(llm))
        models = self.bundle.files_of(fmt.ROLE_LLM)
        if not models:
            return None
        adapters = self.bundle.files_of(fmt.ROLE_LLM_ADAPTER)
        llm_section = self.bundle.manifest.llm
        style = llm_section.prompt if llm_section is not None else None
        return LazyVerdictModel(models[0], adapters[0] if adapters else None, style)

    @property
    def backend(self):
        """The runtime backend running the bundle's graphs (``encode``, ``decode``)."""
        return self._backend

    @property
    def preprocessing(self) -> Preprocessing:
        return self._prep

    @property
    def threshold(self) -> float:
        return self._threshold_override if self._threshold_override is not None else self._calibration_threshold

    @property
    def map_threshold(self) -> float:
        """Where the anomaly map's regions are cut: the map's own calibrated threshold where the score is
        not the map's maximum (``DecoderSection.score_features``), else the score's threshold. An override
        of the threshold moves it by the same factor."""
        own = self._calibration_map_threshold
        if own is None:
            return self.threshold
        calibrated, override = self._calibration_threshold, self._threshold_override
        if override is None:
            return own
        return own * override / calibrated if calibrated > 0 else override

    @property
    def memory_bank(self) -> np.ndarray:
        return self._memory_bank

    def add_normal_shots(self, images: Sequence[ImageLike], color_order: str = "bgr") -> Calibration:
        """Add normal images: rebuild the memory bank and recalibrate the threshold, on this box."""
        new = [as_rgb(im, color_order) for im in images]
        if not new:
            raise InputError("add_normal_shots needs at least one image")
        return self._refit(self._bundle_shots() + new, (*self._shot_sources, *[EDGE_SHOT] * len(new)))

    def _bundle_shots(self) -> list[np.ndarray]:
        if self._shots is None:
            self._shots = [read_image(p) for p in self.bundle.files_of(fmt.ROLE_SHOT)]
        return self._shots

    def use_normal_shots(
        self, images: Sequence[ImageLike], color_order: str = "bgr", presumed_normal: Sequence[ImageLike] = ()
    ) -> Calibration:
        """Replace the bundle's shots with these normal images: bank and threshold from them alone, then
        raised by ``presumed_normal`` frames if any (see ``presume_normal``). Zero-shot bootstrapping passes
        the frames it found most typical of the line as shots, the next most typical as presumed normal."""
        self._check_features_local("use_normal_shots")
        new = [as_rgb(im, color_order) for im in images]
        if not new:
            raise InputError("use_normal_shots needs at least one image")
        sources = (EDGE_SHOT,) * len(new)
        if len(presumed_normal) == 0:
            return self._refit(new, sources)
        presumed = encode_images(self._backend, [as_rgb(im, color_order) for im in presumed_normal], self._prep)
        self._refit(new, sources, presumed)
        return self._raise_to(presumed)

    def presume_normal(self, frames: Sequence[ImageLike], color_order: str = "bgr") -> Calibration:
        """Raise the threshold to a robust bound (median + 3 robust standard deviations) of these frames'
        scores: frames of the running line, believed mostly normal but not checked, kept out of the bank.

        Shots give a lenient threshold, the more so the fewer they are (``benchmarks/line.py``, measured in
        docs/accuracy.md).
        The first frames of the line, presumed normal, show its real spread; a few defects among them cannot
        drag the robust bound up. The shots are fitted again with the frames as more evidence for the layout
        (``placement``): two plates from one capture look aligned, the line's plates do not, and an aligned
        bank would score every shifted plate high. Never below the shots' own threshold; a second call starts
        again from the shots."""
        self._check_features_local("presume_normal")
        rgbs = [as_rgb(im, color_order) for im in frames]
        if len(rgbs) < 2:
            raise InputError(f"presume_normal needs at least 2 frames for a spread, got {len(rgbs)}")
        features = encode_images(self._backend, rgbs, self._prep)
        self._refit(self._bundle_shots(), self._shot_sources, features)  # deterministic: same shots, same fit
        return self._raise_to(features)

    def _check_features_local(self, what: str) -> None:
        """A remote backend (Triton) keeps the features and the bank on its server: nothing can be fitted here."""
        if getattr(self._backend, "remote", False):
            raise InputError(
                f"{what} needs the bundle's features on this machine, and the {self.backend_name} backend keeps "
                "them on its server: fit with a local backend, save the bundle and serve that one"
            )

    def _raise_to(self, features: np.ndarray) -> Calibration:
        """Raise the current fit's threshold by the scores of presumed-normal frames, given as patch features
        ``[F x N x D]`` (``presume_normal``)."""
        decoded = [self._backend.decode(f[None], self._memory_bank) for f in features]
        scores = np.concatenate([score for _, score in decoded])
        map_scores = [float(anomaly_map.max()) for anomaly_map, _ in decoded]
        calibration = raise_to_presumed_normal(self._fit.calibration, scores, map_scores)
        self._fit = replace(self._fit, calibration=calibration)
        self._calibration_threshold = calibration.threshold
        self._calibration_map_threshold = calibration.map_threshold
        return calibration

    @property
    def layout(self) -> str:
        """Where patches find their match (``placement``): ``aligned`` or ``free``, as the current shots set it."""
        return self._fit.layout if self._fit is not None else self.bundle.manifest.memory_bank.layout

    @property
    def aligned_share(self) -> float | None:
        """The evidence the layout was chosen on (``placement.aligned_share``; None with one shot)."""
        if self._fit is not None:
            return self._fit.aligned_share
        return self.bundle.manifest.memory_bank.aligned_share

    def _refit(
        self, shots: list[np.ndarray], sources: tuple[str, ...], presumed_features: np.ndarray | None = None
    ) -> Calibration:
        """Bank and threshold from ``shots`` (``sources``: where each came from, for the manifest);
        ``presumed_features``, of frames presumed normal, only add evidence for the layout."""
        self._check_features_local("fitting shots")
        options = self.bundle.manifest.fit  # as asked at export: "auto" is decided again from these shots
        fit = fit_normal_shots(
            self._backend, shots, self._prep, options.max_bank, options.seed, options.augmentation, options.layout,
            presumed_features, self.bundle.manifest.decoder.score_features, self.bundle.manifest.encoder.bank_features,
        )  # fmt: skip
        self._shots = fit.shots
        self._shot_sources = sources
        self._memory_bank = fit.memory_bank
        self._calibration_threshold = fit.calibration.threshold
        self._calibration_map_threshold = fit.calibration.map_threshold
        self._fit = fit
        return fit.calibration

    def save(self, out: str | Path) -> Bundle:
        """Write the current state (with any added shots) as a new, sealed bundle."""
        out = Path(out)
        if out.resolve() == self.bundle.root.resolve():
            raise InputError("save to a new directory; the loaded bundle stays as it was")
        fit = self._fit
        if fit is None:
            raise InputError("nothing changed since load: copy the bundle instead")
        out.mkdir(parents=True, exist_ok=False)
        for role in (fmt.ROLE_ENCODER, fmt.ROLE_DECODER):
            shutil.copy2(self.bundle.path_of(role), out / self.bundle.path_of(role).name)
        kept = {}  # the language model goes along; engines do not (profiled for the old bank, and GPU-specific)
        for role in (fmt.ROLE_LLM, fmt.ROLE_LLM_ADAPTER):
            for path in self.bundle.files_of(role):
                name = path.relative_to(self.bundle.root).as_posix()
                shutil.copy2(path, out / name)
                kept[name] = role
        manifest = replace(self.bundle.manifest, **fitted_sections(fit), engines=(), shot_sources=self._shot_sources)
        return write_fitted_bundle(out, manifest, fit, kept)

    def inspect(self, frame: ImageLike | Sequence[ImageLike], color_order: str = "bgr"):
        """One frame (array or path) -> ``InspectionResult``; a list of frames -> a list, run as one batch."""
        if isinstance(frame, (list, tuple)):
            return self.inspect_batch(frame, color_order)
        return self.inspect_batch([frame], color_order)[0]

    def inspect_batch(self, frames: Sequence[ImageLike], color_order: str = "bgr") -> list[InspectionResult]:
        return self.decide(self.encode_frames(frames, color_order))

    def encode_frames(self, frames: Sequence[ImageLike], color_order: str = "bgr") -> EncodedFrames:
        """The first half of ``inspect``: frames -> patch features. Split from ``decide`` so a stream can
        encode frame t+1 while frame t is decoded (``runtime.stream``, ``pipelined``)."""
        if not frames:
            raise InputError("inspect needs at least one frame")
        t0 = time.perf_counter()
        rgbs = [as_rgb(f, color_order) for f in frames]
        batch = self._prep.batch(rgbs)
        t1 = time.perf_counter()
        features = self._backend.encode(batch)
        t2 = time.perf_counter()
        sources = [str(f) if isinstance(f, (str, Path)) else None for f in frames]
        per = 1000.0 / len(frames)
        return EncodedFrames(rgbs, features, sources, {"preprocess": (t1 - t0) * per, "encoder": (t2 - t1) * per})

    def decide(self, encoded: EncodedFrames) -> list[InspectionResult]:
        """The second half of ``inspect``: features -> maps, scores and findings against the current bank."""
        t2 = time.perf_counter()
        maps, scores = self._backend.decode(encoded.features, self._memory_bank)
        t3 = time.perf_counter()
        if not (np.isfinite(scores).all() and np.isfinite(maps).all()):
            raise InferenceError(
                f"the {self.backend_name} backend gave a non-finite score or map for {len(encoded.rgbs)} frame(s); "
                "no decision is made (check the bundle and the backend)"
            )
        latency = {**encoded.latency_ms, "decoder": (t3 - t2) * 1000.0 / len(encoded.rgbs)}
        return [
            self.finding(rgb, m, float(s), source, latency)
            for rgb, m, s, source in zip(encoded.rgbs, maps, scores, encoded.sources)
        ]

    def finding(
        self,
        rgb: np.ndarray,
        input_map: np.ndarray,
        score: float,
        source=None,
        latency: dict | None = None,
        threshold: float | None = None,
    ) -> InspectionResult:
        """A frame's result from its anomaly map and score, against ``threshold`` (default: the bundle's, and
        the map's own for the regions; zero-shot scoring brings its own, and its score is the map's maximum).

        A flagged frame always names a region: where the map stays below its own threshold (the score's
        parts saw what the map's did not), the region is its peak."""
        start = time.perf_counter()
        h, w = rgb.shape[:2]
        map_threshold = self.map_threshold if threshold is None else threshold
        threshold = self.threshold if threshold is None else threshold
        regions = []
        if score >= threshold:
            regions = find_regions(input_map, min(map_threshold, float(input_map.max())), (w, h))
        full_map = (
            input_map if input_map.shape == (h, w) else cv2.resize(input_map, (w, h), interpolation=cv2.INTER_LINEAR)
        )
        findings_ms = (time.perf_counter() - start) * 1000.0
        return InspectionResult(
            score=score,
            threshold=threshold,
            map_threshold=map_threshold,
            is_anomalous=score >= threshold,
            anomaly_map=full_map,
            regions=tuple(regions),
            object_name=self.bundle.object_name,
            source=str(source) if source is not None else None,
            latency_ms={**(latency or {}), "findings": findings_ms},
        )
