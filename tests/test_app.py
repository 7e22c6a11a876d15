"""The web app (app.py, features/webapp/): its endpoints through gradio_client as another program calls them, the
files it serves and refuses through raw HTTP requests, and its decisions kept across a restart. The page in a real
browser is tests/test_app_browser.py."""

import json
import re
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the app's extra: pip install -r requirements-app.txt")

from features.data import corrections
from features.webapp import app
from features.webapp.serve import check_host
from helpers import COLOURS, classified_with_corrections, colour_run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on a run, served on 127.0.0.1 in this process: ``(url, app, photos, cache, run, planted)``."""
    root = tmp_path_factory.mktemp("app")
    photos, cache, run, wrong = colour_run(root)
    outside = root / "secret.txt"
    outside.write_text("not for the app to serve")
    (photos / "red" / "link.png").symlink_to(outside)  # a link out of the data folder
    made = app([root / "runs"], corrections=root / "corrections.jsonl", audits_dir=root / "audits")
    _, url, _ = made.launch(port=None)
    yield url, made, photos, cache, run, wrong
    made.close()


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def _status(url) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_try_it_answers_a_photo_with_its_class_a_heatmap_and_what_answered(served):
    from gradio_client import handle_file

    url, made, photos, _, run, _ = served
    top, heatmap, info = _client(url).predict(run=str(run), photo=handle_file(str(photos / "blue" / "blue3.png")),
                                              api_name="/try_photo")
    assert top["label"] == "blue" and {c["label"] for c in top["confidences"]} == {"blue", "red"}
    assert Path(heatmap).is_file() and Path(heatmap).stat().st_size > 1000
    assert run.name in info and "frozen-features on efficientnet_lite0" in info and " s." in info


def _png(width: int, height: int, depth: int = 8, pixels: bytes | None = None) -> bytes:
    """A PNG whose header says ``width`` x ``height`` (its pixels, where given, zlib-compressed)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = pixels if pixels is not None else b"\0" * (height * (1 + width * 3 * depth // 8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind,needle", [
    ("not an image", "Cannot answer:"),
    ("decompression bomb", "Cannot answer:"),
    ("1x1", None),
    ("16-bit", None),
])
def test_a_bad_upload_is_a_message_in_the_page_and_the_app_keeps_serving(kind, needle, served, tmp_path):
    from gradio_client import handle_file

    url, _, photos, _, run, _ = served
    path = tmp_path / "upload.png"
    if kind == "not an image":
        path.write_text("<html>not a photo</html>")
    elif kind == "decompression bomb":  # 30,000 x 30,000 pixels in a few kilobytes
        path.write_bytes(_png(30000, 30000, pixels=b"\0" * 1000))
    elif kind == "1x1":
        path.write_bytes(_png(1, 1, pixels=b"\0\xff\0\0"))
    else:
        from PIL import Image

        Image.fromarray((np.full((20, 20), 40000)).astype(np.uint16)).save(path)
    client = _client(url)
    top, heatmap, info = client.predict(run=str(run), photo=handle_file(str(path)), api_name="/try_photo")
    if needle:
        assert needle in info and "Traceback" not in info and not top and not heatmap, info
    else:
        assert top["label"] in COLOURS, info
    again, _, _ = client.predict(run=str(run), photo=handle_file(str(photos / "red" / "red1.png")),
                                 api_name="/try_photo")
    assert again["label"] == "red"  # still serving


def test_only_the_runs_photos_and_the_apps_pictures_are_served(served, tmp_path):
    url, made, photos, cache, run, _ = served
    file_url = url.rstrip("/") + "/gradio_api/file="
    assert _status(file_url + str(photos / "red" / "red0.png")) == 200
    refused = [Path("/etc/passwd"), cache, run / "metrics.json", Path(__file__), made.bench.corrections.parent,
               photos / "red" / "link.png",  # a link out of the data folder
               Path(f"{photos}/red/../../secret.txt"), Path(f"{photos}/../secret.txt")]
    for path in refused:
        assert _status(file_url + str(path)) in (403, 404), path
    page = urllib.request.urlopen(url, timeout=30).read().decode()
    fetched = re.findall(r"""(?:src|href)\s*=\s*["']?(https?://[^"' >]+)|@import\s+url\(["']?(https?://[^"')]+)""",
                         page)
    outside = {u for pair in fetched for u in pair if u and "127.0.0.1" not in u}
    assert not outside, outside  # no script, style or font from the internet: the page loads offline


def test_an_upload_past_the_limit_is_refused_before_the_app_reads_it(served, tmp_path):
    from gradio_client import handle_file

    url, _, _, _, run, _ = served
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (26 << 20))
    with pytest.raises(Exception, match="(?i)size|large|exceed"):
        _client(url).predict(run=str(run), photo=handle_file(str(big)), api_name="/try_photo")


