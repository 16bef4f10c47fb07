# fedsilo server image: the coordinating centre's aggregator: fedsilo server run.
#
# Base: the official PyTorch runtime image for torch 2.13.0 (CUDA 13.0, cuDNN 9, Python 3.11),
# pinned by digest (the tag is kept for readers; the digest is what is pulled). Its CUDA build
# of torch is kept: docker/requirements-image.lock is requirements.lock compiled without torch,
# installed with --require-hashes, and the build stops if the base does not carry torch 2.13.0
# on Python 3.11. Updating the base or the pins: see docker/README.md.
# Built by `cdk deploy` as a CDK image asset (context: the repository root, filtered by
# stacks/images.py); by hand: docker build -f docker/server.Dockerfile .
# checkov:skip=CKV_DOCKER_2: a batch task with no listening port has no health endpoint to probe; ECS ignores a Dockerfile HEALTHCHECK and watches the task's process, whose exit status it reports
FROM pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime@sha256:db80a41f8428644cebcb3d75b0b62df334ab6c0e75785951eb25f48bfbd42407

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FEDSILO_LOG_FORMAT=json

WORKDIR /opt/fedsilo

COPY docker/requirements-image.lock ./
RUN python -c "import sys, torch; assert sys.version_info[:2] == (3, 11), sys.version; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
    && pip install --no-cache-dir --require-hashes -r requirements-image.lock \
    && python -c "import torch; assert torch.__version__.startswith('2.13.0') and torch.version.cuda, torch.__version__"

COPY pyproject.toml README.md ./
COPY fedsilo ./fedsilo
COPY fl_core ./fl_core
COPY fl_client ./fl_client
COPY fl_server ./fl_server
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && fedsilo --help > /dev/null \
    && useradd --system --uid 10001 --create-home --home-dir /home/fedsilo fedsilo

USER 10001:10001
WORKDIR /home/fedsilo

# FedAvg's compiled sum (numba) is compiled here once, into the user's own cache, so that an
# aggregator task loads it instead of compiling it at every start.
ENV NUMBA_CACHE_DIR=/home/fedsilo/.cache/numba
RUN python -c "from fl_core.compiled_sum import prepare; prepare()"

ENTRYPOINT ["fedsilo"]
CMD ["server", "run"]
