"""Messy photo folders: every kind of bad or odd file is used correctly, or skipped and listed."""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from features import cache as store
from features.cli import extract
from features.data import decode_image, decoded_images, headers_for, load_folder
from features.errors import DatasetUnavailableError
from helpers import last_json, make_image_folder, write_image

FAST = ["--weights", "none", "--backbone", "mobilenet", "--image-size", "32", "--batch-size", "4", "-q"]
RED, GREEN, BLUE, YELLOW = (220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 230, 20)


def quadrants(size=32) -> np.ndarray:
    """Four coloured quadrants: any rotation or mirror of it is a different image."""
    h = size // 2
    image = np.zeros((size, size, 3), np.uint8)
    image[:h, :h], image[:h, h:], image[h:, :h], image[h:, h:] = RED, GREEN, BLUE, YELLOW
    return image


def with_orientation(path: Path, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(quadrants()).save(path, quality=95, exif=exif.tobytes())
    return path


def png_bomb(path: Path, side: int = 20_000) -> Path:
    """A real PNG of side x side 1-bit pixels (400 megapixels) in about 50 KB."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + side // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    """Class "odd" holds one of each kind; "plain" ordinary photos; "linked" is a symlink."""
    root = tmp_path_factory.mktemp("messy") / "photos"
    odd, plain = root / "odd", root / "plain"
    for i in range(8):
        write_image(plain / f"p{i}.jpg", seed=i)
    odd.mkdir(parents=True)
    (odd / "empty.jpg").write_bytes(b"")
    good = write_image(odd / "good.jpg", seed=50, size=(40, 60)).read_bytes()
    (odd / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (odd / "page.jpg").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    write_image(odd / "png_inside.jpg", seed=51, fmt="PNG")
    Image.fromarray(np.full((20, 20, 3), RED, np.uint8)).convert("CMYK").save(odd / "cmyk.jpg", quality=95)
    Image.fromarray(np.full((20, 20), 90, np.uint8)).save(odd / "gray.jpg")
    Image.fromarray(np.full((20, 20), 32768, np.uint16)).save(odd / "gray16.png")
    Image.fromarray(np.full((20, 20, 4), (*GREEN, 128), np.uint8)).save(odd / "rgba.png")
    Image.fromarray(np.full((20, 20, 3), BLUE, np.uint8)).convert("P").save(odd / "palette.png")
    frames = [Image.fromarray(np.full((20, 20, 3), c, np.uint8)) for c in (RED, BLUE)]
    frames[0].save(odd / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    write_image(odd / "bitmap.bmp", seed=52)
    write_image(odd / "UPPER.JPG", seed=53)
    write_image(odd / "long.jpeg", seed=54)
    write_image(odd / "space and é ü.jpg", seed=55)
    write_image(odd / "one_pixel.png", seed=56, size=(1, 1))
    write_image(odd / "wide.png", seed=57, size=(20, 4000))
    with_orientation(odd / "rotated.jpg", 6)
    png_bomb(odd / "bomb.png")
    (odd / "._good.jpg").write_bytes(b"\0\x05\x16\x07 resource fork")
    (odd / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (odd / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    write_image(odd / ".hidden" / "secret.jpg", seed=58)
    write_image(odd / "nested" / "deeper.jpg", seed=59)
    (odd / "notes.txt").write_text("shot on a phone")
    outside = root.parent / "elsewhere" / "linked"
    for i in range(6):
        write_image(outside / f"l{i}.png", seed=70 + i)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    return root


BAD = {"odd/empty.jpg": "empty file", "odd/truncated.jpg": "truncated or corrupt",
       "odd/page.jpg": "not an image", "odd/bomb.png": "over the pixel limit"}


@pytest.mark.slow
def test_every_kind_is_used_or_skipped_with_its_reason(messy, tmp_path, capsys):
    code = extract.main(["--data-dir", str(messy), "--out", str(tmp_path), "--json", *FAST])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = last_json(out)
    cache = store.read_cache(result["cache"])
    skipped = {s.id: s.reason for s in cache.skipped}
    assert set(skipped) == set(BAD)
    assert {s.id: s.kind for s in cache.skipped} == BAD  # the kind is recorded, not guessed from text
    assert {s["id"]: s["kind"] for s in result["skipped_files"]} == BAD
    assert "pixel limit" in skipped["odd/bomb.png"] and "raise --max-pixels" in out
    assert result["skipped_by_kind"] == {kind: 1 for kind in BAD.values()}
    assert result["ignored_files"] == {"hidden": 4, "not an image extension": 1}
    assert "skipped by kind:" in out and "ignored files: hidden 4, not an image extension 1" in out
    used = set(cache.ids.tolist())
    odd_used = {i for i in used if i.startswith("odd/")}
    assert len(odd_used) == 16 and "odd/nested/deeper.jpg" in used and "odd/space and é ü.jpg" in used
    assert not any("/." in i or i.split("/")[-1].startswith(".") for i in used)
    assert {i for i in used if i.startswith("linked/")} == {f"linked/l{i}.png" for i in range(6)}
    for row_id, label in zip(cache.ids, cache.labels):  # no label shifted by a skipped file
        assert cache.class_names[label] == row_id.split("/")[0]


def _decoded(messy, name, size=16):
    source = load_folder(messy)
    row = source.ids.index(f"odd/{name}")
    return next(iter(decoded_images(source, size, indices=[row])))[1].numpy()


@pytest.mark.parametrize("name,colour", [("cmyk.jpg", RED), ("gray.jpg", (90, 90, 90)),
                                         ("gray16.png", (128, 128, 128)), ("rgba.png", GREEN),
                                         ("palette.png", BLUE), ("animated.gif", RED)])
def test_odd_formats_decode_to_the_right_colours(messy, name, colour):
    image = _decoded(messy, name)
    assert image.shape == (16, 16, 3)
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0), colour, atol=6)


def test_tiny_and_extreme_aspect_ratio_images_are_resized(messy):
    assert _decoded(messy, "one_pixel.png").shape == (16, 16, 3)
    wide = _decoded(messy, "wide.png")
    assert wide.shape == (16, 16, 3) and np.isfinite(wide).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured_as_a_photo_viewer_does(tmp_path, orientation):
    path = with_orientation(tmp_path / f"o{orientation}.jpg", orientation)
    source = load_folder(_two_classes(tmp_path, path))
    row = source.ids.index(f"a/{path.name}")
    headers = headers_for(source, 32, [row])
    assert headers.orientation[row] == orientation
    import tensorflow as tf

    ours = decode_image(tf.io.read_file(str(path)), 32, orientation=int(headers.orientation[row])).numpy()
    with Image.open(path) as im:
        viewer = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), np.float32)
    assert np.abs(ours - viewer).mean() < 8  # two JPEG decoders; a wrong turn differs by ~100


def _two_classes(tmp_path, path):
    root = tmp_path / "two"
    (root / "a").mkdir(parents=True, exist_ok=True)
    (root / "a" / path.name).write_bytes(path.read_bytes())
    write_image(root / "b" / "b.jpg", seed=1)
    return root


def test_the_bomb_is_refused_by_its_header_before_decoding(messy):
    source = load_folder(messy)
    row = source.ids.index("odd/bomb.png")
    headers = headers_for(source, 224, [row])
    assert headers.refused[row].kind == "over the pixel limit"
    assert "20000x20000 = 400,000,000 pixels" in headers.refused[row].reason
    rows = [i for i, _ in decoded_images(source, 16, indices=[row, row + 1])]
    assert [int(i) for i in rows] == [row + 1]


@pytest.mark.slow
def test_max_pixels_flag_sets_the_limit(tmp_path, capsys):
    root = tmp_path / "small"
    for c in ("a", "b"):
        for i in range(4):
            write_image(root / c / f"{i}.png", seed=i, size=(20, 30))
    write_image(root / "a" / "big.png", seed=9, size=(60, 80))
    code = extract.main(["--data-dir", str(root), "--out", str(tmp_path / "e"), "--max-pixels", "1000",
                         "--json", *FAST])
    result = last_json(capsys.readouterr().out)
    assert code == 0 and [s["id"] for s in result["skipped_files"]] == ["a/big.png"]
    code = extract.main(["--data-dir", str(root), "--out", str(tmp_path / "e2"), "--max-pixels", "0",
                         "--json", *FAST])
    assert code == 0 and last_json(capsys.readouterr().out)["skipped"] == 0
    code = extract.main(["--data-dir", str(root), "--max-pixels", "-5", *FAST])
    assert code == 2 and "--max-pixels -5" in capsys.readouterr().err


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    root = tmp_path / "d"
    write_image(root / "a" / "1.jpg", seed=1)
    write_image(root / "b" / "1.jpg", seed=2)
    (root / "c").mkdir()
    (root / "c" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DatasetUnavailableError, match="class folder.s. c hold no images"):
        load_folder(root)


def test_a_class_whose_every_file_is_bad_is_warned_about(tmp_path, capsys):
    root = tmp_path / "d"
    for i in range(4):
        write_image(root / "a" / f"{i}.jpg", seed=i)
        write_image(root / "b" / f"{i}.jpg", seed=10 + i)
        (root / "c" / f"{i}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (root / "c" / f"{i}.jpg").write_text("not a photo")
    code = extract.main(["--data-dir", str(root), "--out", str(tmp_path / "e"), "--json", *FAST])
    out, err = capsys.readouterr()
    assert code == 0
    assert last_json(out)["empty_classes"] == ["c"]
    assert "every image of class c was skipped" in out


def test_a_worker_decodes_a_batch_of_paths_as_the_pipeline_does(messy):
    """decode_paths: no DataSource, same pixels, same skips (kinds included) as the tf.data pipeline."""
    from features.data import decode_paths, why_skipped

    source = load_folder(messy)
    rows = [i for i, name in enumerate(source.ids) if name.startswith("odd/")]
    paths = [source.paths()[i] for i in rows]
    got_rows, images, skipped = decode_paths(paths, 24)
    piped = {int(i): image.numpy() for i, image in decoded_images(source, 24, indices=rows)}
    assert [rows[r] for r in got_rows] == sorted(piped)
    for r, image in zip(got_rows, images):
        np.testing.assert_array_equal(image, piped[rows[r]])
    kinds = {source.ids[rows[r]]: skip.kind for r, skip in skipped.items()}
    assert kinds == BAD
    assert all(skip == why_skipped(source, rows[r]) for r, skip in skipped.items())


def test_special_files_in_a_class_folder_are_skipped_with_their_reason(tmp_path, capsys):
    import os

    root = tmp_path / "d"
    for c in ("a", "b"):
        for i in range(4):
            write_image(root / c / f"{i}.jpg", seed=i)
    (root / "a" / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(root / "b" / "pipe.jpg")
    code = extract.main(["--data-dir", str(root), "--out", str(tmp_path / "e"), "--json", *FAST])
    result = last_json(capsys.readouterr().out)
    assert code == 0 and result["images"] == 8
    assert {s["id"]: s["kind"] for s in result["skipped_files"]} == {"a/zero.jpg": "not a regular file",
                                                                     "b/pipe.jpg": "not a regular file"}


def test_a_link_from_one_class_folder_into_another_is_not_followed(tmp_path, caplog):
    root = tmp_path / "d"
    for i in range(3):
        write_image(root / "daisy" / f"{i}.jpg", seed=i)
        write_image(root / "roses" / f"{i}.jpg", seed=10 + i)
    (root / "daisy" / "more").symlink_to("../roses", target_is_directory=True)
    (root / "daisy" / "one.jpg").symlink_to("../roses/0.jpg")
    source = load_folder(root)
    assert sorted(source.ids) == [f"daisy/{i}.jpg" for i in range(3)] + [f"roses/{i}.jpg" for i in range(3)]
    for row_id, label in zip(source.ids, source.labels):
        assert source.class_names[label] == row_id.split("/")[0]
    assert source.ignored == {"link into another class folder": 2}
    assert "daisy/more links into another class folder" in caplog.text


def test_a_file_name_that_is_not_utf8_never_blocks_the_dataset(tmp_path, capsys):
    import os

    root = tmp_path / "d"
    for c in ("a", "b"):
        for i in range(4):
            write_image(root / c / f"{i}.jpg", seed=i)
    bad = os.path.join(os.fsencode(root / "a"), b"caf\xe9.jpg")  # Latin-1, as an old camera wrote it
    with open(bad, "wb") as f:
        f.write((root / "a" / "0.jpg").read_bytes())
    code = extract.main(["--data-dir", str(root), "--out", str(tmp_path / "e"), "--json", *FAST])
    result = last_json(capsys.readouterr().out)
    assert code == 0 and result["images"] == 8
    assert result["ignored_files"] == {"name not valid UTF-8": 1}

ROOT = Path(__file__).resolve().parents[1]
LITE = ["--backbone", "efficientnet_lite0", "--weights", "none", "--image-size", "32", "-q"]  # random weights: fast


def _gif(path: Path, width: int, height: int, frames: int) -> Path:
    """A GIF whose logical screen is width x height and whose every frame changes one pixel: a few bytes a
    frame in the file; every frame decoded to the whole screen by the decoder."""
    import struct

    out = [b"GIF89a", struct.pack("<HHBBB", width, height, 0xF0, 0, 0), b"\x00\x00\x00\xff\xff\xff",
           b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"]
    for n in range(frames):
        out += [b"!\xf9\x04\x04\x00\x00\x00\x00",  # graphic control: do not dispose
                b"," + struct.pack("<HHHHB", n % width, 0, 1, 1, 0),  # a 1x1 image
                b"\x02\x02\x4c\x01\x00"]  # LZW, minimum code size 2: one pixel of colour 1
    path.write_bytes(b"".join(out) + b";")
    return path


def test_an_animated_gifs_frames_count_against_the_pixel_limit(tmp_path, capsys):
    from PIL import Image

    photos = make_image_folder(tmp_path / "pets", per_class=4)
    gif = _gif(photos / "cat" / "bomb.gif", 100, 100, 200)  # 10,000 pixels a frame, 2,000,000 decoded
    with Image.open(gif) as im:
        assert im.n_frames == 200
    assert extract.main(["--data-dir", str(photos), "--out", str(tmp_path / "emb"), "--json", "--max-pixels",
                         "1000000", *LITE]) == 0
    skipped = last_json(capsys.readouterr().out)["skipped_files"]
    assert [s["kind"] for s in skipped] == ["over the pixel limit"] and "x 200 frames" in skipped[0]["reason"]


@pytest.mark.slow
def test_a_gif_bomb_is_refused_in_bounded_memory(tmp_path):
    """600 frames of 2000x2000 in 9 KB decoded to 7 GB (the whole dataset's extraction took 5 GB for such a
    file): now refused by its header. Run under a 3 GB cap, so that a regression fails instead of swapping."""
    photos = make_image_folder(tmp_path / "pets", per_class=3)
    _gif(photos / "cat" / "bomb.gif", 2000, 2000, 600)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30)); "
            "import extract; sys.exit(extract.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "--data-dir", str(photos), "--out", str(tmp_path / "e"),
                           "--json", *LITE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    skipped = last_json(done.stdout)["skipped_files"]
    assert [(s["id"], s["kind"]) for s in skipped] == [("cat/bomb.gif", "over the pixel limit")]
    assert "2000x2000 x 600 frames" in skipped[0]["reason"]


@pytest.mark.parametrize("special", ["zero", "fifo"])
def test_a_file_swapped_for_a_special_one_after_its_header_was_read_is_skipped(special, tmp_path):
    from features.data import decoded_images, headers_for, why_skipped

    source = load_folder(make_image_folder(tmp_path / "pets", per_class=3))
    headers = headers_for(source, 32)  # the header pass sees a regular file ...
    victim = Path(source.paths()[1])
    victim.unlink()
    if special == "zero":  # ... then it becomes a link to /dev/zero, or a FIFO nobody writes to
        victim.symlink_to("/dev/zero")
    else:
        os.mkfifo(victim)
    rows = [int(i) for i, _ in decoded_images(source, 32, headers=headers)]
    assert 1 not in rows and len(rows) == len(source) - 1
    assert why_skipped(source, 1).kind == "not a regular file"


def test_a_dangling_or_looping_link_is_left_out_not_fatal(tmp_path, capsys):
    photos = make_image_folder(tmp_path / "pets", per_class=4)
    (photos / "cat" / "gone.jpg").symlink_to("/nonexistent/photo.jpg")
    (photos / "dog" / "loop.jpg").symlink_to(photos / "dog" / "loop.jpg")
    source = load_folder(photos)
    assert len(source) == 8 and source.ignored["cannot be read (a dangling or looping link, or no permission)"] == 2
    assert extract.main(["--data-dir", str(photos), "--out", str(tmp_path / "e"), "--json", *LITE]) == 0
    assert last_json(capsys.readouterr().out)["images"] == 8
