"""The serve image without a daemon: its Dockerfile's contract and its place in the build.

Building it (FROM the train image) is part of the docker tests' ``images`` fixture.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from taskyard import images

DOCKERFILE = Path(__file__).parents[1] / "images" / "serve" / "Dockerfile"


def test_the_dockerfile_states_the_container_contract() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG TRAIN_IMAGE=ghcr\.io/taskyard/train:0\.1\.0\nFROM \$\{TRAIN_IMAGE\}$",
                     text, re.M)  # fmt: skip
    assert images.tag("train") == "ghcr.io/taskyard/train:0.1.0"
    assert 'org.opencontainers.image.title="taskyard-serve"' in text
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    assert re.findall(r"^USER (\S+)$", text, re.M) == ["65532:65532"]
    assert 'ENTRYPOINT ["python", "-m", "taskyard.serving"]' in text
    assert re.search(r'^CMD \["--help"\]$', text, re.M)  # `docker run IMAGE --model-uri …`
    assert not re.search(r"^(RUN|COPY|ADD) ", text, re.M)  # no layer: train's size


def test_serve_is_built_after_train_and_in_ci() -> None:
    assert [i.name for i in images.select(["serve", "train"])] == ["train", "serve"]
    assert images.IMAGES["serve"].from_image == "train"
    assert images.IMAGES["serve"].from_arg == "TRAIN_IMAGE"
    assert "serve" in [i.name for i in images.select([])]
    assert "serve" not in images.catalog_images()  # no task runs in it


def test_serve_alone_needs_the_train_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")  # no daemon: no image
    with pytest.raises(images.ImageError) as caught:
        images.build(["serve"], registry="registry.example.com/ml", version="9.9.9")
    assert caught.value.args[0] == (
        "serve is built FROM registry.example.com/ml/train:9.9.9, which is not built"
    )
    assert caught.value.hint == "taskyard images build train serve"
