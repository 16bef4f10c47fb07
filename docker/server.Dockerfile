# fedsilo server image: the coordinating centre's aggregator: fedsilo server run.
#
# Base: the official PyTorch runtime image for torch 2.13.0 (CUDA 13.0, cuDNN 9, Python 3.11),
# pinned to its exact tag. Its CUDA build of torch is kept: the lock file's torch==2.13.0 line
# is filtered out so that pip does not replace it with a CPU or differently built wheel, and
# the build stops if the base does not carry torch 2.13.0 on Python 3.11.
# Built by `cdk deploy` as a CDK image asset (context: the repository root, filtered by
# stacks/images.py); by hand: docker build -f docker/server.Dockerfile .
FROM pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FEDSILO_LOG_FORMAT=json

WORKDIR /opt/fedsilo

COPY requirements.lock ./
RUN python -c "import sys, torch; assert sys.version_info[:2] == (3, 11), sys.version; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
    && grep -v -E '^torch(==|$)' requirements.lock > /tmp/requirements-without-torch.txt \
    && pip install --no-cache-dir -r /tmp/requirements-without-torch.txt \
    && rm /tmp/requirements-without-torch.txt

COPY pyproject.toml README.md ./
COPY fedsilo ./fedsilo
COPY fl_core ./fl_core
COPY fl_client ./fl_client
COPY fl_server ./fl_server
RUN pip install --no-cache-dir --no-deps . \
    && fedsilo --help > /dev/null \
    && useradd --system --uid 10001 --create-home --home-dir /home/fedsilo fedsilo

USER 10001:10001
WORKDIR /home/fedsilo

ENTRYPOINT ["fedsilo"]
CMD ["server", "run"]
