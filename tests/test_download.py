"""`core download` against a loopback HTTP server serving TFRecords the test makes."""
import http.server
import threading
from functools import partial
from pathlib import Path

import pytest
import tensorflow as tf
from conftest import encode, xray_like

from core import cli
from core.analysis import data
from core.learning.download import DownloadError, download, fetch

NAMES = {"NORMAL": ["IM-0001-0001.jpeg", "IM-0002-0001.jpeg"],
         "PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person2_virus_3.jpeg"]}


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte-range support, as cloud storage gives."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    for split in ("train", "test"):
        folder = root / split
        folder.mkdir(parents=True)
        with tf.io.TFRecordWriter(str(folder / "images.tfrec")) as images, \
                tf.io.TFRecordWriter(str(folder / "paths.tfrec")) as paths:
            for label, names in NAMES.items():
                for i, name in enumerate(names):
                    images.write(encode(xray_like(i, label == "PNEUMONIA", 64)))
                    paths.write(f"gs://bucket/ChestXRay2017/{split}/{label}/{name}".encode())
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def test_download_builds_the_kaggle_layout(server, tmp_path, capsys):
    url, _ = server
    dest = tmp_path / "dest"
    assert cli.main(["download", "--dest", str(dest), "--base-url", url]) == 0
    assert "train: 2 NORMAL, 3 PNEUMONIA" in capsys.readouterr().out
    assert data.available_splits(dest) == ["test", "train"]
    examples = data.list_examples(dest, "train")
    assert sorted(e.path.name for e in examples) == sorted(NAMES["NORMAL"] + NAMES["PNEUMONIA"])
    assert {e.patient for e in examples if e.label == 1} == {"PNEUMONIA/person1", "PNEUMONIA/person2"}


def test_interrupted_download_resumes(server, tmp_path):
    url, root = server
    full = (root / "train" / "images.tfrec").read_bytes()
    target = tmp_path / "images.tfrec"
    target.with_suffix(".tfrec.part").write_bytes(full[:100])  # as left by a broken connection
    seen = []
    fetch(f"{url}/train/images.tfrec", target, lambda done, total, _: seen.append((done, total)))
    assert target.read_bytes() == full
    assert seen[0][0] > 100 and seen[-1] == (len(full), len(full))


def test_corrupt_record_is_detected(server, tmp_path):
    url, root = server
    images = root / "train" / "images.tfrec"
    damaged = bytearray(images.read_bytes())
    damaged[200] ^= 0xFF
    images.write_bytes(bytes(damaged))
    with pytest.raises(DownloadError, match="corrupt"):
        download(tmp_path / "dest", url, splits=["train"])


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match="127.0.0.1"):
        download(tmp_path / "dest", "http://127.0.0.1:9", splits=["train"])
