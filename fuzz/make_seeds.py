"""Writes the seed corpora in fuzz/seeds/ (run from the repository root with Pillow and msgpack).

Seeds are tiny valid inputs of each kind a target handles; the fuzzer mutates from there. The
few larger fixtures worth keeping are copied from tests/fixtures/images.
"""

import io
import pathlib
import shutil

import msgpack
from PIL import Image

ROOT = pathlib.Path("fuzz/seeds")
FIXTURES = pathlib.Path("tests/fixtures/images")


def gradient(mode, w, h):
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 37) % 256, (y * 53) % 256, ((x + y) * 29) % 256) for y in range(h) for x in range(w)])
    return img.convert(mode)


def save(target, name, img, fmt, **opts):
    buf = io.BytesIO()
    img.save(buf, fmt, **opts)
    (ROOT / target / name).write_bytes(buf.getvalue())


def images(target, formats):
    for name, (mode, w, h, fmt, opts) in formats.items():
        save(target, name, gradient(mode, w, h), fmt, **opts)


JPEGS = {
    "baseline_420.jpg": ("RGB", 16, 16, "JPEG", {"quality": 80}),
    "baseline_444.jpg": ("RGB", 9, 7, "JPEG", {"quality": 90, "subsampling": 0}),
    "baseline_422.jpg": ("RGB", 12, 8, "JPEG", {"subsampling": 1}),
    "progressive.jpg": ("RGB", 16, 8, "JPEG", {"progressive": True}),
    "grey.jpg": ("L", 8, 8, "JPEG", {}),
    "cmyk.jpg": ("CMYK", 8, 8, "JPEG", {}),
    "optimized_restart.jpg": ("RGB", 24, 16, "JPEG", {"optimize": True, "restart_marker_blocks": 1}),
}

AVIFS = {
    "rgb_420.avif": ("RGB", 8, 8, "AVIF", {"quality": 50}),
    "rgba_444.avif": ("RGBA", 7, 5, "AVIF", {"subsampling": "4:4:4"}),
    "grey.avif": ("L", 6, 6, "AVIF", {}),
}

OTHERS = {
    "palette.png": ("P", 8, 8, "PNG", {}),
    "rgba.png": ("RGBA", 5, 9, "PNG", {}),
    "la.png": ("LA", 4, 4, "PNG", {}),
    "grey16.png": ("I;16", 4, 4, "PNG", {}),
    "palette.gif": ("P", 8, 6, "GIF", {}),
    "rgb.bmp": ("RGB", 5, 3, "BMP", {}),
    "palette.bmp": ("P", 4, 4, "BMP", {}),
    "rgb.tif": ("RGB", 4, 4, "TIFF", {}),
    "grey_lzw.tif": ("L", 6, 4, "TIFF", {"compression": "tiff_lzw"}),
    "lossy.webp": ("RGB", 8, 8, "WEBP", {"quality": 50}),
    "lossless_alpha.webp": ("RGBA", 6, 6, "WEBP", {"lossless": True}),
}


def requests():
    blob = (ROOT / "image_pipeline" / "palette.png").read_bytes()
    tensor = {"dtype": "uint8", "shape": [2, 2, 3], "data": bytes(range(12))}
    reqs = {
        "encode_text.msgpack": {"id": "r1", "docs": [{"id": "a", "text": "a photo of a cat"}]},
        "encode_mixed.msgpack": {
            "id": "r2",
            "docs": [
                {"text": "naïve café — ｆｕｌｌｗｉｄｔｈ &amp; <b>html</b>"},
                {"blob": blob, "mime_type": "image/png"},
                {"uri": "data:image/png;base64,iVBORw0KGgo="},
                {"tensor": tensor},
                {"object": {"bucket": "b", "name": "n"}},
                {},
            ],
            "params": {"normalize": True, "embedding_dtype": "f16", "model": "ViT-B-32::openai"},
        },
        "rank.msgpack": {
            "id": "r3",
            "docs": [{"text": "query", "matches": [{"text": "one"}, {"blob": blob}, {"id": "m3", "text": "three"}]}],
        },
        "bad_types.msgpack": {"id": 7, "docs": [{"text": 5, "matches": "x"}, "not a doc", {"tensor": {"shape": "bad"}}]},
        "no_docs.msgpack": {"id": "r5", "params": {"embedding_dtype": "f64"}},
    }
    for name, req in reqs.items():
        (ROOT / "request" / name).write_bytes(msgpack.packb(req, use_bin_type=True))
    (ROOT / "request" / "not_a_map.msgpack").write_bytes(msgpack.packb([1, 2, 3]))


def tensors():
    # `t`, then rank|flags, the dimensions, and pixel bytes (see clip_worker::fuzzing).
    seeds = {
        "tensor_hwc3.bin": b"t\x03\x04\x05\x03" + bytes(range(60)),
        "tensor_hw.bin": b"t\x02\x06\x03" + bytes(range(0, 255, 14)),
        "tensor_hwc4_raw.bin": b"t\x83\x02\x02\x04" + bytes(range(16)),
        "tensor_1d.bin": b"t\x01\xff" + bytes(range(7)),
    }
    for name, data in seeds.items():
        (ROOT / "image_pipeline" / name).write_bytes(data)


def main():
    for target in ("request", "jpeg", "avif", "image_pipeline"):
        shutil.rmtree(ROOT / target, ignore_errors=True)
        (ROOT / target).mkdir(parents=True)
    images("jpeg", JPEGS)
    images("avif", AVIFS)
    shutil.copy(FIXTURES / "avif_444_odd.avif", ROOT / "avif")
    images("image_pipeline", OTHERS)
    for name in ("baseline_420.jpg", "cmyk.jpg"):
        shutil.copy(ROOT / "jpeg" / name, ROOT / "image_pipeline" / name)
    shutil.copy(ROOT / "avif" / "rgb_420.avif", ROOT / "image_pipeline")
    shutil.copy(FIXTURES / "png_gray2bit.png", ROOT / "image_pipeline")
    tensors()
    requests()


main()