def test_mistakes_and_the_confusion_matrix(served):
    url, _, _, _, run, _ = served
    matrix, wrong, note = _client(url).predict(run=str(run), api_name="/mistakes")
    assert matrix["headers"][1:] == ["blue", "red"] and note == ""
    counts = [row[1:] for row in matrix["data"]]
    assert sum(map(sum, counts)) > 0 and len(wrong) == counts[0][1] + counts[1][0]


def test_review_runs_the_audit_and_a_decision_survives_a_restart(served):
    url, made, photos, cache, run, planted = served
    client = _client(url)
    table, status, command, _ = client.predict(run=str(run), kind="all", label="all", api_name="/run_audit")
    rows = table["data"]
    flagged = [r for r in rows if r[0] == "label error" and r[1] in planted]
    assert flagged and flagged[0][3] == "relabel as blue", rows[:5]
    assert "reviewed" in status and f"--corrections {made.bench.corrections.resolve()}" in command or \
        "corrections=" in command
    photo_id = flagged[0][1]
    table, status, _, said = client.predict(run=str(run), photo_id=photo_id, relabel_as="blue", kind="all",
                                            label="all", api_name="/decide_relabel")
    assert "saved" in said and any(r[1] == photo_id and r[4] == "relabel as blue" for r in table["data"])
    line = json.loads(made.bench.corrections.read_text().splitlines()[-1])
    assert (line["id"], line["decision"], line["label"]) == (photo_id, "relabel", "blue")
    restarted = app([run.parent], corrections=made.bench.corrections, audits_dir=made.bench.audits_dir)
    again = restarted.bench.findings(restarted.bench.find_audit(str(run)))
    assert any(r["id"] == photo_id and r["decision"] == "relabel as blue" for r in again)
    assert corrections.read_corrections(made.bench.corrections).decisions[photo_id].label == "blue"


def test_anything_but_this_machine_is_warned_about_and_a_bad_host_refused(caplog):
    from features.errors import UsageError

    assert not check_host("127.0.0.1") and not check_host("localhost") and not check_host("::1")
    assert check_host("0.0.0.0") and check_host("192.168.1.4") and check_host("myhost.example")
    for bad in ("", "a b", None):
        with pytest.raises(UsageError, match="host"):
            check_host(bad)


def test_app_py_refuses_bad_flags_in_one_line(tmp_path, capsys, run_main):
    from features.cli import app as app_cli

    code, out, err = run_main(app_cli.main, ["--host", "a b", str(tmp_path)])
    assert code == 2 and "--host 'a b'" in err and err.count("\n") == 1
    (tmp_path / "c").mkdir()
    code, out, err = run_main(app_cli.main, ["--corrections", str(tmp_path / "c"), str(tmp_path)])
    assert code == 2 and "--corrections" in err and "not a regular file" in err and err.count("\n") == 1


def test_the_corrections_from_the_review_raise_the_accuracy_of_classify(served, tmp_path, run_main):
    url, made, photos, cache, run, planted = served
    for photo_id in planted:
        made.bench.decide(str(run), photo_id, "relabel", label="blue")
    result = classified_with_corrections(run_main, cache, made.bench.corrections, out=tmp_path / "runs")
    assert result["corrections"]["relabelled"] == len(planted)
    assert result["accuracy"] >= result["corrections"]["uncorrected_test_accuracy"]


def test_a_damaged_corrections_file_is_a_message_in_the_review(served, tmp_path):
    url, made, photos, cache, run, _ = served
    if made.bench.find_audit(str(run)) is None:  # findings to review, whatever ran before
        made.bench.run_audit(str(run))
    damaged = app([run.parent], corrections=tmp_path / "c.jsonl", audits_dir=made.bench.audits_dir)
    (tmp_path / "c.jsonl").write_text("{not json\n")
    _, url2, _ = damaged.launch(port=None)
    try:
        table, status, _, _ = _client(url2).predict(str(run), "all", "all", api_name="/review")
        assert "Cannot show the review" in status and "line 1 is not JSON" in status and "Traceback" not in status
    finally:
        damaged.close()


def test_listening_beyond_this_machine_warns_that_anyone_there_can_see_the_photos(served, caplog):
    _, made, *_ = served
    wide = app([made.bench.audits_dir.parent / "runs"], corrections=made.bench.corrections,
               audits_dir=made.bench.audits_dir)
    wide.launch(host="0.0.0.0", port=None)
    try:
        assert "anyone who can reach this address can see the photos and write corrections" in caplog.text
    finally:
        wide.close()


def test_a_port_in_use_is_one_line_naming_it(served):
    from features.errors import UsageError

    url, made, *_ = served
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    second = app([made.bench.audits_dir.parent / "runs"], corrections=made.bench.corrections,
                 audits_dir=made.bench.audits_dir)
    try:
        with pytest.raises(UsageError, match=f"port {port}: cannot listen on 127.0.0.1:{port}"):
            second.launch(port=port)
    finally:
        second.close()
