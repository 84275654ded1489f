"""The published model.onnx works for a consumer with nothing but onnxruntime, and in Ultralytics.

The consumer side is written here from scratch (letterbox, decode of the YOLOv8 head, NMS),
as a user's edge service would, against the file fetched back from the models store.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.export.pipeline import export_and_publish
from tests.fixtures.checkpoints import Trained
from trainforge.registry import resolve
from trainforge.spec import parse_spec
from trainforge.storage import open_location

pytestmark = pytest.mark.slow

PAD_RIGHT = 16  # images are widened to 64x80 so the letterbox really pads


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio, pad to size x size with grey 114; NCHW RGB float32."""
    h, w = image.shape[:2]
    ratio = min(size / h, size / w)
    nh, nw = round(h * ratio), round(w * ratio)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas = np.full((size, size, 3), 114, np.uint8)
    canvas[top:top + nh, left:left + nw] = cv2.resize(image, (nw, nh),
                                                      interpolation=cv2.INTER_LINEAR)
    blob = canvas[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return np.ascontiguousarray(blob), ratio, (left, top)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = list(np.argsort(-scores))
    keep: list[int] = []
    while order:
        best = order.pop(0)
        keep.append(best)
        order = [i for i in order if box_iou(boxes[best], boxes[i]) < iou]
    return keep


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def detect(session: object, image: np.ndarray, size: int, conf: float = 0.25,
           iou: float = 0.5) -> list[tuple[np.ndarray, float, int]]:
    """(xyxy box in image pixels, score, class) per detection.

    The YOLOv8 head outputs (1, 4 + classes, anchors): cx, cy, w, h in input pixels, then
    one sigmoid score per class.
    """
    blob, ratio, (left, top) = letterbox(image, size)
    name = session.get_inputs()[0].name  # type: ignore[attr-defined]
    pred = session.run(None, {name: blob})[0][0].T  # type: ignore[attr-defined]
    scores, classes = pred[:, 4:].max(axis=1), pred[:, 4:].argmax(axis=1)
    mask = scores >= conf
    cx, cy, w, h = pred[mask, :4].T
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    boxes = (boxes - [left, top, left, top]) / ratio
    kept = nms(boxes, scores[mask], iou)
    return [(boxes[i], float(scores[mask][i]), int(classes[mask][i])) for i in kept]


def _widened(image_path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """A test image padded on the right, and its ground-truth boxes in pixels."""
    image = cv2.imread(str(image_path))
    h, w = image.shape[:2]
    wide = cv2.copyMakeBorder(image, 0, 0, 0, PAD_RIGHT, cv2.BORDER_REPLICATE)
    label = image_path.parent.parent / "labels" / (image_path.stem + ".txt")
    truth = []
    for line in label.read_text().splitlines():
        _, cx, cy, bw, bh = map(float, line.split())
        truth.append(np.array([(cx - bw / 2) * w, (cy - bh / 2) * h,
                               (cx + bw / 2) * w, (cy + bh / 2) * h]))
    return wide, truth


def test_published_onnx_detects_in_plain_onnxruntime_and_in_ultralytics(
    trained: Trained, tmp_path: Path
) -> None:
    import onnxruntime as ort
    from ultralytics.models.yolo.model import YOLO

    spec = parse_spec({"kind": "export", "name": "shapes", "dataset": {"uri": str(trained.dataset)},
                       "model": {"base": f"file://{trained.weights}"},
                       "export": {"formats": ["onnx"]}})
    models_uri = f"file://{tmp_path}/models"
    outcome = export_and_publish(spec, job_id="v1", weights=trained.weights,
                                 data_yaml=trained.data_yaml, workdir=tmp_path / "work",
                                 models_uri=models_uri)
    assert outcome.formats["onnx"].status == "passed"
    # The consumer fetches the published file, knowing only the model name and version.
    store, key = open_location(resolve("registry://shapes@v1", models_uri, "model.onnx"))
    model = tmp_path / "consumer" / "model.onnx"
    store.download(key, model)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    size = int(session.get_inputs()[0].shape[2])
    assert size == 64
    stock = YOLO(str(model), task="detect")

    found = total = 0
    for image_path in sorted((trained.dataset / "test" / "images").glob("*.png"))[:8]:
        image, truth = _widened(image_path)
        ours = detect(session, image, size)
        total += len(truth)
        found += sum(any(box_iou(t, d[0]) >= 0.5 and d[2] == 0 for d in ours) for t in truth)
        theirs = stock.predict(image, imgsz=size, conf=0.25, iou=0.5, verbose=False)[0]
        their_boxes = theirs.boxes.xyxy.numpy()
        # Same file, same letterbox idea: the two consumers agree box for box.
        assert len(their_boxes) == len(ours), (image_path.name, their_boxes, ours)
        for box, _, _ in ours:
            assert max(box_iou(box, b) for b in their_boxes) > 0.85
    print(f"onnxruntime consumer found {found} of {total} objects")
    assert total > 0 and found / total >= 0.6, (found, total)
