# The orchestrator image: Flask under gunicorn, no TensorFlow (requirements/orchestrator.txt only).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements/orchestrator.txt requirements/orchestrator.txt
RUN pip install --no-cache-dir -r requirements/orchestrator.txt
COPY orchestrator/ orchestrator/
COPY serving/__init__.py serving/contract.py serving/tensors.py serving/config.py serving/repository.py serving/
COPY serving/wire/ serving/wire/
COPY configs/ configs/
RUN useradd --system --uid 10001 shine
USER shine
EXPOSE 8000
CMD ["gunicorn", "-c", "configs/gunicorn.conf.py", "orchestrator.wsgi:app"]
