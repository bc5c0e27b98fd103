"""The options of ``gclf serve`` (:class:`ServeConfig`), apart from the service so that the command
line can show their defaults without importing the serve extra."""

from __future__ import annotations

from dataclasses import dataclass

from gclf.deploy import available_cores
from gclf.faces.detect import DEFAULT_MAX_FACES, DEFAULT_MIN_FACE_SIZE

STOPPED = "stopped cleanly"  # logged by each worker at the end of its shutdown (gclf bench-serve checks)


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``gclf serve`` takes; plain values, so it travels to the workers as JSON."""

    model: str
    detect_faces: bool = False
    min_face_size: int = DEFAULT_MIN_FACE_SIZE
    max_faces: int = DEFAULT_MAX_FACES
    tta: bool = False
    threshold: float | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_upload_mb: float = 10.0
    max_files: int = 32
    max_megapixels: float = 12.0  # a 12 MP phone photo passes; decoded, it is 36 MB (docs/serve.md)
    timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    deadline_s: float = 30.0
    max_queue: int = 64  # requests; 64 clients never see a 503, even when one worker holds all of them
    max_queue_images: int = 512

    @property
    def threads(self) -> int:
        """Inference threads per worker: the workers share the cores, never oversubscribe them."""
        return max(1, available_cores() // self.workers)

    @property
    def max_pixels(self) -> int:
        return round(self.max_megapixels * 1_000_000)
